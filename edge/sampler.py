"""Flow-matching action sampler (pure numpy; shared by every backend).

x_s = (1 - s) x0 + s e, the network predicts v = e - x0; Euler from s = 1 to 0 with the shifted schedule
s = shift*u / (1 + (shift-1)*u), u = linspace(1, 0, N+1). The action buffer and the accumulation stay float32
whatever precision the engines run in."""
from __future__ import annotations

from typing import Callable

import numpy as np


def flow_sigmas(steps: int = 10, shift: float = 5.0) -> np.ndarray:
    """N+1 sigmas from 1 to 0 (float64). steps=10, shift=5: 1, .978, .952, .921, .882, .833, .769, .682, .556, .357, 0."""
    if int(steps) < 1:
        raise ValueError(f"denoising steps must be >= 1, got {steps}")
    if not shift > 0:
        raise ValueError(f"schedule shift must be > 0, got {shift}")
    u = np.linspace(1.0, 0.0, int(steps) + 1, dtype=np.float64)
    return shift * u / (1.0 + (shift - 1.0) * u)


def euler_sample(noise: np.ndarray, velocity: Callable[[np.ndarray, float, int], np.ndarray],
                 sigmas: np.ndarray) -> np.ndarray:
    """Integrate from `noise` (s = sigmas[0]) to s = sigmas[-1]. `velocity(x, s, i)` returns v = e - x0."""
    x = np.array(noise, dtype=np.float32, copy=True)
    for i in range(len(sigmas) - 1):
        v = np.asarray(velocity(x, float(sigmas[i]), i), dtype=np.float32)
        if v.shape != x.shape:
            raise ValueError(f"velocity shape {v.shape} != action shape {x.shape} at step {i}")
        x += v * np.float32(sigmas[i + 1] - sigmas[i])
    return x


def initial_noise(seed: int | None, horizon: int, action_dim: int) -> np.ndarray:
    """Standard normal [1, horizon, action_dim] float32, reproducible from `seed` (numpy PCG64)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, horizon, action_dim), dtype=np.float32)
