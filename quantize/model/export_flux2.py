"""The FLUX.2 variant's engines for the exporter: vision_encoder, prefill and denoise_step (one Euler
velocity evaluation), each a thin module with positional tensor inputs in the backend contract's order."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge.rope import action_rope
from edge.transforms import compose_canvas, to_model_pixels

from ..export_spec import ExportComponent
from .vision import Flux2ImageTokenizer


class VisionEncoder(nn.Module):
    def __init__(self, tokenizer: Flux2ImageTokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, pixels):
        return self.tokenizer(pixels).float()


class Prefill(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, text, state, image_tokens, rope_cos, rope_sin):
        dtype = self.model.proprio_encoder.weight.dtype
        context, _ = self.model.pack_context(text.to(dtype), state.to(dtype))
        keys, values = self.model.prefill(context, image_tokens.to(dtype), rope_cos, rope_sin)
        return keys.float(), values.float()


class DenoiseStep(nn.Module):
    """velocity(x, sigma, keys, values); the action RoPE table is a constant of the graph (fixed horizon)."""

    def __init__(self, model, horizon: int):
        super().__init__()
        self.model = model
        cos, sin = action_rope(horizon, model.backbone_cfg.axes_dim, model.backbone_cfg.theta)
        self.register_buffer("action_cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("action_sin", torch.from_numpy(sin), persistent=False)

    def forward(self, x, sigma, keys, values):
        dtype = self.model.proprio_encoder.weight.dtype
        v = self.model.velocity(x.to(dtype), sigma, keys.to(dtype), values.to(dtype), self.action_cos, self.action_sin)
        return v.float()


def example_images(canvas) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (s.height, s.width, 3), dtype=np.uint8) for s in canvas.slots]


def flux2_components(loaded, example_obs: dict | None = None) -> dict[str, ExportComponent]:
    """`loaded`: quantize.torch_backend.LoadedPolicy. Example inputs come from running the torch policy once."""
    policy, model = loaded.policy, loaded.checkpoint.model
    spec, canvas = policy.spec, policy.canvas
    obs = example_obs or {"images": example_images(canvas), "state": np.zeros(spec.state_dim),
                          "instruction": "pick up the red block and place it on the plate"}
    pixels = to_model_pixels(compose_canvas(list(obs["images"]), canvas))
    backend = policy.backend
    text = policy.text(obs["instruction"])[None]
    state = policy.state_norm.forward(np.asarray(obs["state"], np.float64))[None]
    tokens = backend.run("vision_encoder", {"pixels": pixels})["image_tokens"]
    cos, sin = policy.prefix.rope(text.shape[1] + 1)
    kv = backend.run("prefill", {"text": text, "state": state, "image_tokens": tokens, "rope_cos": cos, "rope_sin": sin})
    x = np.random.default_rng(1).standard_normal((1, spec.horizon, spec.action_dim), dtype=np.float32)
    prefix = {0: "one", 2: "prefix_len"}
    n_img, t_len = tokens.shape[1], text.shape[1]
    max_text = int(getattr(loaded.text_encoder, "max_length", 512))
    ranges = {"text_len": (1, t_len, max_text), "prefix_len": (2 + n_img, t_len + 1 + n_img, max_text + 1 + n_img)}
    return {
        "vision_encoder": ExportComponent("vision_encoder", VisionEncoder(loaded.policy.backend.tokenizer).eval(),
                                          {"pixels": pixels}, ["image_tokens"], quantize=False,
                                          notes="FLUX.2 autoencoder encoder + unshuffle + BN; kept FP16/FP32 by default "
                                                "(its thin first convolutions lose the most under INT8)"),
        "prefill": ExportComponent(
            "prefill", Prefill(model).eval(),
            {"text": text, "state": state, "image_tokens": tokens, "rope_cos": cos, "rope_sin": sin}, ["keys", "values"],
            dynamic={"text": {1: "text_len"}, "rope_cos": {0: "prefix_len"}, "rope_sin": {0: "prefix_len"},
                     "keys": prefix, "values": prefix}, ranges=ranges, notes="backbone prefill -> per-layer K/V"),
        "denoise_step": ExportComponent(
            "denoise_step", DenoiseStep(model, spec.horizon).eval(),
            {"x": x, "sigma": np.array([0.5], np.float32), "keys": kv["keys"], "values": kv["values"]}, ["velocity"],
            dynamic={"keys": {2: "prefix_len"}, "values": {2: "prefix_len"}}, ranges=ranges,
            notes="action expert, one velocity"),
    }


class TextEncoder(nn.Module):
    """Qwen3 hidden states of the configured layers, concatenated: (input_ids, attention_mask) [1, L] -> [1, L, W]."""

    def __init__(self, model, layers):
        super().__init__()
        self.model, self.layers = model, tuple(layers)

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
        return torch.cat([out.hidden_states[k] for k in self.layers], dim=-1).float()


def text_encoder_component(loaded) -> dict[str, ExportComponent]:
    """The optional text_encoder engine (off the control path: it fills the prompt cache on the device)."""
    enc = loaded.text_encoder
    if enc.model is None:
        enc._load()
    batch = enc.tokenizer(enc._rendered("pick up the red block"), return_tensors="np", padding="max_length",
                          truncation=True, max_length=enc.max_length)
    inputs = {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}
    module = TextEncoder(enc.model, enc.layers).eval()  # stored dtype: the exporter writes float32 tensor by tensor
    return {"text_encoder": ExportComponent("text_encoder", module, inputs, ["hidden"], optional=True, quantize=False,
                                            notes=f"Qwen3 layers {list(enc.layers)} stacked, padded to {enc.max_length}")}
