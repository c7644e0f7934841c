"""LeRobot v3 datasets (Parquet + MP4) read through the `lerobot` package's own dataset API: the declared key
mapping, the version check and the frames as plain dicts (edge/recording.py turns them into observations, so
`quantize --calibration DATASET` reads a dataset wherever it reads a recording). Workstation side only: lerobot (and
with it torch) is imported lazily, inside these functions. Video frames are decoded here with PyAV at the timestamps
lerobot's episode metadata gives, so reading needs neither torchcodec nor torchvision's video reader.

Keys are mapped by a small declared mapping (`LeRobotMapping`, or a JSON/YAML file with the same fields):
    state:   "observation.state"
    action:  "action"
    cameras: ["observation.images.<slot>", ...] in camera-slot order (default: the dataset's camera keys in order)
Reading takes the mapping from DATASET/meta/imagewam_mapping.json when present (the export writes it; write it beside
a dataset recorded elsewhere to map its keys), else the defaults.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ConfigError, MissingDependencyError
from .strict import FieldError, StrictConfig

log = logging.getLogger(__name__)

MAPPING_FILE = "imagewam_mapping.json"  # under DATASET/meta/
INSTALL_HINT = ("pip install 'imagewam-edge[lerobot]' && pip install --no-deps 'lerobot==0.4.4' (lerobot pins an older "
                "torch: --no-deps keeps yours); its dataset API also imports torchvision, which must be built for the "
                "installed torch (CPU torch: `pip install torchvision --index-url https://download.pytorch.org/whl/cpu`)")


@dataclass(frozen=True)
class LeRobotMapping(StrictConfig):
    """Which LeRobot keys hold the state, the action and the cameras (in the policy's camera-slot order)."""

    state: str = "observation.state"
    action: str = "action"
    cameras: tuple[str, ...] = field(default_factory=tuple)  # () = observation.images.<slot> / the dataset's order

    def __post_init__(self):
        for k in ("state", "action"):
            if not (isinstance(getattr(self, k), str) and getattr(self, k)):
                raise FieldError(self, k, f"must be a LeRobot feature name, got {getattr(self, k)!r}")
        if not all(isinstance(c, str) and c for c in self.cameras):
            raise FieldError(self, "cameras", f"must be a list of LeRobot feature names in camera-slot order, got "
                                              f"{list(self.cameras)!r}")

    @classmethod
    def load(cls, path: str | Path) -> "LeRobotMapping":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the LeRobot key mapping {path}: {exc}") from None
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
            raise ConfigError(f"{path}: not valid JSON/YAML ({exc})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict:
        return {"state": self.state, "action": self.action, "cameras": list(self.cameras)}


def dataset_mapping(root: str | Path) -> LeRobotMapping:
    """The mapping declared in DATASET/meta/imagewam_mapping.json, else the default one."""
    path = Path(root) / "meta" / MAPPING_FILE
    return LeRobotMapping.load(path) if path.is_file() else LeRobotMapping()


def import_lerobot():
    """lerobot.datasets.lerobot_dataset, or MissingDependencyError with the install command."""
    try:
        from lerobot.datasets import lerobot_dataset
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError/OSError: a torchvision built for another torch
        raise MissingDependencyError(f"lerobot's dataset API is not importable ({type(exc).__name__}: {exc}); "
                                     f"install it with: {INSTALL_HINT}") from exc
    return lerobot_dataset


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def dataset_info(root: str | Path) -> dict:
    """meta/info.json of a LeRobot dataset, checked to be v3 (no lerobot import)."""
    path = Path(root) / "meta" / "info.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}): not a LeRobot dataset, or a damaged one") from None
    version = str(info.get("codebase_version", "")) if isinstance(info, dict) else ""
    if not version.startswith("v3"):
        raise ConfigError(f"{path}: LeRobot dataset version {version or '?'!r}, this package reads v3.x. Fix: convert "
                          "it with lerobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`")
    return info


# --- read -------------------------------------------------------------------------------------------------------
class _VideoCursor:
    """Forward-only frame lookup by time in the MP4 files of one camera key (episodes are read in order)."""

    def __init__(self, tolerance_s: float):
        self.tolerance_s = tolerance_s
        self._path: Path | None = None
        self._container = None
        self._frames = None
        self._prev = None  # (time, rgb) of the last frame decoded
        self._next = None

    def _open(self, path: Path) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(path))
        except (OSError, av.error.FFmpegError) as exc:
            raise ConfigError(f"{path}: cannot open the video ({exc}). Fix: re-export the dataset") from None
        self._frames = self._container.decode(self._container.streams.video[0])
        self._path, self._prev, self._next = path, None, None

    def _advance(self):
        frame = next(self._frames, None)
        if frame is None:
            return None
        return (float(frame.time), frame.to_ndarray(format="rgb24"))

    def frame_at(self, path: Path, t: float) -> np.ndarray:
        if path != self._path or (self._prev is not None and t < self._prev[0] - self.tolerance_s):
            self._open(path)
        if self._next is None:
            self._next = self._advance()
        while self._next is not None and self._next[0] <= t + self.tolerance_s:
            self._prev, self._next = self._next, self._advance()
        candidates = [c for c in (self._prev, self._next) if c is not None]
        best = min(candidates, key=lambda c: abs(c[0] - t)) if candidates else None
        if best is None or abs(best[0] - t) > self.tolerance_s:
            near = f"nearest frame at {best[0]:.4f} s" if best else "no frame"
            raise ConfigError(f"{path}: no frame at {t:.4f} s ({near}). Fix: the dataset's episode metadata and "
                              "videos disagree; re-export it")
        return best[1]

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = None


def _open_dataset(root: Path, info: dict):
    lerobot_dataset = import_lerobot()
    repo_id = f"local/{root.name}"
    try:
        return lerobot_dataset.LeRobotDataset(repo_id, root=root, download_videos=False)
    except Exception as exc:  # lerobot raises many kinds (FileNotFoundError, hub errors when files are missing)
        raise ConfigError(f"{root}: lerobot cannot load this dataset ({type(exc).__name__}: {exc}). Fix: check that "
                          "meta/, data/ and videos/ are complete (copy the whole dataset directory)") from exc


def iter_lerobot_frames(root: str | Path, stride: int = 1, mapping: LeRobotMapping | None = None) -> Iterator[dict]:
    """Every `stride`-th frame of every episode of a LeRobot v3 dataset as {images, state, instruction, episode,
    step, actions}: images in the order of `mapping.cameras` (default the dataset's camera keys), state float64,
    instruction = the frame's task, actions = the frame's action as a one-step chunk (or None)."""
    root = Path(root)
    info = dataset_info(root)
    mapping = mapping or dataset_mapping(root)
    ds = _open_dataset(root, info)
    features = ds.meta.features
    cams = list(mapping.cameras) or list(ds.meta.camera_keys)
    missing = [k for k in [mapping.state, *cams] if k not in features]
    if missing or not cams:
        raise ConfigError(f"{root}: the key mapping names {missing or 'no camera'} but the dataset has features "
                          f"{sorted(features)}. Fix: pass a mapping (state/action/cameras) naming its keys")
    tasks = {int(i): str(t) for t, i in ds.meta.tasks["task_index"].items()}
    table = ds.hf_dataset.with_format(None)
    columns = ["episode_index", "frame_index", "timestamp", "task_index", mapping.state]
    has_action = mapping.action in features
    if has_action:
        columns.append(mapping.action)
    rows = table.select_columns(columns)
    fps = float(ds.meta.fps)
    cursors = {k: _VideoCursor(0.5 / fps) for k in cams if features[k]["dtype"] == "video"}
    episodes: dict[int, int] = {}
    try:
        for i, row in enumerate(rows):
            ep, k = int(row["episode_index"]), int(row["frame_index"])
            if k % max(1, stride):
                continue
            ep_i = episodes.setdefault(ep, len(episodes))
            images = []
            for key in cams:
                if key in cursors:
                    meta = ds.meta.episodes[ep]
                    path = root / ds.meta.get_video_file_path(ep, key)
                    t = float(meta[f"videos/{key}/from_timestamp"]) + float(row["timestamp"])
                    images.append(cursors[key].frame_at(path, t))
                else:
                    img = table[i][key]  # a PIL image (LeRobot `image` features are PNG in the Parquet file)
                    images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            action = np.asarray(row[mapping.action], dtype=np.float32)[None, :] if has_action else None
            yield {"images": images, "state": np.asarray(row[mapping.state], dtype=np.float64),
                   "instruction": tasks.get(int(row["task_index"]), ""), "episode": ep_i, "step": k, "actions": action}
    finally:
        for c in cursors.values():
            c.close()
