"""Rotary position tables of ImageWAM Ovis-U1 (pure numpy, float64 angles -> float32 tables; no torch).

Yak uses 3 axes (16, 56, 56), theta 1e4, pairs interleaved as FLUX. Ids as the official Ovis-U1 ImageWAM code sets
them: every text token (refined VLM states and the proprio token) (0, 0, 0); the reference image (the current
camera canvas) (1, row, col); actions (2, i, 0)."""
from __future__ import annotations

import numpy as np

from .rope import rope_tables

REF_IMAGE_TIME_ID = 1.0
ACTION_TIME_ID = 2.0
AXES_DIM = (16, 56, 56)
THETA = 10000.0


def text_ids(length: int) -> np.ndarray:
    return np.zeros((length, 3), dtype=np.float64)


def image_ids(rows: int, cols: int, time_id: float = REF_IMAGE_TIME_ID) -> np.ndarray:
    ids = np.zeros((rows, cols, 3), dtype=np.float64)
    ids[..., 0] = time_id
    ids[..., 1] = np.arange(rows)[:, None]
    ids[..., 2] = np.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)  # [rows*cols, 3], row-major


def action_ids(horizon: int) -> np.ndarray:
    ids = np.zeros((horizon, 3), dtype=np.float64)
    ids[:, 0] = ACTION_TIME_ID
    ids[:, 1] = np.arange(horizon)
    return ids


def prefix_rope(context_len: int, rows: int, cols: int, axes_dim=AXES_DIM, theta=THETA):
    """Tables for the prefill sequence [text+proprio (context_len) ; reference image (rows x cols)]."""
    return rope_tables(np.concatenate([text_ids(context_len), image_ids(rows, cols)]), tuple(axes_dim), theta)


def action_rope(horizon: int, axes_dim=AXES_DIM, theta=THETA):
    return rope_tables(action_ids(horizon), tuple(axes_dim), theta)
