"""The PyTorch backend (reference path on a workstation): the checkpoint's networks behind the edge backend
contract, plus `load_torch_policy`, which assembles a complete policy from a release directory."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.backends.base import Prefix, Traffic
from edge.errors import CheckpointError, ConfigError
from edge.normalize import load_normalizers
from edge.policy import ImageWAMPolicy, PolicySpec
from edge.prompt_cache import TextSource, cached_encoder, checkpoint_caches
from edge.rope import action_rope
from edge.transforms import get_embodiment

from .model.checkpoint import ImageWAMCheckpoint, load_checkpoint
from .model.text_encoder import DEFAULT_LAYERS, Qwen3TextEncoder
from .model.vision import Flux2ImageTokenizer
from .torch_graphs import Captured

log = logging.getLogger(__name__)


class TorchBackend:
    """The checkpoint's networks behind the backend contract, on the CPU (the reference path) or on a CUDA device.

    On CUDA the control step stays on the device: image tokens and the prefill's K/V are torch tensors on the GPU
    (never copied to the host), the vision encoder, the prefill and the whole N-step denoise loop (velocity + FP32
    Euler update) are CUDA graphs captured once per shape (a new instruction length re-captures the prefill and
    the loop), and the denoise graph's K/V inputs ARE the prefill graph's output buffers. Only pixels, text, state, rope tables and the
    noise go in; the action chunk comes out (`traffic` counts both)."""

    name = "torch"

    def __init__(self, checkpoint: ImageWAMCheckpoint, tokenizer: Flux2ImageTokenizer, device: str = "cpu",
                 cuda_graphs: bool | None = None, sync_stages: bool = True, compile: bool = False):
        self.ckpt, self.model, self.tokenizer = checkpoint, checkpoint.model, tokenizer
        self.dtype = checkpoint.dtype
        self.device = torch.device(device)
        self.graphs = self.device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
        if self.graphs and self.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, not {self.device}")
        self.sync_stages = sync_stages and self.device.type == "cuda"  # per-stage timings are true times
        self.where = "device" if self.device.type == "cuda" else "host"
        self.traffic = Traffic()
        self._action_rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._prefill_graphs: dict[tuple, Captured] = {}
        self._loops: dict[tuple, Captured] = {}
        # torch.compile (inductor) fuses the many small elementwise kernels of each block (norms, RoPE, modulation);
        # compiled on the first call per shape (minutes at real size), then captured in the CUDA graphs like eager
        self._velocity = torch.compile(self.model.velocity, dynamic=False) if compile else self.model.velocity
        self._prefill_core = torch.compile(self._prefill_eager, dynamic=False) if compile else self._prefill_eager
        self._vision_core = torch.compile(self.tokenizer, dynamic=False) if compile else self.tokenizer
        self._vision_graphs: dict[tuple, Captured] = {}

    # --- host <-> backend -------------------------------------------------------------------------------------
    def _in(self, stage: str, a, dtype=None) -> torch.Tensor:
        """A host array (counted as host->device bytes on CUDA) or a tensor this backend returned -> its tensor."""
        if isinstance(a, torch.Tensor):
            return a if dtype is None or a.dtype == dtype else a.to(dtype)
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.where == "device":
            self.traffic.add(stage, h2d=t.nbytes)
            t = t.to(self.device, non_blocking=False)
        return t.to(dtype or self.dtype)

    def _out(self, stage: str, t: torch.Tensor) -> np.ndarray:
        if self.where == "device":
            self.traffic.add(stage, d2h=t.numel() * 4)
        return t.float().cpu().numpy()

    def _sync(self) -> None:
        if self.sync_stages:
            torch.cuda.synchronize(self.device)

    def _rope(self, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        if horizon not in self._action_rope:
            cfg = self.model.backbone_cfg
            cos, sin = action_rope(horizon, cfg.axes_dim, cfg.theta)
            self._action_rope[horizon] = (torch.from_numpy(cos).to(self.device), torch.from_numpy(sin).to(self.device))
        return self._action_rope[horizon]

    # --- the contract -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def vision(self, inputs: dict) -> dict[str, torch.Tensor]:
        pixels = self._in("vision_encoder", inputs["pixels"], torch.float32)
        if self.graphs:
            key = tuple(pixels.shape)
            if key not in self._vision_graphs:
                log.info("capturing the vision-encoder CUDA graph for pixels %s", key)
                self._vision_graphs[key] = Captured(self._vision_core, [pixels.clone()])
            tokens = self._vision_graphs[key](pixels)
        else:
            tokens = self._vision_core(pixels)
        self._sync()
        return {"image_tokens": tokens}

    def _prefill_fn(self, text, state, tokens, cos, sin):
        return self._prefill_core(text, state, tokens, cos, sin)

    def _prefill_eager(self, text, state, tokens, cos, sin):
        context, _ = self.model.pack_context(text, state)
        return self.model.prefill(context, tokens.to(self.dtype), cos, sin)

    @torch.no_grad()
    def prefill(self, inputs: dict) -> Prefix:
        args = [self._in("prefill", inputs["text"]), self._in("prefill", inputs["state"]),
                self._in("prefill", inputs["image_tokens"]), self._in("prefill", inputs["rope_cos"], torch.float32),
                self._in("prefill", inputs["rope_sin"], torch.float32)]
        if self.graphs:
            key = tuple(tuple(a.shape) for a in args)
            if key not in self._prefill_graphs:
                log.info("capturing the prefill CUDA graph for shapes %s", key)
                self._prefill_graphs[key] = Captured(self._prefill_fn, [a.clone() for a in args])
            keys, values = self._prefill_graphs[key](*args)
        else:
            keys, values = self._prefill_fn(*args)
        self._sync()
        return Prefix({"keys": keys, "values": values}, keys.nbytes + values.nbytes, self.where)

    def _loop_fn(self, sigmas: tuple[float, ...], cos, sin):
        def loop(x, keys, values):
            x = x.clone()  # FP32 [1, A, Da]: the graph's input buffer stays the caller's noise
            for i in range(len(sigmas) - 1):
                # the network gets fp32(sigma) (DESIGN §2 step 7)
                sigma = torch.full((x.shape[0],), sigmas[i], dtype=torch.float32, device=x.device)
                v = self._velocity(x.to(self.dtype), sigma, keys, values, cos, sin)
                x = x + v.float() * float(np.float32(sigmas[i + 1] - sigmas[i]))
            return x
        return loop

    @torch.no_grad()
    def denoise(self, prefix: Prefix, noise: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, list[float]]:
        keys, values = prefix.tensors["keys"], prefix.tensors["values"]
        x = self._in("denoise", noise, torch.float32)
        cos, sin = self._rope(x.shape[1])
        loop = self._loop_fn(tuple(float(s) for s in sigmas), cos, sin)
        if not self.graphs:
            out = loop(x, keys, values)
            return self._out("denoise", out), []
        key = (tuple(keys.shape), keys.data_ptr(), values.data_ptr(), tuple(x.shape), tuple(float(s) for s in sigmas))
        if key not in self._loops:
            log.info("capturing the %d-step denoise CUDA graph for K/V %s", len(sigmas) - 1, tuple(keys.shape))
            self._loops[key] = Captured(loop, [x.clone(), keys, values])
        out = self._loops[key](x, keys, values)
        return self._out("denoise", out), []

    @torch.no_grad()
    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One component, host arrays in and out (export, calibration capture, the accuracy gate)."""
        if component == "vision_encoder":
            return {"image_tokens": self._out(component, self.vision(inputs)["image_tokens"])}
        if component == "prefill":
            args = [self._in(component, inputs[k]) for k in ("text", "state", "image_tokens")]
            args += [self._in(component, inputs[k], torch.float32) for k in ("rope_cos", "rope_sin")]
            keys, values = self._prefill_fn(*args)
            return {"keys": self._out(component, keys), "values": self._out(component, values)}
        if component == "denoise_step":
            x = self._in(component, inputs["x"])
            cos, sin = self._rope(x.shape[1])
            v = self.model.velocity(x, self._in(component, inputs["sigma"], torch.float32),
                                    self._in(component, inputs["keys"]), self._in(component, inputs["values"]), cos, sin)
            return {"velocity": self._out(component, v)}
        raise ValueError(f"unknown component {component!r}")

    def close(self) -> None:
        self._vision_graphs.clear()
        self._prefill_graphs.clear()
        self._loops.clear()


@dataclass
class LoadedPolicy:
    policy: ImageWAMPolicy
    checkpoint: ImageWAMCheckpoint
    text_encoder: Qwen3TextEncoder
    base: Path


def resolve_base(directory: Path, train_config: dict, base: str | Path | None = None, need: str = "vae") -> Path:
    """Where the FLUX.2 klein base release is: --base, else train_config's `edge.base` (relative to the checkpoint),
    else DIR/base. Only `vae/` must be there (the vision encoder is its encoder); `text_encoder/` and `tokenizer/`
    are read only for an instruction that no prompt cache holds (`need="text_encoder"`: the release that has them,
    for `prompts add`)."""
    edge_cfg = train_config.get("edge", {}) if isinstance(train_config, dict) else {}
    candidates = [Path(base)] if base else []
    if edge_cfg.get("base"):
        candidates.append(directory / edge_cfg["base"])
    candidates.append(directory / "base")
    candidates = list(dict.fromkeys(candidates))  # edge.base is often the default base/ itself
    for cand in candidates:
        if (cand / need / "config.json").exists():
            return cand
    if need == "text_encoder":
        raise CheckpointError(
            f"the FLUX.2 text encoder was not found: no text_encoder/config.json in "
            f"{', '.join(str(c) for c in candidates)}. Filling a prompt cache runs it, and so does `bench --compare "
            "reference` (the official path encodes the instruction every step): copy `text_encoder/` and "
            f"`tokenizer/` of black-forest-labs/FLUX.2-klein-4B (or -9B; Qwen3) to {candidates[-1]}, or pass --base DIR "
            "pointing at the release; a cache can also be filled on engines exported with --text-encoder "
            "(`prompts add --engines DIR`)")
    raise CheckpointError(
        f"the FLUX.2 autoencoder was not found: no vae/config.json in {', '.join(str(c) for c in candidates)}. "
        "The vision encoder is the FLUX.2 klein autoencoder (AutoencoderKLFlux2, diffusers layout), needed by every "
        f"command: copy `vae/` of black-forest-labs/FLUX.2-klein-4B (or -9B) to {candidates[-1] / 'vae'}, or pass "
        "--base DIR pointing at the release (`text_encoder/` and `tokenizer/` are needed only for instructions "
        "not in the prompt cache)")


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
                      embodiment: str | None = None, canvas: str | None = None, device: str = "cpu",
                      cuda_graphs: bool | None = None, compile: bool = False) -> LoadedPolicy:
    """A complete policy from a release directory. `device` "cuda" (or "cuda:N") runs the control step on the GPU
    with the K/V resident and CUDA graphs (see TorchBackend); the text encoder stays where `text_encoder` puts it
    (off the control path: the prompt cache serves every instruction it has seen).

    Of base/ only `vae/` is required. Instructions come from `prompt_cache` (read and written), then the
    checkpoint's own CHECKPOINT/prompts.npz (read only), then the Qwen3 text encoder, whose files are looked at only
    then: without `text_encoder/` or `tokenizer/` an uncached instruction fails naming them and the fixes."""
    ckpt = load_checkpoint(checkpoint, dtype=dtype)
    directory = Path(checkpoint)
    edge_cfg = ckpt.train_config.get("edge", {}) if isinstance(ckpt.train_config, dict) else {}
    model_cfg = ckpt.train_config.get("model", {}) if isinstance(ckpt.train_config, dict) else {}
    base_dir = resolve_base(directory, ckpt.train_config, base)
    tokenizer = load_vae_tokenizer(base_dir)
    cache, shipped = checkpoint_caches(directory, prompt_cache)
    text_encoder = Qwen3TextEncoder(base_dir / "text_encoder", base_dir / "tokenizer",
                                    layers=edge_cfg.get("text_layers", DEFAULT_LAYERS),
                                    max_length=int(model_cfg.get("qwen_context_len", 512)), dtype=dtype,
                                    checkpoint=directory, prompt_cache=prompt_cache)
    cfg = ckpt.model.backbone_cfg
    if text_encoder.width is not None and text_encoder.width != cfg.context_dim:
        raise CheckpointError(f"text encoder in {base_dir} gives width {text_encoder.width} but the checkpoint's "
                              f"backbone takes {cfg.context_dim}: the base release does not match the checkpoint")
    if text_encoder.available:
        encoder_id = text_encoder.identity
    else:  # base/ without the text encoder: the id its cached entries were made with (FLUX.2 text at this width)
        encoder_id = cached_encoder(
            [cache, shipped], lambda e: e["encoder"].startswith("qwen3-") and e.get("width") == cfg.context_dim,
            f"the text encoder ({' and '.join(str(m) for m in text_encoder.missing)})") or "qwen3-unknown"
    emb = get_embodiment(embodiment or edge_cfg.get("embodiment", "libero"))
    spec = PolicySpec(variant="flux2", action_dim=ckpt.model.expert_cfg.action_dim, state_dim=ckpt.model.proprio_dim,
                      text_width=cfg.context_dim, head_dim=cfg.head_dim, axes_dim=cfg.axes_dim, theta=cfg.theta,
                      embodiment=emb.name, text_encoder=encoder_id,
                      horizon=int(horizon or edge_cfg.get("horizon", emb.horizon)), steps=int(steps),
                      canvas=canvas or edge_cfg.get("canvas") or "")  # a preset name or a declared layout
    state_norm, action_norm = load_normalizers(ckpt.stats_path, emb.norm_mode)
    source = TextSource(spec.text_encoder, cache, text_encoder, shipped=shipped)
    if device != "cpu":
        ckpt.model.to(device)
        tokenizer.to(device)
    policy = ImageWAMPolicy(TorchBackend(ckpt, tokenizer, device=device, cuda_graphs=cuda_graphs, compile=compile), spec, source,
                            state_norm, action_norm)
    return LoadedPolicy(policy, ckpt, text_encoder, base_dir)
