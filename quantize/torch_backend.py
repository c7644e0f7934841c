"""The PyTorch backend (reference path on a workstation): the checkpoint's networks behind the edge backend
contract, plus `load_torch_policy`, which assembles a complete policy from a release directory."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.errors import CheckpointError
from edge.normalize import load_normalizers
from edge.policy import ImageWAMPolicy, PolicySpec
from edge.prompt_cache import PromptCache, TextSource
from edge.rope import action_rope
from edge.transforms import get_embodiment

from .model.checkpoint import ImageWAMCheckpoint, load_checkpoint
from .model.text_encoder import DEFAULT_LAYERS, Qwen3TextEncoder
from .model.vision import Flux2ImageTokenizer

log = logging.getLogger(__name__)


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: ImageWAMCheckpoint, tokenizer: Flux2ImageTokenizer):
        self.ckpt, self.model, self.tokenizer = checkpoint, checkpoint.model, tokenizer
        self.dtype = checkpoint.dtype
        self._action_rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _t(self, a: np.ndarray, dtype=None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype or self.dtype)

    @torch.no_grad()
    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if component == "vision_encoder":
            tokens = self.tokenizer(self._t(inputs["pixels"], torch.float32))
            return {"image_tokens": tokens.float().numpy()}
        if component == "prefill":
            context, _ = self.model.pack_context(self._t(inputs["text"]), self._t(inputs["state"]))
            keys, values = self.model.prefill(context, self._t(inputs["image_tokens"]), self._t(inputs["rope_cos"], torch.float32),
                                              self._t(inputs["rope_sin"], torch.float32))
            return {"keys": keys.float().numpy(), "values": values.float().numpy()}
        if component == "denoise_step":
            x = inputs["x"]
            horizon = x.shape[1]
            if horizon not in self._action_rope:
                cfg = self.model.backbone_cfg
                cos, sin = action_rope(horizon, cfg.axes_dim, cfg.theta)
                self._action_rope[horizon] = (torch.from_numpy(cos), torch.from_numpy(sin))
            cos, sin = self._action_rope[horizon]
            v = self.model.velocity(self._t(x), self._t(inputs["sigma"], torch.float32), self._t(inputs["keys"]),
                                    self._t(inputs["values"]), cos, sin)
            return {"velocity": v.float().numpy()}
        raise ValueError(f"unknown component {component!r}")

    def close(self) -> None:
        pass


@dataclass
class LoadedPolicy:
    policy: ImageWAMPolicy
    checkpoint: ImageWAMCheckpoint
    text_encoder: Qwen3TextEncoder
    base: Path


def resolve_base(directory: Path, train_config: dict, base: str | Path | None = None) -> Path:
    """Where the FLUX.2 klein base release (vae/, text_encoder/, tokenizer/) is: --base, else train_config's
    `edge.base` (relative to the checkpoint), else DIR/base."""
    edge_cfg = train_config.get("edge", {}) if isinstance(train_config, dict) else {}
    candidates = [Path(base)] if base else []
    if edge_cfg.get("base"):
        candidates.append(directory / edge_cfg["base"])
    candidates.append(directory / "base")
    for cand in candidates:
        if (cand / "vae" / "config.json").exists():
            return cand
    raise CheckpointError(
        f"the FLUX.2 klein base release was not found (looked in: {', '.join(str(c) for c in candidates)}); "
        "the autoencoder and the Qwen3 text encoder come from it: download black-forest-labs/FLUX.2-klein-4B "
        "(diffusers layout: vae/, text_encoder/, tokenizer/) and pass --base DIR or place it at CHECKPOINT/base")


def load_vae_tokenizer(base: Path, dtype: torch.dtype | None = None) -> Flux2ImageTokenizer:
    from diffusers import AutoencoderKLFlux2
    from quantize.hf import quiet

    quiet()
    try:
        vae = AutoencoderKLFlux2.from_pretrained(str(base / "vae"), **({"torch_dtype": dtype} if dtype else {}))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{base / 'vae'} is not a loadable FLUX.2 autoencoder ({exc})") from None
    return Flux2ImageTokenizer(vae.eval().requires_grad_(False))


def load_torch_policy(checkpoint: str | Path, base: str | Path | None = None, dtype: torch.dtype | None = None,
                      prompt_cache: str | Path | None = None, steps: int = 10, horizon: int | None = None,
                      embodiment: str | None = None, canvas: str | None = None) -> LoadedPolicy:
    ckpt = load_checkpoint(checkpoint, dtype=dtype)
    directory = Path(checkpoint)
    edge_cfg = ckpt.train_config.get("edge", {}) if isinstance(ckpt.train_config, dict) else {}
    model_cfg = ckpt.train_config.get("model", {}) if isinstance(ckpt.train_config, dict) else {}
    base_dir = resolve_base(directory, ckpt.train_config, base)
    tokenizer = load_vae_tokenizer(base_dir)
    text_encoder = Qwen3TextEncoder(base_dir / "text_encoder", base_dir / "tokenizer",
                                    layers=edge_cfg.get("text_layers", DEFAULT_LAYERS),
                                    max_length=int(model_cfg.get("qwen_context_len", 512)), dtype=dtype)
    cfg = ckpt.model.backbone_cfg
    if text_encoder.width != cfg.context_dim:
        raise CheckpointError(f"text encoder in {base_dir} gives width {text_encoder.width} but the checkpoint's "
                              f"backbone takes {cfg.context_dim}: the base release does not match the checkpoint")
    emb = get_embodiment(embodiment or edge_cfg.get("embodiment", "libero"))
    spec = PolicySpec(variant="flux2", action_dim=ckpt.model.expert_cfg.action_dim, state_dim=ckpt.model.proprio_dim,
                      text_width=cfg.context_dim, head_dim=cfg.head_dim, axes_dim=cfg.axes_dim, theta=cfg.theta,
                      embodiment=emb.name, text_encoder=text_encoder.identity,
                      horizon=int(horizon or edge_cfg.get("horizon", emb.horizon)), steps=int(steps),
                      canvas=canvas or "")
    state_norm, action_norm = load_normalizers(ckpt.stats_path, emb.norm_mode)
    cache = PromptCache(prompt_cache) if prompt_cache else None
    source = TextSource(spec.text_encoder, cache, text_encoder)
    policy = ImageWAMPolicy(TorchBackend(ckpt, tokenizer), spec, source, state_norm, action_norm)
    return LoadedPolicy(policy, ckpt, text_encoder, base_dir)
