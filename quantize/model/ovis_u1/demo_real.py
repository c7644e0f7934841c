"""`demo-checkpoint --variant ovis-u1`: a REAL-SIZE ImageWAM Ovis-U1 release with random bf16 weights, written
tensor by tensor (quantize.streaming), to rehearse the real-size pipeline.

    OUT/model.pt        the Yak DiT (hidden 1536, 6 double + 12 single blocks) and its full-width action expert,
                        official layout (BFL names, `mixtures.video.{double,single}_blocks.*` aliases sharing storage)
    OUT/base/           the Ovis-U1 base release layout: config.json, preprocessor_config.json, tokenizer files,
                        model.safetensors with `llm.model.*` (Qwen3-1.7B), `visual_tokenizer.*` (AIMv2, 24 x 1024),
                        `vte.weight` (65536 x 2048) and `visual_generator.vae.*` (the SDXL-style autoencoder), all in
                        their real configurations; NOT written: the base Yak (`visual_generator.backbone.*`, the policy
                        runs the fine-tuned copy in model.pt). STAND-INS: the tokenizer (a small byte-level BPE with
                        the Qwen chat tokens) and, unless `full_text_encoder`, the Qwen3 depth (4 of 28 layers, the
                        real width; the conditioning reads the last two) with the tokenizer's vocabulary.

`double_blocks` / `single_blocks` cut the Yak and expert depth at the real width (slices for measurements);
`standin_vision_layers` / `standin_visual_vocab` (tests only) cut AIMv2's depth at its real width and the visual
vocabulary (its head and `vte`)."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import yaml

from edge.model_configs import OVIS_U1_LLM, OVIS_U1_VAE
from edge.model_variants import demo_size
from edge.transforms import get_embodiment

from ...demo import demo_stats, write_sample_images
from ...streaming import Progress, RandomInit, peak_rss_bytes, save_safetensors_streamed, save_torch_streamed
from .action_expert import YakExpertConfig
from .checkpoint import LLM, VAE, VT, VTE, official_state_dict
from .mot import ImageWAMOvisU1
from .vision_tower import VisualTokenizer, VisualTokenizerConfig
from .yak import YakConfig

log = logging.getLogger(__name__)

STANDIN_LLM_LAYERS = 4
PREPROCESS = dict(patch_size=14, hidden_stride=2, temporal_patch_size=1, min_pixels=448 * 448, max_pixels=1792 * 1792,
                  image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])


def real_configs(action_dim: int = 7, double_blocks: int | None = None, single_blocks: int | None = None):
    yak = YakConfig()
    changes = {k: v for k, v in (("depth_double", double_blocks), ("depth_single", single_blocks)) if v is not None}
    if any(v < 0 for v in changes.values()) or (changes and sum({**yak.to_dict(), **changes}[k]
                                                                for k in ("depth_double", "depth_single")) < 1):
        raise ValueError(f"--double-blocks/--single-blocks must be >= 0 with at least one block, got {changes}")
    yak = replace(yak, **changes)
    expert = YakExpertConfig(action_dim=action_dim, hidden=yak.hidden, heads=yak.heads, depth_double=yak.depth_double,
                             depth_single=yak.depth_single)
    return yak, expert


def _base_config(llm_cfg, vt_cfg: VisualTokenizerConfig, yak: YakConfig, vae_cfg: dict) -> dict:
    aim = vt_cfg.backbone
    return {
        "model_type": "ovis_u1", "architectures": ["OvisU1"], "hidden_size": llm_cfg.hidden_size,
        "multimodal_max_length": 2048, "llm_config": {**llm_cfg.to_dict(), "model_type": "qwen3"},
        "visual_tokenizer_config": {
            "model_type": "aimv2_visual_tokenizer", "vocab_size": vt_cfg.vocab_size, "tokenize_function": "softmax",
            "hidden_stride": aim.hidden_stride,
            "backbone_config": {"model_type": "aimv2", "hidden_size": aim.hidden, "intermediate_size": aim.intermediate,
                                "num_hidden_layers": aim.layers, "num_attention_heads": aim.heads,
                                "patch_size": aim.patch_size, "image_size": aim.image_size, "rms_norm_eps": aim.rms_eps,
                                "qkv_bias": aim.qkv_bias, "use_bias": aim.use_bias, "hidden_stride": aim.hidden_stride,
                                "window_size": aim.window_size,
                                "fullatt_block_indexes": None if aim.fullatt_block_indexes is None
                                else list(aim.fullatt_block_indexes),
                                "preserve_original_pe": aim.preserve_original_pe,
                                "interpolate_pe_method": aim.interpolate_pe_method, "disable_rope": aim.disable_rope}},
        "visual_generator_config": {"model_type": "yak", "hidden_size": yak.hidden, "num_heads": yak.heads,
                                    "depth": yak.depth_double, "depth_single_blocks": yak.depth_single,
                                    "axes_dim": list(yak.axes_dim), "theta": int(yak.theta),
                                    "in_channels": yak.in_channels, "out_channels": yak.in_channels,
                                    "context_in_dim": yak.context_dim, "vec_in_dim": yak.vec_in_dim,
                                    "qkv_bias": yak.qkv_bias, "mlp_ratio": yak.mlp_ratio, "vae_config": vae_cfg},
    }


def write_base(base: Path, yak: YakConfig, full_llm: bool, seed: int, say: Callable[[str], None],
               standin_layers: int = STANDIN_LLM_LAYERS, vision_layers: int | None = None,
               visual_vocab: int | None = None) -> dict:
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    from ..text_encoder import write_demo_tokenizer

    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_tokenizer(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    tokenizer.save_pretrained(str(base))
    llm_kwargs = {**OVIS_U1_LLM, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if not full_llm:
        llm_kwargs.update(num_hidden_layers=standin_layers, vocab_size=len(tokenizer))
    llm_cfg = Qwen3Config(**llm_kwargs)
    llm_cfg.dtype = torch.bfloat16
    vt_cfg = VisualTokenizerConfig()
    if vision_layers is not None:  # a real-width slice of AIMv2 (tests): fewer of its 24 layers
        vt_cfg = replace(vt_cfg, backbone=replace(vt_cfg.backbone, layers=vision_layers))
    if visual_vocab is not None:  # tests: a smaller visual vocabulary (the AIMv2 head and vte: 0.8 GB at 65536)
        vt_cfg = replace(vt_cfg, vocab_size=visual_vocab)
    with torch.device("meta"):
        llm = Qwen3Model(llm_cfg)
        vt = VisualTokenizer(vt_cfg)
        vae = AutoencoderKL(**OVIS_U1_VAE)
    templates = {LLM + k: v for k, v in llm.state_dict().items()}
    templates.update({VT + k: v for k, v in vt.state_dict().items()})
    templates[VTE] = torch.empty(vt_cfg.vocab_size, llm_cfg.hidden_size, device="meta")
    templates.update({VAE + k: v for k, v in vae.state_dict().items()})
    templates = {k: torch.empty(v.shape, dtype=torch.bfloat16 if v.is_floating_point() else v.dtype, device="meta")
                 for k, v in templates.items()}
    vae_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(vae.config).items() if not k.startswith("_")}
    (base / "config.json").write_text(json.dumps(_base_config(llm_cfg, vt_cfg, yak, vae_cfg), indent=1))
    (base / "preprocessor_config.json").write_text(json.dumps(PREPROCESS, indent=1))
    n = save_safetensors_streamed(base / "model.safetensors", templates, RandomInit(seed + 7),
                                  progress=Progress(say, "base/model.safetensors"))
    llm_what = (f"Qwen3-1.7B real configuration ({llm_cfg.num_hidden_layers} layers, vocabulary {llm_cfg.vocab_size})"
                if full_llm else f"STAND-IN: Qwen3-1.7B at the real width {llm_cfg.hidden_size} with "
                f"{llm_cfg.num_hidden_layers} layers instead of 28 and a {llm_cfg.vocab_size}-token vocabulary")
    aim = vt_cfg.backbone
    real_vt = VisualTokenizerConfig()
    vision = ("AIMv2 visual tokenizer (24 x 1024), vte and the SDXL-style autoencoder in their real configurations"
              if (aim.layers, vt_cfg.vocab_size) == (real_vt.backbone.layers, real_vt.vocab_size) else
              f"STAND-IN: AIMv2 at the real width {aim.hidden} with {aim.layers} of 24 layers, a "
              f"{vt_cfg.vocab_size}-entry visual vocabulary (real: {real_vt.vocab_size}); the SDXL-style autoencoder "
              "in its real configuration")
    return {"base_bytes": n, "base_parameters": sum(t.numel() for t in templates.values()), "llm": llm_what + ", random weights",
            "tokenizer": f"STAND-IN: a {len(tokenizer)}-token byte-level BPE with the Qwen chat tokens",
            "vision": vision + ", random weights; the base Yak (visual_generator.backbone.*) is not written"}


def write_real_ovis_demo(out: str | Path, variant: str = "ovis-u1", embodiment: str = "libero", seed: int = 0,
                         state_dim: int = 8, action_dim: int = 7, double_blocks: int | None = None,
                         single_blocks: int | None = None, full_text_encoder: bool = False,
                         progress: Callable[[str], None] | None = None,
                         standin_text_layers: int = STANDIN_LLM_LAYERS,
                         standin_vision_layers: int | None = None, standin_visual_vocab: int | None = None) -> Path:
    from ...hf import quiet

    demo_size(variant, f"{__name__}:write_real_ovis_demo")  # ovis-u1
    quiet()
    say = progress or (lambda s: log.info(s))
    t0 = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = get_embodiment(embodiment)
    yak, expert = real_configs(action_dim, double_blocks, single_blocks)
    with torch.device("meta"):
        model = ImageWAMOvisU1(yak, expert, state_dim).to(torch.bfloat16)
    n_total = sum(p.numel() for p in model.parameters())
    full_depth = (yak.depth_double, yak.depth_single) == (YakConfig().depth_double, YakConfig().depth_single)
    shape = f"{yak.depth_double}+{yak.depth_single} blocks" + ("" if full_depth else " (a real-width SLICE of 6+12)")
    say(f"[1/3] model.pt: Ovis-U1 Yak {shape}, hidden {yak.hidden}, full-width expert: {n_total / 1e9:.3f} B "
        f"parameters, {2 * n_total / 1e9:.2f} GB in bf16, random weights, written tensor by tensor")
    payload = {**official_state_dict(model), "step": 0, "torch_dtype": "torch.bfloat16"}
    written = save_torch_streamed(out / "model.pt", payload, RandomInit(seed), progress=Progress(say, "model.pt"))
    del model, payload
    say(f"[2/3] base/: the Ovis-U1 base release ({'real Qwen3 depth' if full_text_encoder else 'Qwen3 STAND-IN depth'})")
    notes = write_base(out / "base", yak, full_text_encoder, seed, say, standin_text_layers, standin_vision_layers,
                       standin_visual_vocab)
    (out / "dataset_stats.json").write_text(json.dumps(demo_stats(action_dim, state_dim, seed), indent=1))
    config = {
        "model": {"stack": "ovis_u1", "proprio_dim": state_dim,
                  "action_dit_config": {"action_dim": action_dim, "residual_dim": expert.hidden, "num_heads": expert.heads,
                                        "num_layers_double": expert.depth_double,
                                        "num_layers_single": expert.depth_single, "mlp_ratio": expert.mlp_ratio}},
        "edge": {"variant": "ovis-u1", "embodiment": emb.name, "base": "base", "axes_dim": list(yak.axes_dim),
                 "theta": yak.theta, "horizon": emb.horizon},
        "demo": {"variant": variant, "weights": "random (not a trained policy: its actions mean nothing)",
                 "depth": shape, "parameters": n_total, "model_pt_tensor_bytes": written,
                 **{k: notes[k] for k in ("llm", "tokenizer", "vision")}},
    }
    (out / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    say("[3/3] dataset_stats.json, train_config.yaml, samples/")
    write_sample_images(out / "samples", emb.canvas, seed)
    say(f"done in {time.monotonic() - t0:.0f} s: model.pt {(out / 'model.pt').stat().st_size / 1e9:.2f} GB, "
        f"base/model.safetensors {notes['base_bytes'] / 1e9:.2f} GB; peak RSS {peak_rss_bytes() / 2**30:.2f} GiB")
    say(f"      real: the Yak, expert, AIMv2, vte and autoencoder configurations; random: every weight; "
        f"stand-in: {notes['tokenizer'].split(': ', 1)[1]}"
        + ("" if full_text_encoder else f"; {notes['llm'].split(': ', 1)[1]}"))
    return out
