"""The backend contract: images, state and noise go in, the action chunk comes out; the intermediate tensors (image
tokens, the prefill's K/V cache) stay where the backend keeps them (host memory for the CPU backends, device
memory for TensorRT, onnxruntime-gpu and torch CUDA).

Components and their tensors (the ONNX export and the engines use the same names):
  vision_encoder: pixels [1, 3, H, W] f32 in [-1, 1]                  -> image_tokens [1, N, C]
  prefill:        text [1, T, Dt], state [1, P], image_tokens [1, N, C],
                  rope_cos, rope_sin [T+1+N, head_dim]                 -> keys, values [L, 1, T+1+N, H*D]
  denoise_step:   x [1, A, Da], sigma [1], keys, values                -> velocity [1, A, Da]

Calls per control step:
  `vision(host arrays) -> tensors`                       the vision_encoder's outputs where the backend keeps them
                                                         (anything with `.shape`); Ovis-U1 also returns its VLM
                                                         context here; they are fed straight to `prefill`
  `prefill(host arrays) -> Prefix`                       K/V stay in the backend; the Prefix is an opaque handle
  `denoise(prefix, noise, sigmas) -> (x0, step_ms)`      the whole Euler loop; FP32 accumulation; only the noise
                                                         goes in and the final action chunk comes out
`run(component, host arrays) -> host arrays` stays for export, calibration capture and the accuracy gate.
`traffic` counts the bytes each stage moves host->device and device->host (`bench` reports them per control step).
A backend with only `run` gets `prefill` and `denoise` from `HostLoop` (edge/backends/host_loop.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

COMPONENTS = ("vision_encoder", "prefill", "denoise_step")
IO = {
    "vision_encoder": (("pixels",), ("image_tokens",)),
    "prefill": (("text", "state", "image_tokens", "rope_cos", "rope_sin"), ("keys", "values")),
    "denoise_step": (("x", "sigma", "keys", "values"), ("velocity",)),
}


@dataclass
class Prefix:
    """The prefill's outputs as the backend keeps them (numpy arrays, OrtValues, device buffers, torch tensors):
    `tensors` by output name, `nbytes` their size, `where` "host" or "device"."""

    tensors: dict[str, Any]
    nbytes: int
    where: str = "host"


@dataclass
class Traffic:
    """Host<->device bytes by stage, accumulated until `take()` (one control step's worth in `infer`)."""

    h2d: dict[str, int] = field(default_factory=dict)
    d2h: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, h2d: int = 0, d2h: int = 0) -> None:
        if h2d:
            self.h2d[stage] = self.h2d.get(stage, 0) + int(h2d)
        if d2h:
            self.d2h[stage] = self.d2h.get(stage, 0) + int(d2h)

    def take(self) -> dict[str, dict[str, int]]:
        """{"h2d": {stage: bytes}, "d2h": {...}} since the last take, then reset."""
        out = {"h2d": dict(self.h2d), "d2h": dict(self.d2h)}
        self.h2d.clear()
        self.d2h.clear()
        return out


class Backend(Protocol):
    name: str
    traffic: Traffic

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one component on host arrays; outputs are host arrays keyed by the names in IO."""

    def vision(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Run the vision_encoder; outputs stay in the backend (each has `.shape`) and may be passed to prefill."""

    def prefill(self, inputs: dict[str, Any]) -> Prefix:
        """Run the prefill (host arrays, or tensors `vision` returned); its outputs stay in the backend (bound as
        the denoise inputs, never copied)."""

    def denoise(self, prefix: Prefix, noise: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Euler-integrate `noise` [1, A, Da] over `sigmas` against `prefix`; returns (x0 [1, A, Da] float32,
        per-step milliseconds where the backend can time single steps, else [])."""

    def close(self) -> None:
        """Release engines and buffers."""
