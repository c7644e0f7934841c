"""Safety checks as pure functions (no I/O, no state except the explicit e-stop latch).

`check_finite` rejects NaN/inf; `clip_command` limits a joint command to the position range, to a maximum step
from the present position and to a maximum velocity over `dt`, and reports what it changed. The arm links call
them on every write and return what they actually sent."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from drivers.errors import ConfigError, EStopError, SafetyError
from edge.strict import build, setting


ON_OUT_OF_RANGE = ("fault", "clip")
MAX_STEP_LIMIT = 1.0  # rad per command: above this a "limit" no longer limits anything
MAX_VELOCITY_LIMIT = 20.0  # rad/s


@dataclass(frozen=True)
class SafetyConfig:
    """The `safety` section of an arm, as written (joint units: radians, grippers 0..1; a number applies to every
    joint, a list gives one per joint). The defaults of `SafetyLimits.create` are these."""

    lower: Optional[float | tuple[float, ...]] = None  # None: the range the joint mapping allows (or -pi)
    upper: Optional[float | tuple[float, ...]] = None  # None: the range the joint mapping allows (or pi)
    max_velocity: float | tuple[float, ...] = 2.0  # units per second
    max_step: float | tuple[float, ...] = 0.2  # units per write, from the present position
    # a command beyond [lower, upper] by more than range_margin: "fault" or "clip"
    on_out_of_range: str = setting("fault", choices=ON_OUT_OF_RANGE)
    range_margin: float = setting(0.1, minimum=0.0, maximum=1.0)  # units


_DEFAULT = SafetyConfig()


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint limits in joint units (radians; grippers 0..1). Scalars apply to every joint."""

    lower: tuple
    upper: tuple
    max_velocity: tuple  # units per second
    max_step: tuple  # units per write, from the present position
    on_out_of_range: str = _DEFAULT.on_out_of_range
    range_margin: float = _DEFAULT.range_margin

    @classmethod
    def create(cls, n: int, lower=-math.pi, upper=math.pi, max_velocity=_DEFAULT.max_velocity,
               max_step=_DEFAULT.max_step, on_out_of_range=_DEFAULT.on_out_of_range,
               range_margin=_DEFAULT.range_margin) -> "SafetyLimits":
        def vec(name, v):
            arr = np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) if np.ndim(v) == 0 else np.asarray(v, dtype=np.float64)
            if arr.shape != (n,):
                raise ConfigError(f"safety limit {name!r} has {arr.size} values for {n} joints")
            if not np.isfinite(arr).all():
                raise ConfigError(f"safety limit {name!r} must be finite, got {arr.tolist()}")
            return tuple(float(x) for x in arr)

        if on_out_of_range not in ON_OUT_OF_RANGE:
            raise ConfigError(f"safety limit 'on_out_of_range' must be one of {list(ON_OUT_OF_RANGE)}, got "
                              f"{on_out_of_range!r}")
        if not (isinstance(range_margin, (int, float)) and math.isfinite(range_margin) and 0 <= range_margin <= 1):
            raise ConfigError(f"safety limit 'range_margin' must be a number in [0, 1] (joint units), got "
                              f"{range_margin!r}")
        lim = cls(vec("lower", lower), vec("upper", upper), vec("max_velocity", max_velocity), vec("max_step", max_step),
                  on_out_of_range, float(range_margin))
        bad = [i for i, (lo, hi) in enumerate(zip(lim.lower, lim.upper)) if lo > hi]
        if bad:
            raise ConfigError(f"safety limits: lower > upper for joint index(es) {bad}")
        if min(lim.max_velocity) <= 0 or min(lim.max_step) <= 0:
            raise ConfigError("safety limits: max_velocity and max_step must be > 0 for every joint")
        if max(lim.max_step) > MAX_STEP_LIMIT:
            raise ConfigError(f"safety limit 'max_step' {max(lim.max_step):g} is more than {MAX_STEP_LIMIT:g} rad per "
                              "command: that lets one command jump a joint across most of its range. Use the largest "
                              "step the arm may make in one control period (0.05-0.2 rad is usual)")
        if max(lim.max_velocity) > MAX_VELOCITY_LIMIT:
            raise ConfigError(f"safety limit 'max_velocity' {max(lim.max_velocity):g} is more than "
                              f"{MAX_VELOCITY_LIMIT:g} rad/s, faster than any servo arm this package drives; use the "
                              "arm's rated joint speed or less (1-3 rad/s is usual)")
        return lim

    @classmethod
    def from_dict(cls, d: dict, n: int, source: str = "safety config", where: str = "") -> "SafetyLimits":
        """Limits for `n` joints from a `safety` section (SafetyConfig fields; what is left out: the defaults)."""
        given = build(SafetyConfig, d, source, where)
        return cls.create(n, **{k: v for k, v in vars(given).items() if v is not None})

    @property
    def n(self) -> int:
        return len(self.lower)


def check_finite(q: Sequence[float], what: str = "command") -> np.ndarray:
    """`q` as float64, or SafetyError naming the first bad joint index."""
    arr = np.asarray(q, dtype=np.float64)
    if arr.ndim != 1:
        raise SafetyError(f"{what} must be a 1-D joint vector, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise SafetyError(f"{what} has non-finite values at joint index(es) {bad.tolist()} ({arr[bad].tolist()}); "
                          "nothing was sent. Check the policy output / action un-normalisation.", last_command=arr)
    return arr


def beyond_limits(q: Sequence[float], limits: SafetyLimits) -> list:
    """Joint indices where `q` lies outside [lower - range_margin, upper + range_margin] (NaN counts as beyond)."""
    a = np.asarray(q, dtype=np.float64)
    lo = np.asarray(limits.lower) - limits.range_margin
    hi = np.asarray(limits.upper) + limits.range_margin
    return np.flatnonzero(~((a >= lo) & (a <= hi))).tolist()


def clip_command(q_cmd: Sequence[float], q_present: Optional[Sequence[float]], limits: SafetyLimits,
                 dt: Optional[float] = None) -> tuple[np.ndarray, list]:
    """(q_safe, notes): q_cmd clipped to [lower, upper], then to within min(max_step, max_velocity * dt) of
    q_present (skipped when q_present is None). Raises SafetyError on NaN/inf or a length mismatch."""
    q = check_finite(q_cmd, "command")
    if q.shape[0] != limits.n:
        raise SafetyError(f"command has {q.shape[0]} joints, the limits have {limits.n}")
    notes = []
    lo, hi = np.asarray(limits.lower), np.asarray(limits.upper)
    out = np.clip(q, lo, hi)
    if (out != q).any():
        notes.append(f"position limit on joints {np.flatnonzero(out != q).tolist()}")
    if q_present is not None:
        p = check_finite(q_present, "present position")
        if p.shape != out.shape:
            raise SafetyError(f"present position has {p.shape[0]} joints, the command {out.shape[0]}")
        step = np.asarray(limits.max_step)
        if dt is not None:
            if not (math.isfinite(dt) and dt > 0):
                raise SafetyError(f"dt must be a positive finite number of seconds, got {dt!r}")
            step = np.minimum(step, np.asarray(limits.max_velocity) * dt)
        clipped = np.clip(out, p - step, p + step)
        if (clipped != out).any():
            notes.append(f"step/velocity limit on joints {np.flatnonzero(clipped != out).tolist()}")
        out = clipped
    return out, notes


class EStopLatch:
    """Latched emergency stop: once tripped, `check()` raises until `clear()` is called on purpose."""

    def __init__(self):
        self.reason: Optional[str] = None

    @property
    def tripped(self) -> bool:
        return self.reason is not None

    def trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def clear(self) -> None:
        self.reason = None

    def check(self) -> None:
        if self.reason is not None:
            raise EStopError(f"e-stop latched ({self.reason}); nothing is sent until clear_estop() is called "
                             "after the cause is fixed")
