"""Action-chunk scheduling: which command to stream at time t when the policy delivers chunks of H actions
asynchronously, with a latency, and several chunks overlap in time.

Time base: action i of a chunk applies at `t0 + i * dt`, with `t0` the camera timestamp of the observation it was
computed from and `dt` the action period of the training data. A chunk that arrives `L` seconds after its frame is
therefore entered at index L/dt: the stale prefix is skipped (latency compensation), and between two actions the
command is interpolated linearly, so a 200 Hz controller follows a 10-20 Hz policy smoothly.

Blending of overlapping chunks (pure functions below, state in `ChunkScheduler`):
- "crossfade" (default; real-time-chunking style): a new chunk fades in over `blend_s` seconds with a smooth
  (raised-cosine) weight; the output stays continuous even when a chunk arrives during another fade
  (fades nest: out_k = lerp(out_{k-1}, chunk_k, alpha_k)).
- "ensemble" (ACT temporal ensembling): every chunk that covers t contributes, weight exp(-m * k), k = 0 for the
  oldest (m > 0 favours older chunks as ACT does, m < 0 newer ones).
- "none": switch to the newest chunk at once.
No chunk covers t (the newest one ran out before the next arrived) -> `target` returns None: the loop holds.
Replanning: a new chunk is requested once the followed chunk has executed `replan - lead` actions, where lead is
the measured latency in actions, so the next chunk lands when `replan` actions have run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

BLEND_MODES = ("crossfade", "ensemble", "none")


@dataclass
class Chunk:
    actions: np.ndarray  # [H, A] float64, absolute targets in the command space
    t0: float  # monotonic s at which actions[0] applies (camera timestamp of the observation)
    dt: float  # s between consecutive actions
    index: int = 0  # sequence number
    t_ready: float = math.nan  # monotonic s when it became available

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def t_end(self) -> float:
        return self.t0 + (self.horizon - 1) * self.dt


def chunk_position(t: float, t0: float, dt: float) -> float:
    """Continuous action index of time t in a chunk starting at t0 with spacing dt."""
    return (t - t0) / dt


def sample_actions(actions: np.ndarray, s: float) -> Optional[np.ndarray]:
    """actions [H, A] at continuous index s: linear interpolation between neighbours; s < 0 gives actions[0];
    s > H - 1 (the chunk has run out) gives None."""
    h = actions.shape[0]
    if s > h - 1 + 1e-9:
        return None
    if s <= 0:
        return actions[0].copy()
    i = min(int(math.floor(s)), h - 1)
    if i >= h - 1:
        return actions[h - 1].copy()
    f = s - i
    return (1.0 - f) * actions[i] + f * actions[i + 1]


def sample_chunk(chunk: Chunk, t: float) -> Optional[np.ndarray]:
    return sample_actions(chunk.actions, chunk_position(t, chunk.t0, chunk.dt))


def fade_weight(t: float, t_start: float, window: float) -> float:
    """Raised-cosine ramp 0 -> 1 over [t_start, t_start + window] (continuous, zero slope at both ends)."""
    if window <= 0 or t >= t_start + window:
        return 1.0
    if t <= t_start:
        return 0.0
    x = (t - t_start) / window
    return 0.5 - 0.5 * math.cos(math.pi * x)


def ensemble_weights(n: int, m: float) -> np.ndarray:
    """ACT temporal ensembling weights for n chunks ordered oldest first: exp(-m * k), normalised."""
    w = np.exp(-float(m) * np.arange(n, dtype=np.float64))
    return w / w.sum()


class ChunkScheduler:
    """Keeps the chunks that matter and answers `target(t)` (the command at t, or None: hold)."""

    def __init__(self, replan: int, blend: str = "crossfade", blend_s: float = 0.1, ensemble_m: float = 0.1,
                 max_chunks: int = 8, latency_alpha: float = 0.3):
        if blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
        if int(replan) < 1:
            raise ValueError(f"replan must be >= 1 action, got {replan}")
        self.replan, self.blend, self.blend_s, self.ensemble_m = int(replan), blend, float(blend_s), float(ensemble_m)
        self.max_chunks = int(max_chunks)
        self.latency_alpha = float(latency_alpha)
        self.latency_s: Optional[float] = None  # EMA of (arrival - t0)
        self._chunks: list[Chunk] = []  # oldest first
        self._fades: list[float] = []  # fade start per chunk (crossfade)
        self.added = 0

    @property
    def current(self) -> Optional[Chunk]:
        return self._chunks[-1] if self._chunks else None

    def add(self, chunk: Chunk, now: float) -> None:
        """A chunk arrives at `now` (its `t_ready`)."""
        chunk.t_ready = now
        lat = max(0.0, now - chunk.t0)
        self.latency_s = lat if self.latency_s is None else (1 - self.latency_alpha) * self.latency_s + self.latency_alpha * lat
        self.added += 1
        if self.blend == "none":
            self._chunks, self._fades = [chunk], [now]
            return
        self._chunks.append(chunk)
        self._fades.append(now)
        self._prune(now)

    def _prune(self, now: float) -> None:
        keep = []
        for k, (c, f) in enumerate(zip(self._chunks, self._fades)):
            expired = sample_chunk(c, now) is None
            if k == len(self._chunks) - 1:
                keep.append(k)  # the newest is kept even when expired (target then says: hold)
            elif expired:
                continue
            elif self.blend == "crossfade" and any(fade_weight(now, self._fades[j], self.blend_s) >= 1.0
                                                   for j in range(k + 1, len(self._chunks))):
                continue  # a later chunk has fully faded in: this one no longer contributes
            else:
                keep.append(k)
        keep = keep[-self.max_chunks:]
        self._chunks = [self._chunks[k] for k in keep]
        self._fades = [self._fades[k] for k in keep]

    def target(self, t: float) -> Optional[np.ndarray]:
        """The command at time t, or None when the newest chunk has run out (hold)."""
        if not self._chunks or sample_chunk(self._chunks[-1], t) is None:
            return None
        if self.blend == "ensemble":
            vals = [v for v in (sample_chunk(c, t) for c in self._chunks) if v is not None]
            w = ensemble_weights(len(vals), self.ensemble_m)
            return np.tensordot(w, np.stack(vals), axes=1)
        out = None
        for c, f in zip(self._chunks, self._fades):
            v = sample_chunk(c, t)
            if v is None:
                continue
            out = v if out is None else out + fade_weight(t, f, self.blend_s) * (v - out)
        return out

    def due(self, t: float) -> bool:
        """True when a new chunk should be requested now (none yet, or the followed chunk reaches its replan
        point within the measured latency)."""
        c = self.current
        if c is None:
            return True
        lead = (self.latency_s or 0.0) / c.dt
        return chunk_position(t, c.t0, c.dt) >= min(self.replan, c.horizon - 1) - lead

    def clear(self) -> None:
        self._chunks, self._fades = [], []
