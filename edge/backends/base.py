"""The backend contract: named arrays in, named arrays out, one call per component.

Components and their tensors (the ONNX export and the engines use the same names):
  vision_encoder: pixels [1, 3, H, W] f32 in [-1, 1]                  -> image_tokens [1, N, C]
  prefill:        text [1, T, Dt], state [1, P], image_tokens [1, N, C],
                  rope_cos, rope_sin [T+1+N, head_dim]                 -> keys, values [L, 1, T+1+N, H*D]
  denoise_step:   x [1, A, Da], sigma [1], keys, values                -> velocity [1, A, Da]
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

COMPONENTS = ("vision_encoder", "prefill", "denoise_step")
IO = {
    "vision_encoder": (("pixels",), ("image_tokens",)),
    "prefill": (("text", "state", "image_tokens", "rope_cos", "rope_sin"), ("keys", "values")),
    "denoise_step": (("x", "sigma", "keys", "values"), ("velocity",)),
}


class Backend(Protocol):
    name: str

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one component; inputs/outputs keyed by the names in IO."""

    def close(self) -> None:
        """Release engines and buffers."""
