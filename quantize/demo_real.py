"""`demo-checkpoint --variant flux2-4b | flux2-9b`: a REAL-SIZE ImageWAM FLUX.2 release directory with random
bf16 weights, to rehearse the real-size pipeline (memory, disk, time) without the official weights.

    OUT/model.pt            {"mot": BFL names incl. the `mixtures.video.double_blocks.*` aliases (shared storage),
                             "step", "torch_dtype": "torch.bfloat16", "proprio_encoder": {"weight", "bias"}}
    OUT/dataset_stats.json, OUT/train_config.yaml (the real layer counts and widths; a `demo:` section says what
                            is random and what is a stand-in), OUT/samples/*.png
    OUT/base/vae            the FLUX.2 autoencoder in its REAL configuration (diffusers defaults), random weights
    OUT/base/text_encoder   Qwen3 at the real width (Qwen3-4B: 2560, Qwen3-8B: 4096, so the stacked text is 7680 /
                            12288 wide as the backbone expects) but a STAND-IN: 4 layers stacking (1, 2, 3) instead of
                            36 stacking (9, 18, 27), a 400-token vocabulary; `full_text_encoder=True` writes the real
                            configuration (36 layers, 151936 tokens, 8 / 16 GB)
    OUT/base/tokenizer      a STAND-IN byte-level BPE with the Qwen3 chat template (the real one is Qwen3's own)

`double_blocks` / `single_blocks` keep the real width and cut the depth (the action expert follows: it has one
layer per backbone layer): real-width slices for memory measurements and CI. model.pt is written one tensor at a
time (quantize.streaming), so the peak memory is one tensor, whatever the model's size."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import yaml

from edge.model_configs import FLUX2_VAE, TEXT_ENCODERS, flux2_expert
from edge.model_variants import demo_size
from edge.transforms import get_embodiment

from .demo import demo_stats, write_sample_images
from .model.checkpoint import official_state_dict
from .model.flux2 import FLUX2_PRESETS
from .model.mot import ImageWAMFlux2
from .streaming import Progress, RandomInit, peak_rss_bytes, save_safetensors_streamed, save_torch_streamed

log = logging.getLogger(__name__)

REAL_TEXT_LAYERS = (9, 18, 27)
STANDIN_TEXT_LAYERS, STANDIN_LAYERS = (1, 2, 3), 4
MODEL_NAMES = {"flux2-4b": "klein-4B", "flux2-9b": "klein-9B"}


def real_configs(variant: str, action_dim: int = 7, double_blocks: int | None = None, single_blocks: int | None = None):
    """(backbone, expert) configurations of a real variant, optionally with fewer blocks (same widths)."""
    demo_size(variant, f"{__name__}:write_real_demo")  # flux2-4b, flux2-9b
    backbone = FLUX2_PRESETS[variant]
    changes = {k: v for k, v in (("depth_double", double_blocks), ("depth_single", single_blocks)) if v is not None}
    if any(v < 0 for v in changes.values()) or (changes and sum({**backbone.to_dict(), **changes}[k]
                                                                for k in ("depth_double", "depth_single")) < 1):
        raise ValueError(f"--double-blocks/--single-blocks must be >= 0 with at least one block, got {changes}")
    backbone = replace(backbone, **changes)
    return backbone, flux2_expert(backbone, action_dim)


def _qwen3_config(variant: str, vocab_size: int, full: bool, pad_id: int, eos_id: int, layers: int = STANDIN_LAYERS):
    from transformers import Qwen3Config

    kwargs = {**TEXT_ENCODERS[variant], "pad_token_id": pad_id, "eos_token_id": eos_id}
    if not full:
        kwargs.update(num_hidden_layers=layers, vocab_size=vocab_size)
    cfg = Qwen3Config(**kwargs)
    cfg.dtype = torch.bfloat16
    return cfg


def write_text_encoder(base: Path, variant: str, full: bool, seed: int, say: Callable[[str], None],
                       standin_layers: int = STANDIN_LAYERS) -> dict:
    """base/tokenizer (stand-in) and base/text_encoder (bf16 safetensors, written tensor by tensor)."""
    from transformers import Qwen3ForCausalLM

    from .model.text_encoder import write_demo_tokenizer

    tokenizer = write_demo_tokenizer(base / "tokenizer")
    cfg = _qwen3_config(variant, len(tokenizer), full, tokenizer.pad_token_id, tokenizer.eos_token_id, standin_layers)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    templates = {k: v for k, v in model.state_dict().items()
                 if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    out = base / "text_encoder"
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(str(out))
    n = save_safetensors_streamed(out / "model.safetensors", templates, RandomInit(seed + 7),
                                  progress=Progress(say, "text_encoder/model.safetensors"))
    params = sum(t.numel() for t in templates.values())
    what = (f"Qwen3 real configuration ({cfg.num_hidden_layers} layers, vocabulary {cfg.vocab_size}), random weights"
            if full else f"STAND-IN: Qwen3 at the real width {cfg.hidden_size} (real heads and MLP) with "
            f"{cfg.num_hidden_layers} layers instead of 36 and a {cfg.vocab_size}-token vocabulary, random weights")
    return {"text_encoder": what, "text_encoder_parameters": params, "text_encoder_bytes": n,
            "tokenizer": f"STAND-IN: a {len(tokenizer)}-token byte-level BPE with the Qwen3 chat template",
            "text_layers": list(REAL_TEXT_LAYERS if full else (min(k, standin_layers) for k in STANDIN_TEXT_LAYERS))}


def write_vae(base: Path, seed: int) -> dict:
    """The FLUX.2 autoencoder in its real configuration (diffusers' defaults), random weights, non-trivial BN stats."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(**FLUX2_VAE)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        vae.bn.running_mean.copy_(0.1 * torch.randn(vae.bn.running_mean.shape, generator=g))
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=g) * 0.5 + 0.5)
    params = sum(p.numel() for p in vae.parameters())
    vae.save_pretrained(str(base / "vae"))
    return {"vae": "FLUX.2 autoencoder, real configuration, random weights (float32)", "vae_parameters": params}


def write_real_demo(out: str | Path, variant: str = "flux2-4b", embodiment: str = "libero", seed: int = 0,
                    state_dim: int = 8, action_dim: int = 7, double_blocks: int | None = None,
                    single_blocks: int | None = None, full_text_encoder: bool = False,
                    progress: Callable[[str], None] | None = None, standin_text_layers: int = STANDIN_LAYERS) -> Path:
    """`standin_text_layers`: depth of the stand-in Qwen3 (tests use 1 to save time; it stacks min(k, depth) for
    k in (1, 2, 3))."""
    from .hf import quiet

    quiet()
    say = progress or (lambda s: log.info(s))
    t0 = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = get_embodiment(embodiment)
    backbone, expert = real_configs(variant, action_dim, double_blocks, single_blocks)
    with torch.device("meta"):
        model = ImageWAMFlux2(backbone, expert, state_dim).to(torch.bfloat16)
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    n_expert = sum(p.numel() for p in model.expert.parameters())
    n_total = n_backbone + n_expert + sum(p.numel() for p in model.proprio_encoder.parameters())
    full_depth = (backbone.depth_double, backbone.depth_single) == (FLUX2_PRESETS[variant].depth_double,
                                                                     FLUX2_PRESETS[variant].depth_single)
    shape = (f"{backbone.depth_double}+{backbone.depth_single} blocks"
             + ("" if full_depth else f" (a real-width SLICE of {FLUX2_PRESETS[variant].depth_double}+"
                                      f"{FLUX2_PRESETS[variant].depth_single})"))
    say(f"[1/4] model.pt: {variant} {shape}, hidden {backbone.hidden}, expert {expert.hidden}: "
        f"{n_total / 1e9:.3f} B parameters ({n_backbone / 1e9:.3f} backbone + {n_expert / 1e9:.3f} expert), "
        f"{2 * n_total / 1e9:.2f} GB in bf16, random weights, written tensor by tensor")
    payload = {**official_state_dict(model), "step": 0, "torch_dtype": "torch.bfloat16"}
    written = save_torch_streamed(out / "model.pt", payload, RandomInit(seed), progress=Progress(say, "model.pt"))
    del model, payload
    (out / "dataset_stats.json").write_text(json.dumps(demo_stats(action_dim, state_dim, seed), indent=1))
    base = out / "base"
    say("[2/4] base/vae: the FLUX.2 autoencoder (real configuration, random weights)")
    notes = write_vae(base, seed)
    say(f"[3/4] base/text_encoder + tokenizer ({'real configuration' if full_text_encoder else 'STAND-IN at the real width'})")
    notes.update(write_text_encoder(base, variant, full_text_encoder, seed, say, standin_text_layers))
    config = {
        "model": {"variant": MODEL_NAMES[variant], "proprio_dim": state_dim, "pack_proprio_after_text": True,
                  "qwen_context_len": 512,
                  "action_dit_config": {"action_dim": action_dim, "hidden_dim": expert.hidden, "num_heads": expert.heads,
                                        "attn_head_dim": expert.head_dim, "num_layers_double": expert.depth_double,
                                        "num_layers_single": expert.depth_single, "mlp_ratio": expert.mlp_ratio}},
        "edge": {"variant": "flux2", "embodiment": emb.name, "base": "base", "text_layers": notes["text_layers"],
                 "axes_dim": list(backbone.axes_dim), "theta": backbone.theta, "horizon": emb.horizon},
        "demo": {"variant": variant, "weights": "random (not a trained policy: its actions mean nothing)",
                 "depth": shape, "parameters": n_total, "model_pt_tensor_bytes": written,
                 **{k: notes[k] for k in ("vae", "text_encoder", "tokenizer")}},
    }
    (out / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    say("[4/4] dataset_stats.json, train_config.yaml, samples/")
    write_sample_images(out / "samples", emb.canvas, seed)
    size = (out / "model.pt").stat().st_size
    say(f"done in {time.monotonic() - t0:.0f} s: model.pt {size / 1e9:.2f} GB, base/ "
        f"{sum(f.stat().st_size for f in base.rglob('*') if f.is_file()) / 1e9:.2f} GB; peak RSS "
        f"{peak_rss_bytes() / 2**30:.2f} GiB")
    say(f"      real: the {variant} backbone and action expert configuration, the FLUX.2 autoencoder configuration; "
        f"random: every weight; stand-in: {notes['tokenizer'].split(': ', 1)[1]}"
        + ("" if full_text_encoder else f"; {notes['text_encoder'].split(': ', 1)[1]}"))
    return out
