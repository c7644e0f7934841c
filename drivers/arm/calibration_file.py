"""Reading an arm calibration file (`arms[i].calibration` of a run config): YAML (or JSON, a YAML subset) holding

    joints:
      - {id: 1, name: shoulder_pan, offset: 2048, direction: 1, raw_min: 0, raw_max: 4095}
      - {id: 6, name: gripper, kind: gripper, gripper_open: 2048, gripper_closed: 3072}

Every problem is a drivers ConfigError naming the file, the field (`joints[2].offset`) and the fix; the file is
checked field by field before a JointMapping is built, so a wrong type never surfaces as a TypeError."""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

from drivers.arm.mapping import JointCalibration, JointMapping
from drivers.errors import ConfigError

EXAMPLE = "joints: [{id: 1, offset: 2048, direction: 1}, {id: 2, offset: 2048, direction: -1}, ...]"
_INT_FIELDS = ("id", "offset", "direction", "raw_min", "raw_max", "gripper_open", "gripper_closed")
_STR_FIELDS = ("name", "kind")
_FLOAT_FIELDS = ("units_per_rad",)


def _check_joint(path: Path, k: int, joint) -> dict:
    where = f"arm calibration {path}: joints[{k}]"
    if not isinstance(joint, dict):
        raise ConfigError(f"{where} must be a mapping like {{id: 1, offset: 2048}}, got {type(joint).__name__} "
                          f"{joint!r}; fix the file (format: {EXAMPLE})")
    known = {f.name for f in fields(JointCalibration)}
    unknown = sorted(str(key) for key in joint if key not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(known)} (check the spelling)")
    if "id" not in joint:
        raise ConfigError(f"{where}: field `id` (the servo id, 0..252) is missing; add it, e.g. `id: {k + 1}`")
    for name, value in joint.items():
        if name in _INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}.{name} must be an integer (raw servo units), got {type(value).__name__} "
                              f"{value!r}; fix that field in the file")
        if name in _FLOAT_FIELDS and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
            raise ConfigError(f"{where}.{name} must be a finite number (raw units per radian, e.g. 651.9 for a "
                              f"4096-count servo), got {value!r}; fix that field in the file")
        if name in _STR_FIELDS and not isinstance(value, str):
            raise ConfigError(f"{where}.{name} must be a string, got {type(value).__name__} {value!r}; "
                              "fix that field in the file")
    try:
        JointCalibration(**joint)
    except ConfigError as exc:  # range checks of the dataclass (kind, direction, raw_min < raw_max, ...)
        raise ConfigError(f"{where}: {exc}; fix that joint in the file") from None
    return joint


def parse_joint_mapping(data, path: str | Path, ids: Optional[Sequence[int]] = None) -> JointMapping:
    """Validate the parsed content of `path` and build the mapping; `ids`: the ids the link is configured with."""
    path = Path(path)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"arm calibration {path} must be a YAML mapping with a `joints` list, got {got}; "
                          f"write it as: {EXAMPLE}")
    joints = data.get("joints")
    if not isinstance(joints, list) or not joints:
        raise ConfigError(f"arm calibration {path}: field `joints` must be a non-empty list, got "
                          f"{type(joints).__name__ if joints is not None else 'nothing'}; write it as: {EXAMPLE}")
    checked = [_check_joint(path, k, j) for k, j in enumerate(joints)]
    try:
        mapping = JointMapping([JointCalibration(**j) for j in checked])
    except ConfigError as exc:  # duplicate ids
        raise ConfigError(f"arm calibration {path}: {exc}; each servo id must appear once in `joints`") from None
    if ids is not None and mapping.ids != [int(i) for i in ids]:
        raise ConfigError(f"arm calibration {path}: `joints` ids {mapping.ids} do not match the arm's ids "
                          f"{[int(i) for i in ids]}; list the same ids in the same order in both")
    return mapping


def load_joint_mapping(path: str | Path, ids: Optional[Sequence[int]] = None) -> JointMapping:
    """Read an arm calibration YAML file; refuse an unreadable, malformed or mistyped file naming the field."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"arm calibration {path} not found; fix the `calibration` path of this arm in the config, "
                          f"or create the file ({EXAMPLE})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"arm calibration {path} cannot be read ({exc}); check the path and its permissions "
                          "(it must be a YAML text file)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"arm calibration {path} is not valid YAML{at} "
                          f"({getattr(exc, 'problem', None) or type(exc).__name__}); fix the syntax (format: "
                          f"{EXAMPLE})") from None
    return parse_joint_mapping(data, path, ids)
