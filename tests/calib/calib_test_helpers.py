"""Helpers shared by the calib tests (importable because pytest puts this directory on sys.path)."""
from __future__ import annotations

import numpy as np

from calib import synth


def render_detect(spec, detector, poses, camera=None, seed=0, prefix="view_"):
    """{name: Detection} of synthetic views at the given T_cam_board poses."""
    return {
        f"{prefix}{i:03d}.png": detector.detect(synth.render_view(spec, T, camera, rng=np.random.default_rng(seed + i)))
        for i, T in enumerate(poses)
    }
