"""Reading an arm calibration file (`arms[i].calibration` of a run config): YAML (or JSON, a YAML subset) holding

    joints:
      - {id: 1, name: shoulder_pan, offset: 2048, direction: 1, raw_min: 0, raw_max: 4095}
      - {id: 6, name: gripper, kind: gripper, gripper_open: 2048, gripper_closed: 3072}

Every problem is a ConfigError naming the file, the field (`joints[2].offset`) and the fix; each joint is read by the
one strict config reader (edge/strict.py: unknown fields with a did-you-mean, types, the defaults of
drivers.arm.mapping.JointCalibration), so a wrong type never surfaces as a TypeError."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from drivers.arm.mapping import JointMapping
from drivers.errors import ConfigError

EXAMPLE = "joints: [{id: 1, offset: 2048, direction: 1}, {id: 2, offset: 2048, direction: -1}, ...]"


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
    mapping = JointMapping.from_dict(data, f"arm calibration {path}")  # each joint by the strict reader
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
