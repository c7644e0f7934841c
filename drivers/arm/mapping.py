"""Joint mapping and arm calibration: servo ids, raw offsets, directions and ranges -> radians / gripper units.

revolute: q = direction * (raw - offset) / units_per_rad           (radians)
gripper:  q = (raw - gripper_open) / (gripper_closed - gripper_open) (0 open .. 1 closed)
`to_raw` is the inverse, rounded to integers and clipped to [raw_min, raw_max]."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from drivers.errors import ConfigError
from edge.strict import build, setting

# raw units per radian of the usual servos: 4096 counts per turn
COUNTS_4096 = 4096 / (2 * math.pi)


@dataclass(frozen=True)
class JointCalibration:
    id: int = setting(example="1 (the servo id, 0..252)")
    name: str = ""
    kind: str = "revolute"  # or "gripper"
    offset: int = 2048  # raw value at q = 0
    direction: int = 1
    units_per_rad: float = COUNTS_4096
    raw_min: int = 0
    raw_max: int = 4095
    gripper_open: int = 2048
    gripper_closed: int = 3072

    def __post_init__(self):
        where = f"joint id {self.id}" + (f" ({self.name})" if self.name else "")
        if not isinstance(self.id, int) or not 0 <= self.id <= 252:
            raise ConfigError(f"{where}: id must be an integer 0..252")
        if self.kind not in ("revolute", "gripper"):
            raise ConfigError(f"{where}: kind must be 'revolute' or 'gripper', got {self.kind!r}")
        if self.direction not in (1, -1):
            raise ConfigError(f"{where}: direction must be 1 or -1, got {self.direction!r}")
        if not self.units_per_rad > 0:
            raise ConfigError(f"{where}: units_per_rad must be > 0")
        if self.raw_min >= self.raw_max:
            raise ConfigError(f"{where}: raw_min ({self.raw_min}) must be < raw_max ({self.raw_max})")
        if self.kind == "gripper" and self.gripper_open == self.gripper_closed:
            raise ConfigError(f"{where}: gripper_open and gripper_closed must differ")


class JointMapping:
    def __init__(self, joints: Sequence[JointCalibration]):
        if not joints:
            raise ConfigError("joint mapping needs at least one joint")
        ids = [j.id for j in joints]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"joint mapping has duplicate ids: {ids}")
        self.joints = list(joints)
        self.ids = ids
        self._gripper = np.array([j.kind == "gripper" for j in joints])
        self._offset = np.array([j.offset for j in joints], dtype=np.float64)
        self._scale = np.array([j.direction / j.units_per_rad for j in joints])
        self._g_open = np.array([j.gripper_open for j in joints], dtype=np.float64)
        self._g_span = np.array([(j.gripper_closed - j.gripper_open) or 1 for j in joints], dtype=np.float64)
        self._raw_min = np.array([j.raw_min for j in joints])
        self._raw_max = np.array([j.raw_max for j in joints])

    @classmethod
    def default(cls, ids: Sequence[int], units_per_rad: float = COUNTS_4096, offset: int = 2048,
                raw_min: int = 0, raw_max: int = 4095) -> "JointMapping":
        return cls([JointCalibration(id=int(i), units_per_rad=units_per_rad, offset=offset, raw_min=raw_min,
                                     raw_max=raw_max) for i in ids])

    @classmethod
    def from_dict(cls, d: dict, source: str = "arm calibration") -> "JointMapping":
        """{"joints": [{"id": 1, "offset": 2048, "direction": -1, ...}, ...]}; `source` names the file in errors."""
        joints = d.get("joints") if isinstance(d, dict) else None
        if not isinstance(joints, list):
            raise ConfigError(f"{source} must have a `joints` list, e.g. joints: [{{id: 1, offset: 2048}}]")
        checked = [build(JointCalibration, j, source, f"joints[{k}]") for k, j in enumerate(joints)]
        try:
            return cls(checked)
        except ConfigError as exc:  # no joints, or an id twice
            raise ConfigError(f"{source}: {exc}; list each servo id once in `joints`") from None

    def to_dict(self) -> dict:
        return {"joints": [asdict(j) for j in self.joints]}

    @property
    def n(self) -> int:
        return len(self.joints)

    def to_units(self, raw: Sequence[int]) -> np.ndarray:
        r = np.asarray(raw, dtype=np.float64)
        return np.where(self._gripper, (r - self._g_open) / self._g_span, (r - self._offset) * self._scale)

    def to_raw(self, q: Sequence[float]) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.n,):
            raise ConfigError(f"expected {self.n} joint values (ids {self.ids}), got shape {q.shape}")
        raw = np.where(self._gripper, self._g_open + q * self._g_span, self._offset + q / self._scale)
        return np.clip(np.rint(raw), self._raw_min, self._raw_max).astype(np.int64)

    def limits_in_units(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint-unit range that the raw range allows (lower, upper)."""
        a, b = self.to_units(self._raw_min), self.to_units(self._raw_max)
        return np.minimum(a, b), np.maximum(a, b)
