"""`recording export --format lerobot`: a recording (`run --record DIR`) written as a LeRobot v3 dataset through
the `lerobot` package's own API (`LeRobotDataset.create / add_frame / save_episode / finalize`), published
atomically; and `iter_lerobot_observations`, a dataset read back as observations. Workstation side only (lerobot is
imported lazily). Keys: edge/lerobot_dataset.py (`LeRobotMapping`):
    state:   "observation.state"   <- the recording's `state` (float32 in the dataset)
    action:  "action"              <- the command actually sent (`sent`), else the first action of the chunk
    cameras: ["observation.images.<slot>", ...] in camera-slot order
The export writes the mapping it used to DATASET/meta/imagewam_mapping.json.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ConfigError
from .lerobot_dataset import MAPPING_FILE, LeRobotMapping, import_lerobot, iter_lerobot_frames
from .recording import (_UNREADABLE, Observation, _check_step, _episode_dirs, _instruction, _load_step, _step_files,
                        read_session)

log = logging.getLogger(__name__)


def iter_lerobot_observations(root: str | Path, stride: int = 1,
                              mapping: LeRobotMapping | None = None) -> Iterator[Observation]:
    """A LeRobot v3 dataset as observations (see lerobot_dataset.iter_lerobot_frames)."""
    for frame in iter_lerobot_frames(root, stride, mapping):
        yield Observation(**frame)


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


