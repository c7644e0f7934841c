"""Rotary position tables of ImageWAM FLUX.2 (pure numpy: the runtime computes them without torch).

Ids have 4 axes (t, h, w, l): text (0, 0, 0, i), current image (10, row, col, 0), actions (2, i, 0, 0).
Angles are computed in float64 and handed to the networks as float32 cos/sin tables, so no float64 node ever
reaches an exported graph."""
from __future__ import annotations

import numpy as np

IMAGE_TIME_ID = 10.0
ACTION_TIME_ID = 2.0


def rope_tables(ids: np.ndarray, axes_dim: tuple[int, ...], theta: float) -> tuple[np.ndarray, np.ndarray]:
    """ids [S, n_axes] -> (cos, sin), each [S, sum(axes_dim)] float32, pairs interleaved (x0, x1) as BFL FLUX.2."""
    ids = np.asarray(ids, dtype=np.float64)
    if ids.ndim != 2 or ids.shape[1] < len(axes_dim):
        raise ValueError(f"position ids must be [S, {len(axes_dim)}], got {ids.shape}")
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axes_dim):
        freqs = 1.0 / (float(theta) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))  # [dim/2]
        angles = np.outer(ids[:, axis], freqs)  # [S, dim/2]
        cos_parts.append(np.repeat(np.cos(angles), 2, axis=1))  # [S, dim], interleaved
        sin_parts.append(np.repeat(np.sin(angles), 2, axis=1))
    return np.concatenate(cos_parts, 1).astype(np.float32), np.concatenate(sin_parts, 1).astype(np.float32)


def text_ids(length: int) -> np.ndarray:
    ids = np.zeros((length, 4), dtype=np.float64)
    ids[:, 3] = np.arange(length)
    return ids


def image_ids(rows: int, cols: int) -> np.ndarray:
    ids = np.zeros((rows, cols, 4), dtype=np.float64)
    ids[..., 0] = IMAGE_TIME_ID
    ids[..., 1] = np.arange(rows)[:, None]
    ids[..., 2] = np.arange(cols)[None, :]
    return ids.reshape(rows * cols, 4)  # [rows*cols, 4], row-major as "b c h w -> b (h w) c"


def action_ids(horizon: int) -> np.ndarray:
    ids = np.zeros((horizon, 4), dtype=np.float64)
    ids[:, 0] = ACTION_TIME_ID
    ids[:, 1] = np.arange(horizon)
    return ids


def prefix_rope(context_len: int, rows: int, cols: int, axes_dim, theta) -> tuple[np.ndarray, np.ndarray]:
    """Tables for the prefill sequence [text+proprio (context_len) ; image (rows x cols)]."""
    return rope_tables(np.concatenate([text_ids(context_len), image_ids(rows, cols)]), axes_dim, theta)


def action_rope(horizon: int, axes_dim, theta) -> tuple[np.ndarray, np.ndarray]:
    return rope_tables(action_ids(horizon), axes_dim, theta)
