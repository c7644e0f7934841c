"""Image directories and poses files: what `calibrate capture` writes and the other commands read.

A capture directory holds `view_000.png ...`, `poses.json` (list of {"image": NAME, "T_base_gripper": 4x4
row-major, metres}) and `session.yaml` (camera serial, image size, board). Any directory of images works for
intrinsics; hand-eye also needs the poses file.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calib.board import BoardDetector, BoardSpec, Detection, usable_reason
from calib.errors import InputFileError, require_cv2
from calib.geometry import T_from_list, T_to_list

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SESSION_FILE = "session.yaml"


def list_images(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise InputFileError(f"image directory {d} does not exist; capture views with `imagewam-edge calibrate capture`")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if not files:
        raise InputFileError(f"no images ({', '.join(IMAGE_EXTS)}) in {d}; capture views first")
    return files


def read_image(path: str | Path) -> np.ndarray:
    """Grayscale uint8 image."""
    cv2 = require_cv2()
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputFileError(f"cannot read image {path} (corrupt or not an image); delete it or re-capture it")
    return img


def write_image(path: str | Path, image: np.ndarray, rgb: bool = True) -> None:
    cv2 = require_cv2()
    img = np.asarray(image)
    if img.ndim == 3 and rgb:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise InputFileError(f"could not write image {path}; check the directory is writable")


@dataclass
class ViewSet:
    """Detections of one image directory: `detections[name]`, `rejected[name] = reason`, image `size` (w, h)."""

    directory: Path
    size: tuple[int, int]
    detections: dict[str, Detection]
    rejected: dict[str, str]

    @property
    def usable(self) -> list[str]:
        return [n for n in self.detections if n not in self.rejected]


def detect_dir(directory: str | Path, spec: BoardSpec, min_corners: int = 6) -> ViewSet:
    """Detect the board in every image of a directory; unusable views are listed with the reason."""
    files = list_images(directory)
    det = BoardDetector(spec)
    detections: dict[str, Detection] = {}
    rejected: dict[str, str] = {}
    size = None
    for p in files:
        img = read_image(p)
        s = (img.shape[1], img.shape[0])
        if size is None:
            size = s
        elif s != size:
            raise InputFileError(
                f"{p} is {s[0]}x{s[1]} but earlier images in {directory} are {size[0]}x{size[1]}: one directory "
                "must hold one camera at one resolution; move it elsewhere"
            )
        d = det.detect(img)
        detections[p.name] = d
        reason = usable_reason(d, spec, min_corners)
        if reason:
            rejected[p.name] = reason
            log.info("%s: rejected (%s)", p.name, reason)
        else:
            log.debug("%s: %d corners", p.name, len(d))
    return ViewSet(Path(directory), size, detections, rejected)


def read_session(directory: str | Path) -> dict:
    """session.yaml of a capture directory ({} if absent)."""
    import yaml

    p = Path(directory) / SESSION_FILE
    if not p.is_file():
        return {}
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputFileError(f"{p} is not valid YAML ({exc}); fix or delete it") from exc
    return data if isinstance(data, dict) else {}


def write_session(directory: str | Path, meta: dict) -> None:
    import yaml

    p = Path(directory) / SESSION_FILE
    p.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")


def read_poses(path: str | Path) -> dict[str, np.ndarray]:
    """Poses file (JSON or YAML): list of {"image": NAME, "T_base_gripper": 4x4 row-major, metres} -> {name: T}."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"poses file {p} not found; `imagewam-edge calibrate capture` writes DIR/poses.json")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError / yaml.YAMLError
        raise InputFileError(f"poses file {p} cannot be parsed ({exc}); it must be a JSON or YAML list") from exc
    if isinstance(data, dict) and isinstance(data.get("poses"), list):
        data = data["poses"]
    if not isinstance(data, list) or not data:
        raise InputFileError(
            f"poses file {p} must be a non-empty list of {{\"image\": NAME, \"T_base_gripper\": 4x4 row-major}}"
        )
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "image" not in entry or "T_base_gripper" not in entry:
            raise InputFileError(f"poses file {p}, entry {i}: needs keys 'image' and 'T_base_gripper'")
        name = str(entry["image"])
        try:
            T = T_from_list(entry["T_base_gripper"], f"poses file {p}, entry {i} ({name}): T_base_gripper")
        except ValueError as exc:
            raise InputFileError(str(exc)) from exc
        if np.linalg.norm(T[:3, 3]) > 10.0:
            raise InputFileError(
                f"poses file {p}, entry {i} ({name}): translation {np.linalg.norm(T[:3, 3]):.1f} m is implausible; "
                "T_base_gripper must be in metres (convert from mm)"
            )
        if name in out:
            raise InputFileError(f"poses file {p}: image {name} is listed twice")
        out[Path(name).name] = T
    return out


def write_poses(path: str | Path, poses: dict[str, np.ndarray]) -> None:
    entries = [{"image": n, "T_base_gripper": T_to_list(T)} for n, T in poses.items()]
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    os.replace(tmp, path)
