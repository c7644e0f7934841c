"""Calibration files: versioned YAML, keyed by camera serial, validated on load.

Layout under a calibration root (`$IMAGEWAM_CALIB_DIR`, default `~/.config/imagewam-edge/calib`):
    ROOT/<serial>/intrinsics.yaml   ROOT/<serial>/handeye.yaml   ROOT/extrinsics.yaml
The control loop calls `load_intrinsics(path, expect_serial=..., expect_size=(w, h))` (or
`load_camera_calibration(serial, size)`): a file for another camera or resolution is refused with a message
that says how to fix it, never silently used.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calib.errors import CalibrationFileError, CalibrationMismatchError
from calib.geometry import T_from_list, T_to_list

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
HANDEYE_KEYS = {"eye-in-hand": "T_gripper_camera", "eye-to-hand": "T_base_camera"}
DIST_LENGTHS = (4, 5, 8, 12, 14)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def default_calib_dir() -> Path:
    env = os.environ.get("IMAGEWAM_CALIB_DIR")
    return Path(env).expanduser() if env else Path.home() / ".config" / "imagewam-edge" / "calib"


def calibration_path(serial: str, kind: str, root: str | Path | None = None) -> Path:
    """ROOT/<serial>/<kind>.yaml, kind in {intrinsics, handeye}."""
    if kind not in ("intrinsics", "handeye"):
        raise ValueError(f"unknown calibration kind {kind!r}")
    return Path(root or default_calib_dir()) / str(serial) / f"{kind}.yaml"


# ---------------------------------------------------------------------------------------------- file plumbing


def _write_yaml(path: str | Path, data: dict, header: str) -> Path:
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# {header}\n# written by imagewam-edge calib, schema version {SCHEMA_VERSION}\n")
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None, width=120)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written calibration
    return path


def _read_yaml(path: str | Path, kind: str, how_to_make: str) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"{kind} calibration file {path} not found; create it with: {how_to_make}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise CalibrationFileError(f"{path} is not valid YAML ({exc}); re-create it with: {how_to_make}") from exc
    if not isinstance(data, dict):
        raise CalibrationFileError(f"{path} does not hold a YAML mapping; re-create it with: {how_to_make}")
    version = data.get("version")
    if not isinstance(version, int):
        raise CalibrationFileError(f"{path}: field 'version' is missing or not an integer; re-create it with: {how_to_make}")
    if version > SCHEMA_VERSION:
        raise CalibrationFileError(
            f"{path}: schema version {version} is newer than this imagewam-edge supports ({SCHEMA_VERSION}); "
            "upgrade imagewam-edge"
        )
    file_kind = data.get("kind", kind)
    if file_kind != kind:
        raise CalibrationFileError(f"{path} is a {file_kind} file, not {kind}; pass the {kind} file instead")
    return data


def _num(data: dict, key: str, path, positive: bool = False) -> float:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise CalibrationFileError(f"{path}: field '{key}' is missing or not a finite number (got {v!r})")
    if positive and v <= 0:
        raise CalibrationFileError(f"{path}: field '{key}' must be > 0 (got {v})")
    return float(v)


def _check_serial(path, file_serial: str | None, expect_serial: str | None, recalibrate: str) -> None:
    if expect_serial is None:
        return
    if file_serial in (None, "", "unknown"):
        raise CalibrationMismatchError(
            f"{path} records no camera serial, so it cannot be checked against camera {expect_serial}; "
            f"set `serial: '{expect_serial}'` in it if it really is that camera, or recalibrate: {recalibrate}"
        )
    if str(file_serial) != str(expect_serial):
        raise CalibrationMismatchError(
            f"{path} is for camera serial {file_serial} but the camera in use is {expect_serial}: use that camera's "
            f"file (ROOT/{expect_serial}/...) or calibrate it: {recalibrate}"
        )


# ---------------------------------------------------------------------------------------------- intrinsics


@dataclass
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: list[float]
    rms_px: float
    board: str = ""
    serial: str | None = None
    date: str = field(default_factory=now_iso)
    extra: dict[str, Any] = field(default_factory=dict)  # per-view errors, coverage, std devs, factory comparison

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_array(self) -> np.ndarray:
        return np.asarray(self.dist, dtype=float)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def to_dict(self) -> dict:
        d = {
            "kind": "intrinsics",
            "version": SCHEMA_VERSION,
            "serial": None if self.serial is None else str(self.serial),
            "date": self.date,
            "width": int(self.width),
            "height": int(self.height),
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "dist": [float(v) for v in self.dist],
            "dist_model": "opencv k1 k2 p1 p2 k3 [k4 k5 k6 ...]",
            "rms_px": float(self.rms_px),
            "board": str(self.board),
        }
        d.update(self.extra)
        return d


INTRINSICS_HOW = "imagewam-edge calibrate intrinsics --images DIR --board SPEC --serial SERIAL --out FILE"


def save_intrinsics(path: str | Path, intr: Intrinsics) -> Path:
    return _write_yaml(path, intr.to_dict(), f"camera intrinsics, serial {intr.serial}, {intr.width}x{intr.height}")


def intrinsics_from_dict(data: dict, path="<dict>") -> Intrinsics:
    w, h = _num(data, "width", path, True), _num(data, "height", path, True)
    if w != int(w) or h != int(h):
        raise CalibrationFileError(f"{path}: width/height must be integers (got {w}x{h})")
    fx, fy = _num(data, "fx", path, True), _num(data, "fy", path, True)
    cx, cy = _num(data, "cx", path), _num(data, "cy", path)
    if not (0 <= cx <= w and 0 <= cy <= h):
        raise CalibrationFileError(f"{path}: principal point ({cx}, {cy}) lies outside the {int(w)}x{int(h)} image")
    dist = data.get("dist")
    if (
        not isinstance(dist, list)
        or len(dist) not in DIST_LENGTHS
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in dist)
    ):
        raise CalibrationFileError(
            f"{path}: field 'dist' must be a list of {'/'.join(map(str, DIST_LENGTHS))} finite numbers (got {dist!r})"
        )
    rms = _num(data, "rms_px", path)
    known = {"kind", "version", "serial", "date", "width", "height", "fx", "fy", "cx", "cy", "dist", "rms_px", "board"}
    serial = data.get("serial")
    return Intrinsics(
        int(w), int(h), fx, fy, cx, cy, [float(v) for v in dist], rms,
        board=str(data.get("board", "")),
        serial=None if serial is None else str(serial),
        date=str(data.get("date", "")),
        extra={k: v for k, v in data.items() if k not in known and k != "dist_model"},
    )


def load_intrinsics(
    path: str | Path, expect_serial: str | None = None, expect_size: tuple[int, int] | None = None
) -> Intrinsics:
    """Load and validate; CalibrationMismatchError when the serial or (w, h) differ from what is expected."""
    data = _read_yaml(path, "intrinsics", INTRINSICS_HOW)
    intr = intrinsics_from_dict(data, path)
    _check_serial(path, intr.serial, expect_serial, INTRINSICS_HOW.replace("SERIAL", str(expect_serial)))
    if expect_size is not None and tuple(int(v) for v in expect_size) != intr.size:
        ew, eh = (int(v) for v in expect_size)
        raise CalibrationMismatchError(
            f"{path} was calibrated at {intr.width}x{intr.height} but the camera streams {ew}x{eh}: set the stream "
            f"to {intr.width}x{intr.height} or recalibrate at {ew}x{eh} ({INTRINSICS_HOW})"
        )
    return intr


# ---------------------------------------------------------------------------------------------- hand-eye

HANDEYE_HOW = (
    "imagewam-edge calibrate handeye --images DIR --poses FILE --intrinsics FILE --board SPEC "
    "--mode eye-in-hand|eye-to-hand --out FILE"
)


@dataclass
class HandEye:
    mode: str
    T: np.ndarray  # T_gripper_camera (eye-in-hand) or T_base_camera (eye-to-hand)
    serial: str | None = None
    board: str = ""
    method: str = ""
    residuals: dict[str, Any] = field(default_factory=dict)
    date: str = field(default_factory=now_iso)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return HANDEYE_KEYS[self.mode]

    def to_dict(self) -> dict:
        d = {
            "kind": "handeye",
            "version": SCHEMA_VERSION,
            "serial": None if self.serial is None else str(self.serial),
            "date": self.date,
            "mode": self.mode,
            self.key: T_to_list(self.T),
            "units": "metres; 4x4 row-major, T_a_b maps points in frame b to frame a",
            "method": self.method,
            "board": self.board,
            "residuals": self.residuals,
        }
        d.update(self.extra)
        return d


def save_handeye(path: str | Path, he: HandEye) -> Path:
    return _write_yaml(path, he.to_dict(), f"hand-eye calibration ({he.mode}), camera serial {he.serial}")


def load_handeye(path: str | Path, expect_serial: str | None = None, expect_mode: str | None = None) -> HandEye:
    data = _read_yaml(path, "handeye", HANDEYE_HOW)
    mode = data.get("mode")
    if mode not in HANDEYE_KEYS:
        raise CalibrationFileError(f"{path}: field 'mode' must be eye-in-hand or eye-to-hand (got {mode!r})")
    if expect_mode is not None and mode != expect_mode:
        raise CalibrationMismatchError(
            f"{path} is an {mode} calibration but {expect_mode} is configured: use the right file or recalibrate "
            f"with --mode {expect_mode}"
        )
    key = HANDEYE_KEYS[mode]
    try:
        T = T_from_list(data.get(key), f"{path}: field '{key}'")
    except ValueError as exc:
        raise CalibrationFileError(str(exc)) from exc
    serial = data.get("serial")
    serial = None if serial is None else str(serial)
    _check_serial(path, serial, expect_serial, HANDEYE_HOW)
    known = {"kind", "version", "serial", "date", "mode", key, "units", "method", "board", "residuals"}
    return HandEye(
        mode, T, serial, str(data.get("board", "")), str(data.get("method", "")), dict(data.get("residuals") or {}),
        str(data.get("date", "")), {k: v for k, v in data.items() if k not in known},
    )


# ---------------------------------------------------------------------------------------------- extrinsics

EXTRINSICS_HOW = (
    "imagewam-edge calibrate extrinsics --images DIR_A DIR_B --intrinsics A.yaml B.yaml --board SPEC --out FILE"
)


@dataclass
class Extrinsics:
    reference: str  # serial of the reference camera
    T_ref_cam: dict[str, np.ndarray]  # serial -> T_reference_camera
    board: str = ""
    residuals: dict[str, Any] = field(default_factory=dict)
    date: str = field(default_factory=now_iso)

    def to_dict(self) -> dict:
        return {
            "kind": "extrinsics",
            "version": SCHEMA_VERSION,
            "date": self.date,
            "reference": str(self.reference),
            "units": "metres; 4x4 row-major T_reference_camera, maps points in each camera to the reference",
            "board": self.board,
            "cameras": {str(s): {"T_ref_camera": T_to_list(T)} for s, T in self.T_ref_cam.items()},
            "residuals": self.residuals,
        }


def save_extrinsics(path: str | Path, ex: Extrinsics) -> Path:
    return _write_yaml(path, ex.to_dict(), f"multi-camera extrinsics, reference camera {ex.reference}")


def load_extrinsics(path: str | Path, expect_serials: list[str] | None = None) -> Extrinsics:
    data = _read_yaml(path, "extrinsics", EXTRINSICS_HOW)
    cams = data.get("cameras")
    if not isinstance(cams, dict) or not cams:
        raise CalibrationFileError(f"{path}: field 'cameras' must map camera serials to {{T_ref_camera: 4x4}}")
    out = {}
    for serial, entry in cams.items():
        try:
            out[str(serial)] = T_from_list((entry or {}).get("T_ref_camera"), f"{path}: cameras.{serial}.T_ref_camera")
        except (ValueError, AttributeError) as exc:
            raise CalibrationFileError(str(exc)) from exc
    ref = str(data.get("reference"))
    if ref not in out:
        raise CalibrationFileError(f"{path}: reference camera {ref!r} is not among cameras {sorted(out)}")
    if expect_serials is not None:
        missing = [s for s in map(str, expect_serials) if s not in out]
        if missing:
            raise CalibrationMismatchError(
                f"{path} has no extrinsics for camera(s) {missing} (it covers {sorted(out)}): "
                f"recalibrate with all cameras: {EXTRINSICS_HOW}"
            )
    return Extrinsics(ref, out, str(data.get("board", "")), dict(data.get("residuals") or {}), str(data.get("date", "")))


def load_camera_calibration(
    serial: str, size: tuple[int, int], root: str | Path | None = None, mode: str | None = None
) -> tuple[Intrinsics, HandEye | None]:
    """What the control loop needs for one camera: its intrinsics (required) and hand-eye (if calibrated)."""
    intr = load_intrinsics(calibration_path(serial, "intrinsics", root), expect_serial=serial, expect_size=size)
    he_path = calibration_path(serial, "handeye", root)
    he = load_handeye(he_path, expect_serial=serial, expect_mode=mode) if he_path.is_file() else None
    return intr, he
