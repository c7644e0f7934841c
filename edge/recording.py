"""Observation recordings: what `run --record DIR` writes and `quantize --calibration DIR` reads.

    DIR/session.json                 {"format": "imagewam-recording", "version": 1, "canvas", "slots", "state_dim",
                                      "action_dim", "created", "synthetic": false, ...}
    DIR/episode_0000/episode.json    {"instruction": str, "steps": n, ...}
    DIR/episode_0000/step_000000.npz image_0 ... image_{k-1} (HxWx3 uint8, in camera-slot order), state (float64 [P]),
                                     optional: actions (float32 [H, A], the chunk computed from this observation),
                                     sent (float32 [A], the command actually written), t (float64, monotonic s)

One `.npz` per step (no pickle), written atomically, so an interrupted recording keeps every finished step."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ConfigError

FORMAT = "imagewam-recording"
VERSION = 1


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


class RecordingWriter:
    def __init__(self, root: str | Path, canvas: str, slots: list[str], state_dim: int, action_dim: int,
                 synthetic: bool = False, extra: dict | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.root.glob("episode_*"))
        self.episode = int(existing[-1].name.split("_")[1]) + 1 if existing else 0
        self.session = {"format": FORMAT, "version": VERSION, "canvas": canvas, "slots": list(slots),
                        "state_dim": int(state_dim), "action_dim": int(action_dim), "synthetic": bool(synthetic),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        (self.root / "session.json").write_text(json.dumps(self.session, indent=1))
        self._dir: Path | None = None
        self._steps = 0
        self._instruction = ""

    def start_episode(self, instruction: str, **meta) -> Path:
        self._dir = self.root / f"episode_{self.episode:04d}"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._instruction, self._steps, self._meta = instruction, 0, meta
        self._write_episode()
        self.episode += 1
        return self._dir

    def _write_episode(self) -> None:
        (self._dir / "episode.json").write_text(json.dumps({"instruction": self._instruction, "steps": self._steps,
                                                            **self._meta}, indent=1))

    def add(self, images: list[np.ndarray], state: np.ndarray, actions: np.ndarray | None = None,
            sent: np.ndarray | None = None, t: float | None = None) -> Path:
        if self._dir is None:
            raise ConfigError("RecordingWriter.add before start_episode")
        arrays = {f"image_{i}": np.asarray(img, dtype=np.uint8) for i, img in enumerate(images)}
        arrays["state"] = np.asarray(state, dtype=np.float64)
        if actions is not None:
            arrays["actions"] = np.asarray(actions, dtype=np.float32)
        if sent is not None:
            arrays["sent"] = np.asarray(sent, dtype=np.float32)
        arrays["t"] = np.float64(time.monotonic() if t is None else t)
        path = self._dir / f"step_{self._steps:06d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self._steps += 1
        self._write_episode()
        return path


def read_session(root: str | Path) -> dict:
    root = Path(root)
    try:
        session = json.loads((root / "session.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{root}/session.json not found: a recording directory is written by "
                          "`imagewam-edge run --record DIR` (format in the README)") from None
    if session.get("format") != FORMAT:
        raise ConfigError(f"{root}/session.json: format {session.get('format')!r} is not {FORMAT!r}")
    if int(session.get("version", 0)) > VERSION:
        raise ConfigError(f"{root}: recording version {session.get('version')} is newer than this package ({VERSION})")
    return session


def iter_observations(root: str | Path, stride: int = 1) -> Iterator[Observation]:
    """Every `stride`-th step of every episode, in order."""
    root = Path(root)
    read_session(root)
    episodes = sorted(root.glob("episode_*"))
    if not episodes:
        raise ConfigError(f"{root} holds no episode_* directories")
    for ep_i, ep in enumerate(episodes):
        try:
            meta = json.loads((ep / "episode.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{ep}/episode.json unreadable ({exc})") from None
        for k, step in enumerate(sorted(ep.glob("step_*.npz"))):
            if k % max(1, stride):
                continue
            with np.load(step, allow_pickle=False) as data:
                n_img = sum(1 for key in data.files if key.startswith("image_"))
                yield Observation(images=[data[f"image_{i}"] for i in range(n_img)], state=data["state"],
                                  instruction=meta["instruction"], episode=ep_i, step=k,
                                  actions=data["actions"] if "actions" in data.files else None)
