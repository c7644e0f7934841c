"""What differs between model variants on the runtime side: how the prefix (the K/V cache the action expert
attends to) is computed from an observation. Everything after it (sampler, denoise steps, post-processing) is
shared: the prefix stage returns the backend's `Prefix` handle and `denoise_step` receives {"x", "sigma"} plus
every tensor in it.

A prefix stage is a class with `components` (the engines it runs, in order), `text_kind` (what the prompt cache
holds: "embedding" or "token_ids"), a constructor (spec, canvas), `check_text(instruction, text)` and
`__call__(backend, text, state, pixels, timings) -> Prefix` (a subclass of `PrefixStage`). A model variant names its class in its record
(edge/model_variants.py); `prefix_stage(spec, canvas)` there builds the one of `spec.variant`."""
from __future__ import annotations

import time

import numpy as np

from .errors import ConfigError
from .ovis_rope import prefix_rope as ovis_prefix_rope
from .rope import prefix_rope


class PrefixStage:
    """What the stages share: the spec, the canvas and the RoPE tables of the prefix, cached per context length."""

    components = ("vision_encoder", "prefill")
    text_kind: str  # what the prompt cache holds: "embedding" or "token_ids"
    rope_tables = staticmethod(prefix_rope)  # (context_len, rows, cols, axes_dim, theta) -> (cos, sin)

    def __init__(self, spec, canvas):
        self.spec, self.canvas = spec, canvas
        self._rope: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def rope(self, context_len: int) -> tuple[np.ndarray, np.ndarray]:
        if context_len not in self._rope:
            rows, cols = self.canvas.token_grid
            self._rope[context_len] = self.rope_tables(context_len, rows, cols, self.spec.axes_dim, self.spec.theta)
        return self._rope[context_len]


class Flux2Prefix(PrefixStage):
    """FLUX.2 klein: text embedding (cached per instruction) + proprio + image tokens -> one prefill pass."""

    text_kind = "embedding"  # the prompt cache holds float32 [T, text_width] embeddings

    def check_text(self, instruction: str, text: np.ndarray) -> np.ndarray:
        text = np.asarray(text, dtype=np.float32)
        if text.ndim != 2 or text.shape[1] != self.spec.text_width:
            raise ConfigError(f"prompt embedding for {instruction!r} is {text.shape}, the model takes "
                              f"[tokens, {self.spec.text_width}]: the prompt cache was made for another model")
        return text

    def __call__(self, backend, text: np.ndarray, state: np.ndarray, pixels: np.ndarray, timings: dict) -> dict:
        """text [T, Dt], state [1, P] normalised, pixels [1, 3, H, W] -> the backend's Prefix (K/V where the
        backend keeps them)."""
        t = time.perf_counter()
        tokens = backend.vision({"pixels": pixels})["image_tokens"]
        timings["vision_encoder"] = (time.perf_counter() - t) * 1e3
        cos, sin = self.rope(text.shape[0] + 1)
        t = time.perf_counter()
        kv = backend.prefill({"text": text[None], "state": state, "image_tokens": tokens,
                              "rope_cos": cos, "rope_sin": sin})
        timings["prefill"] = (time.perf_counter() - t) * 1e3
        return kv


OVIS_IMAGE_ATOM = -300  # the image atom placeholder id of Ovis-U1 prompts


class OvisU1Prefix(PrefixStage):
    """Ovis-U1: the VLM reads the prompt AND the image, so the conditioning runs every step inside
    `vision_encoder` (with the autoencoder); the prompt cache holds the VLM's prompt token ids (int64 [T])."""

    text_kind = "token_ids"
    rope_tables = staticmethod(ovis_prefix_rope)

    def check_text(self, instruction: str, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or int(np.sum(ids == OVIS_IMAGE_ATOM)) != 1:
            raise ConfigError(f"prompt entry for {instruction!r} is {ids.dtype} {ids.shape}; Ovis-U1 takes int token ids "
                              f"[T] with one image atom ({OVIS_IMAGE_ATOM}): the prompt cache was made for another model")
        return ids.astype(np.int64)

    def __call__(self, backend, ids: np.ndarray, state: np.ndarray, pixels: np.ndarray, timings: dict) -> dict:
        """ids [T] int64, state [1, P] normalised, pixels [1, 3, H, W] -> the backend's Prefix (K/V where the
        backend keeps them)."""
        atom = int(np.flatnonzero(ids == OVIS_IMAGE_ATOM)[0])
        t = time.perf_counter()
        enc = backend.vision({"pixels": pixels, "prefix_ids": ids[None, :atom], "suffix_ids": ids[None, atom + 1 :]})
        timings["vision_encoder"] = (time.perf_counter() - t) * 1e3
        context = enc["context"]
        cos, sin = self.rope(context.shape[1] + 1)  # + the proprio token
        t = time.perf_counter()
        kv = backend.prefill({"context": context, "state": state, "image_tokens": enc["image_tokens"],
                              "rope_cos": cos, "rope_sin": sin})
        timings["prefill"] = (time.perf_counter() - t) * 1e3
        return kv


