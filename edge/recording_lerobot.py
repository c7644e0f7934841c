"""LeRobot v3 datasets (Parquet + MP4) to and from this package: `recording export --format lerobot` writes a
recording (`run --record DIR`) as a LeRobotDataset, and `quantize --calibration DATASET` reads one back as
observations. Workstation side only: `lerobot` (and with it torch) is imported lazily, inside these functions,
through lerobot's own dataset API (`LeRobotDataset.create / add_frame / save_episode / finalize` to write,
`LeRobotDataset(repo_id, root=...)` to read). Video frames are decoded here with PyAV at the timestamps lerobot's
episode metadata gives, so reading needs neither torchcodec nor torchvision's video reader.

Keys are mapped by a small declared mapping (`LeRobotMapping`, or a JSON/YAML file with the same fields):
    state:   "observation.state"   <- the recording's `state` (float32 in the dataset)
    action:  "action"              <- the command actually sent (`sent`), else the first action of the chunk
    cameras: ["observation.images.<slot>", ...] in camera-slot order (reading: default the dataset's camera keys)
The export writes the mapping it used to DATASET/meta/imagewam_mapping.json; reading takes the mapping from there
when present (write that file beside a dataset recorded elsewhere to map its keys), else the defaults.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ConfigError, MissingDependencyError
from .recording import (_UNREADABLE, Observation, _check_step, _episode_dirs, _instruction, _load_step, _step_files,
                        read_session)

log = logging.getLogger(__name__)

MAPPING_FILE = "imagewam_mapping.json"  # under DATASET/meta/
INSTALL_HINT = ("pip install 'imagewam-edge[lerobot]' && pip install --no-deps 'lerobot==0.4.4' (lerobot pins an older "
                "torch: --no-deps keeps yours); its dataset API also imports torchvision, which must be built for the "
                "installed torch (CPU torch: `pip install torchvision --index-url https://download.pytorch.org/whl/cpu`)")


@dataclass(frozen=True)
class LeRobotMapping:
    """Which LeRobot keys hold the state, the action and the cameras (in the policy's camera-slot order)."""

    state: str = "observation.state"
    action: str = "action"
    cameras: tuple[str, ...] = field(default_factory=tuple)  # () = observation.images.<slot> / the dataset's order

    @classmethod
    def from_dict(cls, d: dict, source: str = "mapping") -> "LeRobotMapping":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a LeRobot key mapping is a mapping with state/action/cameras, "
                              f"got {type(d).__name__}")
        unknown = sorted(set(d) - {"state", "action", "cameras"})
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields: action, cameras, state")
        for k in ("state", "action"):
            if k in d and not (isinstance(d[k], str) and d[k]):
                raise ConfigError(f"{source}: `{k}` must be a LeRobot feature name, got {d[k]!r}")
        cams = d.get("cameras", ())
        if isinstance(cams, str) or not all(isinstance(c, str) and c for c in cams):
            raise ConfigError(f"{source}: `cameras` must be a list of LeRobot feature names in camera-slot order, "
                              f"got {cams!r}")
        return cls(state=d.get("state", cls.state), action=d.get("action", cls.action), cameras=tuple(cams))

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


# --- export ------------------------------------------------------------------------------------------------------
def _steps_of(episode: Path) -> Iterator[dict]:
    """The readable steps of one episode; an unreadable LAST step (a cut recording) is skipped with a warning."""
    steps = _step_files(episode)
    for k, (_, step) in enumerate(steps):
        try:
            data = _load_step(step)
        except _UNREADABLE as exc:
            if k == len(steps) - 1:
                log.warning("%s: skipping its last step %s, unreadable (%s)", episode, step.name, exc)
                continue
            raise ConfigError(f"{step} is unreadable ({type(exc).__name__}: {exc}) and is not the last step of its "
                              f"episode. Fix: delete {step} (the episode keeps its other steps)") from None
        _check_step(step, data)
        yield data


def _action_of(data: dict) -> np.ndarray | None:
    if "sent" in data:
        return np.asarray(data["sent"], dtype=np.float32).reshape(-1)
    if "actions" in data and data["actions"].ndim == 2 and len(data["actions"]):
        return np.asarray(data["actions"][0], dtype=np.float32)
    return None


def _estimate_fps(root: Path, session: dict) -> int:
    for _, ep in _episode_dirs(root):
        ts = []
        for data in _steps_of(ep):
            if "t" in data:
                ts.append(float(data["t"]))
            if len(ts) >= 64:
                break
        dt = np.diff(ts)
        dt = dt[dt > 0]
        if len(dt):
            return max(1, int(round(1.0 / float(np.median(dt)))))
    for key in ("control_hz", "action_hz"):
        if isinstance(session.get(key), (int, float)) and session[key] > 0:
            return int(round(session[key]))
    raise ConfigError(f"{root}: cannot tell the frame rate (no step times, no control_hz in session.json). "
                      "Fix: pass --fps N")


def export_lerobot(recording: str | Path, out: str | Path, repo_id: str | None = None, fps: int | None = None,
                   mapping: LeRobotMapping | None = None, video: bool = True) -> dict:
    """Write the recording at `recording` as a LeRobot v3 dataset at `out` (published atomically: an interrupted
    export leaves the previous `out` as it was). -> summary {out, repo_id, fps, episodes, frames, features}."""
    from .atomic import replace_dir, staged_dir, write_json

    root, out = Path(recording), Path(out)
    session = read_session(root)
    mapping = mapping or LeRobotMapping()
    slots = list(session.get("slots") or [])
    episodes = [ep for _, ep in _episode_dirs(root) if _step_files(ep)]
    if not episodes:
        raise ConfigError(f"{root} holds no episode with steps; record with `imagewam-edge run --record {root}`")
    first = next(_steps_of(episodes[0]), None)
    if first is None:
        raise ConfigError(f"{episodes[0]}: no readable step")
    n_img = sum(1 for k in first if k.startswith("image_"))
    cams = list(mapping.cameras) or [f"observation.images.{slots[i] if i < len(slots) else i}" for i in range(n_img)]
    if len(cams) != n_img:
        raise ConfigError(f"the mapping names {len(cams)} camera key(s) {cams} but {root} records {n_img} image(s) "
                          "per step. Fix: list one LeRobot camera key per camera slot")
    action0 = _action_of(first)
    fps = int(fps) if fps else _estimate_fps(root, session)
    if fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {fps}")
    features: dict = {mapping.state: {"dtype": "float32", "shape": (int(first["state"].shape[0]),), "names": None}}
    if action0 is not None:
        features[mapping.action] = {"dtype": "float32", "shape": (int(action0.shape[0]),), "names": None}
    else:
        log.warning("%s records no actions (`sent`/`actions`): the dataset gets no %r feature", root, mapping.action)
    for i, key in enumerate(cams):
        features[key] = {"dtype": "video" if video else "image", "shape": tuple(int(s) for s in first[f"image_{i}"].shape),
                         "names": ["height", "width", "channels"]}
    lerobot_dataset = import_lerobot()
    repo_id = repo_id or f"local/{out.name}"
    frames = 0
    with staged_dir(out) as stage:
        ds_root = stage / "dataset"
        try:
            ds = lerobot_dataset.LeRobotDataset.create(repo_id, fps=fps, features=features, root=ds_root,
                                                       use_videos=video, image_writer_threads=0)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"lerobot refused the dataset layout {features}: {exc}") from exc
        for ep in episodes:
            instruction = _instruction(ep, _step_files(ep))
            n = 0
            for data in _steps_of(ep):
                frame = {mapping.state: np.asarray(data["state"], dtype=np.float32), "task": instruction}
                if action0 is not None:
                    a = _action_of(data)
                    if a is None or a.shape != action0.shape:
                        raise ConfigError(f"{ep}: a step without a {action0.shape[0]}-value action (`sent`/`actions`); "
                                          "every step of an exported recording needs one. Fix: export a recording "
                                          "made by `run --record`, or delete that step")
                    frame[mapping.action] = a
                for i, key in enumerate(cams):
                    frame[key] = data[f"image_{i}"]
                try:
                    ds.add_frame(frame)
                except ValueError as exc:
                    raise ConfigError(f"{ep}: step {n} does not match the dataset layout of the first step "
                                      f"({exc}). Fix: export episodes of one layout") from exc
                n += 1
            if n:
                ds.save_episode()
                frames += n
        ds.finalize()
        write_json(ds_root / "meta" / MAPPING_FILE, {**mapping.to_dict(), "cameras": cams}, sync_dir=False)
        replace_dir(ds_root, out)
    return {"out": str(out), "repo_id": repo_id, "fps": fps, "episodes": len(episodes), "frames": frames,
            "features": sorted(features), "cameras": cams}


# --- read --------------------------------------------------------------------------------------------------------
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


def iter_lerobot_observations(root: str | Path, stride: int = 1,
                              mapping: LeRobotMapping | None = None) -> Iterator[Observation]:
    """Every `stride`-th frame of every episode of a LeRobot v3 dataset, as observations (images in the order of
    `mapping.cameras`, default the dataset's camera keys; state float64; instruction = the frame's task)."""
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
            yield Observation(images=images, state=np.asarray(row[mapping.state], dtype=np.float64),
                              instruction=tasks.get(int(row["task_index"]), ""), episode=ep_i, step=k, actions=action)
    finally:
        for c in cursors.values():
            c.close()
