"""The PyTorch backend of ImageWAM Ovis-U1 (reference path on a workstation) behind the edge backend contract,
and `load_ovis_policy` (same signature as `quantize.torch_backend.load_torch_policy`).

Components and tensors (the ONNX export uses the same names):
  vision_encoder: pixels [1, 3, H, W] in [-1, 1], prefix_ids [1, Tp], suffix_ids [1, Ts] int64
                  -> image_tokens [1, N, 16] (VAE), context [1, T, 4096] (VLM: prompt AND image, every step)
  prefill:        context, state [1, P], image_tokens, rope_cos/rope_sin [T+1+N, 128]
                  -> keys, values [L, 1, T+1+N, H*D]; image_keys, image_values [D, 1, N, H*D]
  denoise_step:   x [1, A, Da], sigma [1], keys, values, image_keys, image_values -> velocity [1, A, Da]"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.backends.host_loop import HostLoop
from edge.errors import CheckpointError
from edge.normalize import load_normalizers
from edge.ovis_rope import action_rope
from edge.policy import ImageWAMPolicy, PolicySpec
from edge.prompt_cache import TextSource, cached_encoder, checkpoint_caches
from edge.transforms import get_embodiment

from ..text_encoder import uncached_error
from .checkpoint import BaseRelease, OvisCheckpoint, load_checkpoint, load_conditioner, load_vae
from .conditioning import OvisConditioner, prompt_ids
from .vae import OvisImageTokenizer

log = logging.getLogger(__name__)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


class OvisPromptTokenizer:
    """Instruction -> the VLM's prompt token ids (int64 [T], with the image placeholders): what the prompt cache
    stores for Ovis-U1 (the VLM itself must run every step, since it reads the image). The tokenizer files are
    read only for an instruction that no prompt cache holds; without them (`available` False) such an instruction
    fails naming it, the missing file and the fixes (`checkpoint`/`prompt_cache` go into that message)."""

    def __init__(self, base: Path, checkpoint: str | Path | None = None, prompt_cache: str | Path | None = None):
        self.base = Path(base)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.prompt_cache = Path(prompt_cache) if prompt_cache is not None else None
        self.missing = [] if (self.base / "tokenizer_config.json").exists() else [self.base / "tokenizer_config.json"]
        self.tokenizer = None

    @property
    def available(self) -> bool:
        return not self.missing

    @property
    def ship(self) -> str:
        return (f"copy the Qwen3 tokenizer files of the Ovis-U1 base release (AIDC-AI/Ovis-U1-3B: "
                f"{', '.join(TOKENIZER_FILES[:2])}, chat_template.jinja, ...) beside config.json in {self.base}/")

    def _require(self, instruction: str | None = None) -> None:
        if not self.missing:
            return
        if instruction is not None:
            raise uncached_error(instruction, self.missing, self.checkpoint, self.prompt_cache, self.ship,
                                 "prompt tokenizer")
        raise CheckpointError(f"{self.missing[0]} not found: this needs the Ovis-U1 base release's tokenizer; "
                              f"{self.ship}")

    @property
    def identity(self) -> str:
        self._require()
        h = hashlib.sha256()
        for name in TOKENIZER_FILES:
            f = self.base / name
            if f.exists():
                h.update(f.read_bytes())
        h.update(json.dumps(["ovis-u1-prompt-ids", prompt_ids.__doc__]).encode())
        return "ovis-ids-" + h.hexdigest()[:16]

    def __call__(self, instruction: str) -> np.ndarray:
        self._require(instruction)
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.base))
        return prompt_ids(self.tokenizer, instruction)


class OvisTorchBackend(HostLoop):
    name = "torch"

    def __init__(self, checkpoint: OvisCheckpoint, conditioner: OvisConditioner, image_tokenizer: OvisImageTokenizer):
        self.ckpt, self.model = checkpoint, checkpoint.model
        self.conditioner, self.image_tokenizer = conditioner, image_tokenizer
        self.dtype = checkpoint.dtype
        self._action_rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _t(self, a: np.ndarray, dtype=None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype or self.dtype)

    @torch.no_grad()
    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if component == "vision_encoder":
            pixels = self._t(inputs["pixels"], torch.float32)
            tokens = self.image_tokenizer(pixels)
            ids = [torch.from_numpy(np.ascontiguousarray(inputs[k])).long() for k in ("prefix_ids", "suffix_ids")]
            context = self.conditioner(pixels, *ids)
            return {"image_tokens": tokens.float().numpy(), "context": context.float().numpy()}
        if component == "prefill":
            context = self.model.pack_context(self._t(inputs["context"]), self._t(inputs["state"]))
            out = self.model.prefill(context, self._t(inputs["image_tokens"]), self._t(inputs["rope_cos"], torch.float32),
                                     self._t(inputs["rope_sin"], torch.float32))
            return {k: v.float().numpy() for k, v in zip(("keys", "values", "image_keys", "image_values"), out)}
        if component == "denoise_step":
            x = inputs["x"]
            horizon = x.shape[1]
            if horizon not in self._action_rope:
                cos, sin = self.model.action_rope(horizon)
                self._action_rope[horizon] = (torch.from_numpy(cos), torch.from_numpy(sin))
            cos, sin = self._action_rope[horizon]
            kv = [self._t(inputs[k]) for k in ("keys", "values", "image_keys", "image_values")]
            v = self.model.velocity(self._t(x), self._t(inputs["sigma"], torch.float32), *kv, cos, sin)
            return {"velocity": v.float().numpy()}
        raise ValueError(f"unknown component {component!r}")

    def close(self) -> None:
        pass


@dataclass
class LoadedOvisPolicy:
    policy: ImageWAMPolicy
    checkpoint: OvisCheckpoint
    text_encoder: OvisPromptTokenizer
    base: Path
    conditioner: OvisConditioner
    image_tokenizer: OvisImageTokenizer


REQUIRED_BASE = ("config.json (llm_config, visual_tokenizer_config, visual_generator_config.vae_config) and "
                 "*.safetensors with llm.model.*, visual_tokenizer.*, vte.weight (the VLM, which reads the image "
                 "every step) and visual_generator.vae.* (the autoencoder); preprocessor_config.json is optional "
                 "(defaults), the tokenizer files are read only for instructions not in the prompt cache, and "
                 "visual_generator.backbone.* and llm.lm_head.* are not read (the checkpoint carries its own DiT)")


def resolve_base(directory: Path, train_config: dict, base: str | Path | None = None) -> Path:
    """--base, else train_config's `edge.base` (relative to the checkpoint), else DIR/base. What the base release
    must hold (see REQUIRED_BASE): the VLM reads the image every step, so it is needed by every command; only the
    tokenizer files are optional (read only for an instruction that no prompt cache holds)."""
    edge_cfg = train_config.get("edge", {}) if isinstance(train_config, dict) else {}
    candidates = [Path(base)] if base else []
    if edge_cfg.get("base"):
        candidates.append(directory / edge_cfg["base"])
    candidates.append(directory / "base")
    for cand in candidates:
        if (cand / "config.json").exists():
            return cand
    raise CheckpointError(
        f"the Ovis-U1 base release was not found: no config.json in {', '.join(str(c) for c in candidates)}. The "
        f"VLM conditioning and the autoencoder come from it and every command runs them; it must hold "
        f"{REQUIRED_BASE}: download AIDC-AI/Ovis-U1-3B and pass --base DIR or place it at {candidates[-1]}")


def load_ovis_policy(checkpoint: str | Path, base: str | Path | None = None, dtype: torch.dtype | None = None,
                     prompt_cache: str | Path | None = None, steps: int = 10, horizon: int | None = None,
                     embodiment: str | None = None, canvas: str | None = None) -> LoadedOvisPolicy:
    from ...hf import quiet

    quiet()
    ckpt = load_checkpoint(checkpoint, dtype=dtype)
    directory = Path(checkpoint)
    edge_cfg = ckpt.train_config.get("edge", {}) if isinstance(ckpt.train_config, dict) else {}
    base_dir = resolve_base(directory, ckpt.train_config, base)
    release = BaseRelease(base_dir)
    conditioner = load_conditioner(release, dtype)
    image_tokenizer = OvisImageTokenizer(load_vae(release, dtype))
    cfg = ckpt.model.backbone_cfg
    if conditioner.width != cfg.context_dim:
        raise CheckpointError(f"the VLM in {base_dir} gives width {conditioner.width} but the checkpoint's Yak takes "
                              f"{cfg.context_dim}: the base release does not match the checkpoint")
    if image_tokenizer.token_dim != cfg.in_channels:
        raise CheckpointError(f"the autoencoder in {base_dir} gives {image_tokenizer.token_dim}-channel tokens but the "
                              f"Yak takes {cfg.in_channels}")
    cache, shipped = checkpoint_caches(directory, prompt_cache)
    tokenizer = OvisPromptTokenizer(base_dir, checkpoint=directory, prompt_cache=prompt_cache)
    if tokenizer.available:
        encoder_id = tokenizer.identity
    else:  # no tokenizer files: the id the cached token ids were made with
        encoder_id = cached_encoder([cache, shipped], lambda e: e["encoder"].startswith("ovis-ids-"),
                                    f"the tokenizer ({tokenizer.missing[0]})") or "ovis-ids-unknown"
    emb = get_embodiment(embodiment or edge_cfg.get("embodiment", "libero"))
    spec = PolicySpec(variant="ovis-u1", action_dim=ckpt.model.expert_cfg.action_dim, state_dim=ckpt.model.proprio_dim,
                      text_width=cfg.context_dim, head_dim=cfg.head_dim, axes_dim=cfg.axes_dim, theta=cfg.theta,
                      embodiment=emb.name, text_encoder=encoder_id,
                      horizon=int(horizon or edge_cfg.get("horizon", emb.horizon)), steps=int(steps),
                      canvas=canvas or edge_cfg.get("canvas") or "")
    state_norm, action_norm = load_normalizers(ckpt.stats_path, emb.norm_mode)
    source = TextSource(spec.text_encoder, cache, tokenizer, shipped=shipped)
    backend = OvisTorchBackend(ckpt, conditioner, image_tokenizer)
    policy = ImageWAMPolicy(backend, spec, source, state_norm, action_norm)
    return LoadedOvisPolicy(policy, ckpt, tokenizer, base_dir, conditioner, image_tokenizer)
