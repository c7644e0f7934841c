"""Observation recordings: what `run --record DIR` writes and `quantize --calibration DIR` reads.

    DIR/session.json                 {"format": "imagewam-recording", "version": 1, "canvas", "slots", "state_dim",
                                      "action_dim", "created", "synthetic": false, ...}; written once, atomically
    DIR/episode_0000/episode.json    {"instruction": str, ...} at the episode's start; at its end (close) rewritten
                                     atomically with "steps": n. Readers count the step files instead.
    DIR/episode_0000/step_000000.npz image_0 ... image_{k-1} (HxWx3 uint8, in camera-slot order), state (float64 [P]),
                                     instruction (str), optional: actions (float32 [H, A], the chunk computed from this
                                     observation), sent (float32 [A], the command actually written), t (float64,
                                     monotonic s)

One `.npz` per step (no pickle), written under a dot-name and renamed into place after an fsync, so whatever moment
a kill picks, every finished step and every earlier episode stays readable. The reader ignores temporary files, skips
an unreadable LAST step of an episode with a warning (a step cut by a power loss) and names the file and the fix for
anything else that is damaged.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .atomic import atomic_file, fsync_dir, remove_stale_temps, write_json
from .errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "imagewam-recording"
VERSION = 1
EPISODE_RE = re.compile(r"episode_(\d{4,})")
STEP_RE = re.compile(r"step_(\d{6,})\.npz")
SESSION_KEYS = ("canvas", "slots", "state_dim", "action_dim")  # what must agree to append to a recording
DIR_SYNC_S = 1.0  # the episode directory is fsync'ed at most this often (and at start and close)
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


@dataclass
class Observation:
    images: list[np.ndarray]
    state: np.ndarray
    instruction: str
    episode: int = 0
    step: int = 0
    actions: np.ndarray | None = None

    def as_obs(self) -> dict:
        return {"images": self.images, "state": self.state, "instruction": self.instruction}


def _episode_dirs(root: Path) -> list[tuple[int, Path]]:
    out = []
    for p in root.iterdir():
        m = EPISODE_RE.fullmatch(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _step_files(episode: Path) -> list[tuple[int, Path]]:
    """Finished steps only: temporary files (`.step_....tmp`, older `step_N.tmp.npz`) never match."""
    return sorted((int(m.group(1)), episode / m.group(0)) for m in map(STEP_RE.fullmatch, os.listdir(episode)) if m)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RecordingWriter:
    """Appends episodes to a recording directory. `start_episode`, then `add` per step, then `close` (idempotent;
    `start_episode` closes the previous episode itself). Also a context manager."""

    def __init__(self, root: str | Path, canvas: str, slots: list[str], state_dim: int, action_dim: int,
                 synthetic: bool = False, extra: dict | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.session = {"format": FORMAT, "version": VERSION, "canvas": canvas, "slots": list(slots),
                        "state_dim": int(state_dim), "action_dim": int(action_dim), "synthetic": bool(synthetic),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        self._open_session()
        existing = _episode_dirs(self.root)
        for directory in [self.root] + [ep for _, ep in existing[-1:]]:  # each start cleans what the last kill left
            remove_stale_temps(directory)
        self.episode = existing[-1][0] + 1 if existing else 0
        self._dir: Path | None = None
        self._steps = 0
        self._instruction = ""
        self._meta: dict = {}
        self._dir_synced = 0.0

    def _open_session(self) -> None:
        """Write session.json once; a recording appended to keeps its own (never rewritten in place)."""
        path = self.root / "session.json"
        old = _read_json(path)
        if old is not None and old.get("format") == FORMAT:
            differ = [k for k in SESSION_KEYS if old.get(k) != self.session[k]]
            if not differ:
                self.session = old
                return
            if any(_step_files(ep) for _, ep in _episode_dirs(self.root)):
                k = differ[0]
                raise ConfigError(f"{path}: this recording has {k} = {old.get(k)!r}, the run records {k} = "
                                  f"{self.session[k]!r}; observations of different layouts cannot share a recording. "
                                  "Fix: record into a new directory (--record OTHER_DIR)")
        elif path.exists():
            log.warning("%s is unreadable; writing it again for this run", path)
        write_json(path, self.session)

    def start_episode(self, instruction: str, **meta) -> Path:
        self.close()
        while (self.root / f"episode_{self.episode:04d}").exists():  # another writer took it meanwhile
            self.episode += 1
        directory = self.root / f"episode_{self.episode:04d}"
        directory.mkdir(parents=True)
        self._instruction, self._steps = str(instruction), 0
        self._meta = {"instruction": self._instruction, **meta, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(directory / "episode.json", self._meta, sync_dir=False)
        fsync_dir(directory)
        fsync_dir(self.root)
        self._dir, self._dir_synced = directory, time.monotonic()
        self.episode += 1
        return directory

    def add(self, images: list[np.ndarray], state: np.ndarray, actions: np.ndarray | None = None,
            sent: np.ndarray | None = None, t: float | None = None) -> Path:
        if self._dir is None:
            raise ConfigError("RecordingWriter.add before start_episode (or after close)")
        arrays = {f"image_{i}": np.asarray(img, dtype=np.uint8) for i, img in enumerate(images)}
        arrays["state"] = np.asarray(state, dtype=np.float64)
        arrays["instruction"] = np.asarray(self._instruction)
        if actions is not None:
            arrays["actions"] = np.asarray(actions, dtype=np.float32)
        if sent is not None:
            arrays["sent"] = np.asarray(sent, dtype=np.float32)
        arrays["t"] = np.float64(time.monotonic() if t is None else t)
        path = self._dir / f"step_{self._steps:06d}.npz"
        now = time.monotonic()
        sync_dir = now - self._dir_synced >= DIR_SYNC_S
        with atomic_file(path, "wb", sync_dir=sync_dir) as f:
            np.savez(f, **arrays)
        if sync_dir:
            self._dir_synced = now
        self._steps += 1
        return path

    def close(self) -> None:
        """End the current episode: episode.json gets its step count (atomically). Safe to call twice."""
        if self._dir is None:
            return
        directory, self._dir = self._dir, None
        write_json(directory / "episode.json", {**self._meta, "steps": self._steps,
                                                "closed": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_session(root: str | Path) -> dict:
    root = Path(root)
    path = root / "session.json"
    try:
        session = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: a recording directory is written by "
                          "`imagewam-edge run --record DIR` (format in the README)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}). Fix: copy session.json from another recording made with "
                          "the same config, or record again") from None
    if not isinstance(session, dict) or session.get("format") != FORMAT:
        found = session.get("format") if isinstance(session, dict) else type(session).__name__
        raise ConfigError(f"{path}: format {found!r} is not {FORMAT!r}")
    if int(session.get("version", 0)) > VERSION:
        raise ConfigError(f"{root}: recording version {session.get('version')} is newer than this package ({VERSION})")
    return session


def _load_step(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _check_step(path: Path, data: dict[str, np.ndarray]) -> int:
    """-> number of images; ConfigError naming the file, the field and the fix when a required array is wrong."""
    fix = f"Fix: delete {path} (the episode keeps its other steps)"
    state = data.get("state")
    if state is None:
        raise ConfigError(f"{path}: no `state` array (fields: {', '.join(sorted(data)) or 'none'}). {fix}")
    if state.ndim != 1 or state.dtype.kind not in "fiu":
        raise ConfigError(f"{path}: `state` is {state.dtype} {state.shape}, expected a 1-D float array. {fix}")
    n_img = sum(1 for k in data if k.startswith("image_"))
    for i in range(n_img):
        img = data.get(f"image_{i}")
        if img is None:
            raise ConfigError(f"{path}: images are numbered up to {n_img - 1} but `image_{i}` is missing. {fix}")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ConfigError(f"{path}: `image_{i}` is {img.dtype} {img.shape}, expected HxWx3 uint8. {fix}")
    if not n_img:
        raise ConfigError(f"{path}: no `image_0` array. {fix}")
    return n_img


def _instruction(episode: Path, steps: list[tuple[int, Path]]) -> str:
    """From episode.json; if that is missing or damaged, from the steps (each records it)."""
    path = episode / "episode.json"
    meta = _read_json(path)
    if meta is not None and isinstance(meta.get("instruction"), str):
        return meta["instruction"]
    problem = "is missing" if not path.exists() else ("has no `instruction`" if meta is not None else "is unreadable")
    for _, step in steps:
        try:
            data = _load_step(step)
        except _UNREADABLE:
            continue
        if "instruction" in data and data["instruction"].ndim == 0 and data["instruction"].dtype.kind == "U":
            log.warning("%s %s; the instruction is taken from %s", path, problem, step.name)
            return str(data["instruction"])
    raise ConfigError(f"{path} {problem} and none of its {len(steps)} step file(s) records the instruction. Fix: write "
                      f"{path} as {{\"instruction\": \"...\"}} with that episode's instruction, or delete {episode}")


def iter_observations(root: str | Path, stride: int = 1) -> Iterator[Observation]:
    """Every `stride`-th step of every episode, in order. A LeRobot v3 dataset directory (meta/info.json) is read
    through lerobot (workstation side, edge/lerobot_dataset.py) with the default key mapping."""
    root = Path(root)
    if (root / "meta" / "info.json").is_file() and not (root / "session.json").exists():
        from .lerobot_dataset import iter_lerobot_frames

        for frame in iter_lerobot_frames(root, stride):
            yield Observation(**frame)
        return
    read_session(root)
    episodes = _episode_dirs(root)
    if not episodes:
        raise ConfigError(f"{root} holds no episode_* directories")
    for ep_i, (_, ep) in enumerate(episodes):
        steps = _step_files(ep)
        if not steps:
            log.debug("%s has no steps", ep)
            continue
        instruction = _instruction(ep, steps)
        for k, (_, step) in enumerate(steps):
            if k % max(1, stride):
                continue
            try:
                data = _load_step(step)
            except _UNREADABLE as exc:
                if k == len(steps) - 1:  # the step being written when the recording was cut (power loss)
                    log.warning("%s: skipping its last step %s, unreadable (%s: %s)", ep, step.name,
                                type(exc).__name__, exc)
                    continue
                raise ConfigError(f"{step} is unreadable ({type(exc).__name__}: {exc}) and is not the last step of "
                                  f"its episode. Fix: delete {step} (the episode keeps its other steps)") from None
            n_img = _check_step(step, data)
            yield Observation(images=[data[f"image_{i}"] for i in range(n_img)], state=data["state"],
                              instruction=instruction, episode=ep_i, step=k, actions=data.get("actions"))
