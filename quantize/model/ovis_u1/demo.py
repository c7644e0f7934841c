"""`demo-checkpoint --variant ovis-u1-tiny`: a tiny random-weight ImageWAM Ovis-U1 release directory (model.pt,
dataset_stats.json, train_config.yaml) with a tiny Ovis-U1 base release beside it (`base/`: config.json,
preprocessor_config.json, tokenizer, model.safetensors with llm.*, visual_tokenizer.*, vte.weight,
visual_generator.vae.*, visual_generator.backbone.*), so every job runs without the multi-GB download."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
import yaml

from edge.model_variants import demo_size
from edge.transforms import get_embodiment

from ...demo import _randomise, demo_stats, write_sample_images
from .action_expert import YakExpertConfig
from .checkpoint import DIT, LLM, VAE, VT, VTE, official_state_dict
from .mot import ImageWAMOvisU1
from .vae import make_vae
from .vision_tower import AIMv2Config, VisualTokenizer, VisualTokenizerConfig
from .yak import YakConfig, YakTransformer

log = logging.getLogger(__name__)

LLM_HIDDEN = 32
TINY_YAK = YakConfig(hidden=64, heads=2, depth_double=2, depth_single=2, context_dim=2 * LLM_HIDDEN, vec_in_dim=64,
                     axes_dim=(4, 14, 14))
TINY_AIMV2 = AIMv2Config(hidden=32, intermediate=64, layers=2, heads=2, image_size=56, window_size=56,
                         fullatt_block_indexes=(1,), preserve_original_pe=True)
TINY_VOCAB = 64
TINY_PREPROCESS = dict(patch_size=14, hidden_stride=2, temporal_patch_size=1, min_pixels=28 * 28 * 4,
                       max_pixels=112 * 224, image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711])


def _tiny_llm(vocab_size: int, pad_id: int, eos_id: int, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=LLM_HIDDEN, intermediate_size=2 * LLM_HIDDEN, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=LLM_HIDDEN // 4, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=pad_id, eos_token_id=eos_id)
    return Qwen3ForCausalLM(cfg).eval()


def write_demo_base(base: Path, seed: int = 0) -> Path:
    """A tiny Ovis-U1 base release in the HF layout."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from ..text_encoder import make_demo_text_encoder

    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        make_demo_text_encoder(Path(tmp), seed=seed)  # a byte-level BPE with the Qwen chat specials
        tokenizer = AutoTokenizer.from_pretrained(str(Path(tmp) / "tokenizer"))
    tokenizer.save_pretrained(str(base))
    llm = _tiny_llm(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, seed)
    vt_cfg = VisualTokenizerConfig(backbone=TINY_AIMV2, vocab_size=TINY_VOCAB)
    torch.manual_seed(seed + 1)
    tokenizer_net, vte = VisualTokenizer(vt_cfg), torch.nn.Embedding(TINY_VOCAB, LLM_HIDDEN)
    _randomise(tokenizer_net, seed + 2)
    vae = make_vae()
    dit = YakTransformer(TINY_YAK)
    _randomise(dit, seed + 3)
    tensors = {LLM + k: v for k, v in llm.model.state_dict().items()}
    tensors.update({VT + k: v for k, v in tokenizer_net.state_dict().items()})
    tensors[VTE] = vte.weight.detach()
    tensors.update({VAE + k: v for k, v in vae.state_dict().items()})
    tensors.update({DIT + k: v for k, v in dit.state_dict().items()})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(base / "model.safetensors"))
    aim = TINY_AIMV2
    config = {
        "model_type": "ovis_u1", "architectures": ["OvisU1"], "hidden_size": LLM_HIDDEN, "multimodal_max_length": 2048,
        "llm_config": {**llm.config.to_dict(), "model_type": "qwen3"},
        "visual_tokenizer_config": {
            "model_type": "aimv2_visual_tokenizer", "vocab_size": TINY_VOCAB, "tokenize_function": "softmax",
            "hidden_stride": aim.hidden_stride,
            "backbone_config": {"model_type": "aimv2", "hidden_size": aim.hidden, "intermediate_size": aim.intermediate,
                                "num_hidden_layers": aim.layers, "num_attention_heads": aim.heads,
                                "patch_size": aim.patch_size, "image_size": aim.image_size, "rms_norm_eps": aim.rms_eps,
                                "qkv_bias": aim.qkv_bias, "use_bias": aim.use_bias, "hidden_stride": aim.hidden_stride,
                                "window_size": aim.window_size, "fullatt_block_indexes": list(aim.fullatt_block_indexes),
                                "preserve_original_pe": aim.preserve_original_pe,
                                "interpolate_pe_method": aim.interpolate_pe_method, "disable_rope": aim.disable_rope}},
        "visual_generator_config": {"model_type": "yak", "hidden_size": TINY_YAK.hidden, "num_heads": TINY_YAK.heads,
                                    "depth": TINY_YAK.depth_double, "depth_single_blocks": TINY_YAK.depth_single,
                                    "axes_dim": list(TINY_YAK.axes_dim), "theta": int(TINY_YAK.theta),
                                    "in_channels": TINY_YAK.in_channels, "out_channels": TINY_YAK.in_channels,
                                    "context_in_dim": TINY_YAK.context_dim, "vec_in_dim": TINY_YAK.vec_in_dim,
                                    "qkv_bias": True, "mlp_ratio": TINY_YAK.mlp_ratio,
                                    "vae_config": {k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in dict(vae.config).items() if not k.startswith("_")}},
    }
    (base / "config.json").write_text(json.dumps(config, indent=1))
    (base / "preprocessor_config.json").write_text(json.dumps(TINY_PREPROCESS, indent=1))
    return base


def write_demo_checkpoint(out: str | Path, variant: str = "ovis-u1-tiny", embodiment: str = "libero", seed: int = 0,
                          state_dim: int = 8, action_dim: int = 7) -> Path:
    demo_size(variant, f"{__name__}:write_demo_checkpoint")  # ovis-u1-tiny
    from ...hf import quiet

    quiet()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = get_embodiment(embodiment)
    expert = YakExpertConfig(action_dim=action_dim, hidden=TINY_YAK.hidden, heads=TINY_YAK.heads,
                             depth_double=TINY_YAK.depth_double, depth_single=TINY_YAK.depth_single)
    torch.manual_seed(seed)
    model = ImageWAMOvisU1(TINY_YAK, expert, state_dim)
    _randomise(model, seed)
    torch.save({**official_state_dict(model), "step": 0, "torch_dtype": "torch.float32"}, out / "model.pt")
    (out / "dataset_stats.json").write_text(json.dumps(demo_stats(action_dim, state_dim, seed), indent=1))
    config = {
        "model": {"stack": "ovis_u1", "proprio_dim": state_dim,
                  "action_dit_config": {"action_dim": action_dim, "residual_dim": expert.hidden, "num_heads": expert.heads,
                                        "num_layers_double": expert.depth_double,
                                        "num_layers_single": expert.depth_single, "mlp_ratio": expert.mlp_ratio}},
        "edge": {"variant": "ovis-u1", "embodiment": emb.name, "base": "base", "axes_dim": list(TINY_YAK.axes_dim),
                 "theta": TINY_YAK.theta, "horizon": emb.horizon},
    }
    (out / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_demo_base(out / "base", seed)
    write_sample_images(out / "samples", emb.canvas, seed)
    log.info("wrote demo checkpoint %s (%s, %s)", out, variant, embodiment)
    return out
