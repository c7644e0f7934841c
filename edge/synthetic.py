"""A synthetic observation for timing runs (bench, bench --compare): the simulated camera scene in every slot."""
from __future__ import annotations

import numpy as np


def synthetic_observation(policy, instruction: str, k: int) -> dict:
    """Frame k of the simulated scene in every camera slot (a different seed per slot), state mid-range."""
    from drivers.camera.sim import SimCameraConfig, render

    images = [render(SimCameraConfig(width=320, height=240, seed=s, depth=False), k)[0]
              for s in range(len(policy.canvas.slots))]
    state = np.zeros(policy.spec.state_dim) + 0.01 * (k % 7)
    return {"images": images, "state": state, "instruction": instruction}
