"""The Ovis-U1 variant's engines for the exporter: vision_encoder (autoencoder + VLM conditioning, every step),
prefill (Yak, joint and image self-attention K/V) and denoise_step (one velocity of the full-width expert), each a
thin module with positional tensor inputs in the backend contract's order (see `backend.py`). RoPE tables enter as
inputs (prefill) or float32 constants (denoise_step, fixed horizon); the image resize is two constant matrices."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge.transforms import compose_canvas, to_model_pixels

from ...export_spec import ExportComponent
from ..export_flux2 import example_images
from .conditioning import split_prompt_ids

OUT_KV = ("keys", "values", "image_keys", "image_values")


class VisionEncoder(nn.Module):
    def __init__(self, image_tokenizer, conditioner):
        super().__init__()
        self.image_tokenizer, self.conditioner = image_tokenizer, conditioner

    def forward(self, pixels, prefix_ids, suffix_ids):
        return self.image_tokenizer(pixels).float(), self.conditioner(pixels, prefix_ids, suffix_ids).float()


class Prefill(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, context, state, image_tokens, rope_cos, rope_sin):
        dtype = self.model.proprio_encoder.weight.dtype
        ctx = self.model.pack_context(context.to(dtype), state.to(dtype))
        return tuple(t.float() for t in self.model.prefill(ctx, image_tokens.to(dtype), rope_cos, rope_sin))


class DenoiseStep(nn.Module):
    def __init__(self, model, horizon: int):
        super().__init__()
        self.model = model
        cos, sin = model.action_rope(horizon)
        self.register_buffer("action_cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("action_sin", torch.from_numpy(sin), persistent=False)

    def forward(self, x, sigma, keys, values, image_keys, image_values):
        dtype = self.model.proprio_encoder.weight.dtype
        kv = [t.to(dtype) for t in (keys, values, image_keys, image_values)]
        return self.model.velocity(x.to(dtype), sigma, *kv, self.action_cos, self.action_sin).float()


def ovis_components(loaded, example_obs: dict | None = None) -> dict[str, ExportComponent]:
    """`loaded`: backend.LoadedOvisPolicy. Example inputs come from running the torch policy once."""
    policy, model = loaded.policy, loaded.checkpoint.model
    spec, canvas, backend = policy.spec, policy.canvas, policy.backend
    obs = example_obs or {"images": example_images(canvas), "state": np.zeros(spec.state_dim),
                          "instruction": "pick up the red block and place it on the plate"}
    pixels = to_model_pixels(compose_canvas(list(obs["images"]), canvas))
    prefix_ids, suffix_ids = split_prompt_ids(policy.text(obs["instruction"]))
    state = policy.state_norm.forward(np.asarray(obs["state"], np.float64))[None]
    enc = backend.run("vision_encoder", {"pixels": pixels, "prefix_ids": prefix_ids, "suffix_ids": suffix_ids})
    cos, sin = policy.prefix.rope(enc["context"].shape[1] + 1)
    kv = backend.run("prefill", {"context": enc["context"], "state": state, "image_tokens": enc["image_tokens"],
                                 "rope_cos": cos, "rope_sin": sin})
    x = np.random.default_rng(1).standard_normal((1, spec.horizon, spec.action_dim), dtype=np.float32)
    prefix = {0: "one", 2: "prefix_len"}
    kv_dyn = {"keys": {2: "prefix_len"}, "values": {2: "prefix_len"}}
    return {
        "vision_encoder": ExportComponent(
            "vision_encoder", VisionEncoder(loaded.image_tokenizer, loaded.conditioner).eval(),
            {"pixels": pixels, "prefix_ids": prefix_ids, "suffix_ids": suffix_ids}, ["image_tokens", "context"],
            dynamic={"prefix_ids": {1: "prefix_ids_len"}, "suffix_ids": {1: "suffix_ids_len"}, "context": {1: "context_len"}},
            # kept in high precision by default (`quantize --include vision_encoder` quantizes the VLM): at real size
            # its 28 W8A8 Qwen3 layers took the context to cosine 0.967 and failed the gate (README, real size)
            quantize=False,
            notes="Ovis-U1 autoencoder (4ch, x0.13025, 2x2 packing) + VLM conditioning (AIMv2 + Qwen3, prompt AND image)"),
        "prefill": ExportComponent(
            "prefill", Prefill(model).eval(),
            {"context": enc["context"], "state": state, "image_tokens": enc["image_tokens"], "rope_cos": cos, "rope_sin": sin},
            list(OUT_KV),
            dynamic={"context": {1: "context_len"}, "rope_cos": {0: "prefix_len"}, "rope_sin": {0: "prefix_len"},
                     "keys": prefix, "values": prefix}, notes="Yak prefill -> joint K/V per layer + image self-attn K/V"),
        "denoise_step": ExportComponent(
            "denoise_step", DenoiseStep(model, spec.horizon).eval(),
            {"x": x, "sigma": np.array([0.5], np.float32), **{k: kv[k] for k in OUT_KV}}, ["velocity"],
            dynamic=kv_dyn, notes="full-width Yak action expert, one velocity"),
    }
