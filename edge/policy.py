"""The policy contract (openpi style): `infer(obs) -> dict`, `reset()`. Pre-processing, the three components on
any backend, the flow-matching sampler and post-processing; no torch here."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError
from .model_variants import prefix_stage
from .normalize import Normalizer
from .sampler import flow_sigmas, initial_noise
from .strict import StrictConfig
from .transforms import POSTPROCESS, compose_canvas, get_canvas, get_embodiment, to_model_pixels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicySpec(StrictConfig):
    """What the runtime must know about a model; written as `policy.json` beside exported engines."""

    variant: str  # a registered model variant (edge/model_variants.py: "flux2", "ovis-u1")
    action_dim: int
    state_dim: int
    text_width: int
    head_dim: int
    axes_dim: tuple[int, ...]
    theta: float
    embodiment: str
    text_encoder: str  # identity of the text encoder (keys the prompt cache)
    horizon: int = 16
    steps: int = 10
    shift: float = 5.0
    canvas: str | dict = ""  # camera canvas preset, or a custom layout (edge.transforms.canvas_from_dict); empty:
    # the embodiment's own

    def __post_init__(self):
        if self.horizon < 1 or self.steps < 1 or self.action_dim < 1 or self.state_dim < 1:
            raise ConfigError(f"policy spec: horizon, steps, action_dim and state_dim must be >= 1 ({self})")
        get_embodiment(self.embodiment)
        if self.canvas:
            get_canvas(self.canvas)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["axes_dim"] = list(self.axes_dim)
        return d


class ImageWAMPolicy:
    def __init__(self, backend, spec: PolicySpec, text_source, state_norm: Normalizer, action_norm: Normalizer):
        if state_norm.dim != spec.state_dim or action_norm.dim != spec.action_dim:
            raise ConfigError(f"dataset_stats.json has state/action dims {state_norm.dim}/{action_norm.dim} but the "
                              f"model takes {spec.state_dim}/{spec.action_dim}")
        self.backend, self.spec, self.text_source = backend, spec, text_source
        self.state_norm, self.action_norm = state_norm, action_norm
        self.embodiment = get_embodiment(spec.embodiment)
        self.canvas = get_canvas(spec.canvas or self.embodiment.canvas)
        self.postprocess = POSTPROCESS[self.embodiment.postprocess]
        self.sigmas = flow_sigmas(spec.steps, spec.shift)
        self.prefix = prefix_stage(spec, self.canvas)
        self._text: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        self._text.clear()

    def text(self, instruction: str) -> np.ndarray:
        if instruction not in self._text:
            self._text[instruction] = self.prefix.check_text(instruction, self.text_source(instruction))
        return self._text[instruction]

    def infer(self, obs: dict, noise: np.ndarray | None = None, seed: int | None = None) -> dict:
        """obs: {"images": [HxWx3 uint8 per camera slot], "state": [state_dim], "instruction": str}.
        Returns {"actions" [H, Da] un-normalised and post-processed, "actions_normalized", "timings_ms", "step_ms",
        "transfer_bytes" {"h2d"|"d2h": {stage: bytes}} moved between host and accelerator in this step}."""
        timings, clock = {}, time.perf_counter
        t = clock()
        text = self.text(obs["instruction"])
        timings["text"] = (clock() - t) * 1e3
        t = clock()
        state = np.asarray(obs["state"], dtype=np.float64).reshape(-1)
        if state.shape[0] != self.spec.state_dim or not np.all(np.isfinite(state)):
            raise ConfigError(f"state must be {self.spec.state_dim} finite values, got {state.tolist()}")
        pixels = to_model_pixels(compose_canvas(list(obs["images"]), self.canvas))
        state_n = self.state_norm.forward(state)[None]  # [1, P]
        timings["preprocess"] = (clock() - t) * 1e3
        kv = self.prefix(self.backend, text, state_n, pixels, timings)
        if noise is None:
            noise = initial_noise(seed, self.spec.horizon, self.spec.action_dim)
        noise = np.asarray(noise, dtype=np.float32).reshape(1, self.spec.horizon, self.spec.action_dim)
        t = clock()
        x, step_ms = self.backend.denoise(kv, noise, self.sigmas)
        timings["denoise"] = (clock() - t) * 1e3
        t = clock()
        actions = self.postprocess(self.action_norm.backward(x[0]))
        timings["postprocess"] = (clock() - t) * 1e3
        timings["total"] = sum(timings.values())
        traffic = self.backend.traffic.take()
        return {"actions": actions, "actions_normalized": x[0], "timings_ms": timings, "step_ms": step_ms,
                "transfer_bytes": traffic}
