"""Loading ImageWAM Ovis-U1:

    DIR/model.pt            {"mot", "proprio_encoder", "step", "torch_dtype"} (the same release format as FLUX.2):
                            `mixtures.video.transformer.*` (the fine-tuned Yak DiT, plus the alias
                            `mixtures.video.{double,single}_blocks.*`), `mixtures.action.*` (the action expert)
    DIR/dataset_stats.json, DIR/train_config.yaml
    BASE/                   the Ovis-U1 base release (HF layout): config.json, preprocessor_config.json, tokenizer
                            files and *.safetensors with `llm.*`, `visual_tokenizer.*`, `vte.weight`,
                            `visual_generator.vae.*` (SDXL-style AutoencoderKL), `visual_generator.backbone.*` (Yak)

Strict (missing / unexpected / mis-shaped tensors are named), memory-frugal (model.pt memory-mapped, safetensors
read tensor by tensor, modules built on the meta device and the tensors assigned in their stored dtype)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from edge.errors import CheckpointError
from edge.files import read_json_object

from ..checkpoint import ImageWAMCheckpoint, _count_blocks, _shape, load_state, official_state_dict, open_release, parse_dtype, split_mot, strict_assign  # noqa: F401
from .action_expert import YakExpertConfig
from .conditioning import ImagePreprocess, OvisConditioner
from .mot import ImageWAMOvisU1
from .vision_tower import AIMv2Config, VisualTokenizerConfig
from .yak import YakConfig, YakTransformer

log = logging.getLogger(__name__)

VIDEO, ACTION = "mixtures.video.transformer.", "mixtures.action."
LLM, VT, VTE, VAE, DIT = "llm.model.", "visual_tokenizer.", "vte.weight", "visual_generator.vae.", "visual_generator.backbone."
KNOWN_UNUSED = ("llm.lm_head.",)  # the LM head (tied to the embeddings in Qwen3-1.7B) is never run here


OvisCheckpoint = ImageWAMCheckpoint  # the same record; `model` is an ImageWAMOvisU1


def no_meta(module: torch.nn.Module, where: str) -> torch.nn.Module:
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{where}: tensors left unloaded after assignment: {left[:6]}")
    return module


def _head_axes(head_dim: int, stated=None) -> tuple[int, ...]:
    if stated:
        return tuple(int(a) for a in stated)
    side = head_dim * 7 // 16  # (16, 56, 56) for head dim 128
    return (head_dim - 2 * side, side, side)


def infer_yak_config(sd: dict, where: str, axes_dim=None, theta: float = 10000.0) -> YakConfig:
    hidden, in_ch = _shape(sd, "img_in.weight", where)
    head_dim = _shape(sd, "double_blocks.0.img_attn.norm.query_norm.scale", where)[0]
    return YakConfig(hidden=hidden, heads=hidden // head_dim, depth_double=_count_blocks(sd, "double_blocks."),
                     depth_single=_count_blocks(sd, "single_blocks."),
                     mlp_ratio=_shape(sd, "double_blocks.0.img_mlp.0.weight", where)[0] / hidden,
                     qkv_bias="double_blocks.0.img_attn.qkv.bias" in sd, in_channels=in_ch,
                     context_dim=_shape(sd, "txt_in.input_embedder.weight", where)[1],
                     vec_in_dim=_shape(sd, "vector_in.in_layer.weight", where)[1],
                     refiner_depth=_count_blocks(sd, "txt_in.individual_token_refiner.blocks."),
                     axes_dim=_head_axes(head_dim, axes_dim), theta=float(theta),
                     guidance_embed=any(k.startswith("guidance_in.") for k in sd))


def infer_expert_config(sd: dict, where: str) -> YakExpertConfig:
    hidden, action_dim = _shape(sd, "action_encoder.weight", where)
    head_dim = _shape(sd, "double_blocks.0.img_attn.norm.query_norm.scale", where)[0]
    return YakExpertConfig(action_dim=action_dim, hidden=hidden, heads=hidden // head_dim,
                           depth_double=_count_blocks(sd, "double_blocks."), depth_single=_count_blocks(sd, "single_blocks."),
                           mlp_ratio=_shape(sd, "double_blocks.0.img_mlp.0.weight", where)[0] / hidden,
                           qkv_bias="double_blocks.0.img_attn.qkv.bias" in sd)


def load_checkpoint(directory: str | Path, dtype: torch.dtype | None = None) -> OvisCheckpoint:
    directory, where, payload, train_config = open_release(directory)
    cfg_path = directory / "train_config.yaml"
    edge_cfg = train_config.get("edge", {}) if isinstance(train_config, dict) else {}
    video, action, unexpected = split_mot(payload["mot"], where)
    if unexpected:
        raise CheckpointError(f"{where}: {len(unexpected)} unexpected tensors outside mixtures.video/action: "
                              + ", ".join(unexpected[:6]))
    backbone = infer_yak_config(video, where, edge_cfg.get("axes_dim"), edge_cfg.get("theta", 10000.0))
    expert = infer_expert_config(action, where)
    p_out, proprio_dim = tuple(payload["proprio_encoder"]["weight"].shape)
    if p_out != backbone.context_dim:
        raise CheckpointError(f"{where}: proprio_encoder maps to {p_out} but the Yak context width is {backbone.context_dim}")
    act_cfg = ((train_config.get("model") or {}).get("action_dit_config") or {}) if isinstance(train_config, dict) else {}
    stated = act_cfg.get("action_dim")
    if isinstance(stated, int) and stated != expert.action_dim:
        raise CheckpointError(f"{cfg_path}: model.action_dit_config.action_dim = {stated} but model.pt has "
                              f"{expert.action_dim}; the config and weights come from different runs")
    try:
        with torch.device("meta"):
            model = ImageWAMOvisU1(backbone, expert, proprio_dim)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    state = {**{"backbone." + k: v for k, v in video.items()}, **{"expert." + k: v for k, v in action.items()},
             **{"proprio_encoder." + k: v for k, v in payload["proprio_encoder"].items()}}
    prefix_of = {"backbone.": VIDEO, "expert.": ACTION, "proprio_encoder.": "proprio_encoder."}

    def official(name: str) -> str:
        head = next(p for p in prefix_of if name.startswith(p))
        return prefix_of[head] + name[len(head):]

    target = dtype or parse_dtype(payload.get("torch_dtype", "float32"))
    strict_assign(model, state, where, f"ImageWAM Ovis-U1 layout inferred from its shapes (Yak "
                  f"{backbone.depth_double}+{backbone.depth_single} x {backbone.hidden}, expert {expert.hidden})",
                  official, target)
    log.info("loaded %s: step %s, %s", where, payload.get("step"), target)
    return OvisCheckpoint(directory, model, int(payload.get("step", 0) or 0), target, train_config)


# --- the Ovis-U1 base release ----------------------------------------------------------------------------------
class BaseRelease:
    """Index of the base release's safetensors (tensor name -> file); tensors are read on demand."""

    def __init__(self, base: str | Path):
        self.base = Path(base)
        if not (self.base / "config.json").exists():
            raise CheckpointError(f"{self.base}/config.json not found: point --base at the Ovis-U1 base release "
                                  "(AIDC-AI/Ovis-U1-3B: config.json, *.safetensors, tokenizer files)")
        self.config = read_json_object(self.base / "config.json", "download the Ovis-U1 base release again "
                                       "(AIDC-AI/Ovis-U1-3B) and point --base at it", CheckpointError)
        files = sorted(self.base.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.base} holds no *.safetensors weights")
        from safetensors import safe_open

        self.index: dict[str, Path] = {}
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as handle:
                    for key in handle.keys():
                        self.index[key] = f
            except Exception as exc:  # SafetensorError (truncated header), OSError
                raise CheckpointError(f"{f} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
                                      "download it again from AIDC-AI/Ovis-U1-3B (interrupted download?)") from None

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        out, by_file = {}, {}
        for key, f in self.index.items():
            if key.startswith(prefix):
                by_file.setdefault(f, []).append(key)
        for f, keys in by_file.items():
            with safe_open(str(f), framework="pt") as handle:
                for key in keys:
                    out[key[len(prefix):]] = handle.get_tensor(key)
        return out

    def require_group(self, prefix: str, what: str) -> None:
        """Refuse, naming the group, a base release that lacks a part every control step runs."""
        if not any(k.startswith(prefix) for k in self.index):
            raise CheckpointError(f"{self.base} holds no {prefix}* tensors ({len(self.index)} tensors in "
                                  f"{', '.join(sorted({f.name for f in self.index.values()}))}): {what} comes from them "
                                  "and runs every control step; copy the *.safetensors of the Ovis-U1 base release "
                                  "(AIDC-AI/Ovis-U1-3B) there, or pass --base DIR pointing at it")

    def unknown_keys(self) -> list[str]:
        groups = (LLM, VT, VTE, VAE, DIT) + KNOWN_UNUSED
        return [k for k in self.index if not k.startswith(groups)]

    def section(self, name: str) -> dict:
        cfg = self.config.get(name)
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{self.base}/config.json has no '{name}' section; is this the Ovis-U1 release?")
        return cfg


def tokenizer_config(base: BaseRelease) -> VisualTokenizerConfig:
    vt = base.section("visual_tokenizer_config")
    bb = vt.get("backbone_config") or {}
    full = bb.get("fullatt_block_indexes")
    if isinstance(full, str):
        full = [int(i) for i in full.split("|") if i.strip()]
    aim = AIMv2Config(hidden=int(bb.get("hidden_size", 1024)), intermediate=int(bb.get("intermediate_size", 2816)),
                      layers=int(bb.get("num_hidden_layers", 24)), heads=int(bb.get("num_attention_heads", 8)),
                      patch_size=int(bb.get("patch_size", 14)), image_size=int(bb.get("image_size", 448)),
                      rms_eps=float(bb.get("rms_norm_eps", 1e-5)), qkv_bias=bool(bb.get("qkv_bias", False)),
                      use_bias=bool(bb.get("use_bias", False)), hidden_stride=int(vt.get("hidden_stride", 2)),
                      window_size=int(bb.get("window_size", 112)),
                      fullatt_block_indexes=None if full is None else tuple(int(i) for i in full),
                      preserve_original_pe=bool(bb.get("preserve_original_pe", False)),
                      interpolate_pe_method=str(bb.get("interpolate_pe_method", "one_dim")),
                      disable_rope=bool(bb.get("disable_rope", False)))
    return VisualTokenizerConfig(backbone=aim, vocab_size=int(vt.get("vocab_size", 65536)))


def preprocess_config(base: BaseRelease, patch_size: int, hidden_stride: int) -> ImagePreprocess:
    path = base.base / "preprocessor_config.json"
    pc = read_json_object(path, "download the Ovis-U1 base release again (AIDC-AI/Ovis-U1-3B) or delete the file "
                          "to use the defaults", CheckpointError) if path.exists() else {}
    return ImagePreprocess(patch_size=int(pc.get("patch_size", patch_size)),
                           hidden_stride=int(pc.get("hidden_stride", hidden_stride)),
                           min_pixels=int(pc.get("min_pixels", 448 * 448)), max_pixels=int(pc.get("max_pixels", 1792 * 1792)),
                           mean=tuple(pc.get("image_mean", ImagePreprocess.mean)), std=tuple(pc.get("image_std", ImagePreprocess.std)))


def build_llm(llm_config: dict):
    from transformers import Qwen3Config, Qwen3Model

    cfg = {k: v for k, v in llm_config.items() if k not in ("model_type", "architectures", "transformers_version")}
    return Qwen3Model(Qwen3Config(**cfg))


def load_conditioner(base: BaseRelease, dtype: torch.dtype | None = None) -> OvisConditioner:
    """The VLM conditioning (visual tokenizer, vte, Qwen3) from the base release, strictly."""
    base.require_group(VT, "the VLM's visual tokenizer (it reads the image)")
    base.require_group(LLM, "the VLM's Qwen3 language model (it reads the prompt and the image)")
    vt_cfg = tokenizer_config(base)
    pre = preprocess_config(base, vt_cfg.backbone.patch_size, vt_cfg.backbone.hidden_stride)
    with torch.device("meta"):
        cond = OvisConditioner(vt_cfg, build_llm(base.section("llm_config")), pre)
    state = {**{"visual_tokenizer." + k: v for k, v in base.tensors(VT).items()},
             **{"llm." + k: v for k, v in base.tensors(LLM).items()}}
    if VTE in base.index:
        state["vte.weight"] = base.tensors(VTE)[""]
    rename = lambda k: VTE if k == "vte.weight" else (LLM + k[4:] if k.startswith("llm.") else k)  # noqa: E731
    strict_assign(cond, state, str(base.base), "Ovis-U1 VLM (visual_tokenizer.*, vte.weight, llm.model.*)", rename, dtype)
    # non-persistent buffers were created on the meta device: rebuild them on the CPU
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    cond.llm.rotary_emb = Qwen3RotaryEmbedding(config=cond.llm.config)
    cond.mean, cond.std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    return no_meta(cond, str(base.base))


def load_vae(base: BaseRelease, dtype: torch.dtype | None = None):
    from diffusers import AutoencoderKL

    vae_cfg = {k: v for k, v in base.section("visual_generator_config").get("vae_config", {}).items()
               if not k.startswith("_")}
    if not vae_cfg:
        raise CheckpointError(f"{base.base}/config.json: visual_generator_config.vae_config is missing")
    base.require_group(VAE, "the autoencoder (the image tokens)")
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_cfg)
    vae = strict_assign(vae, base.tensors(VAE), str(base.base), "Ovis-U1 autoencoder (visual_generator.vae.*)",
                        lambda k: VAE + k, dtype)
    return no_meta(vae, str(base.base))


def load_base_dit(base: BaseRelease, dtype: torch.dtype | None = None) -> YakTransformer:
    """The base release's Yak DiT (`visual_generator.backbone.*`), architecture inferred from its shapes."""
    state = base.tensors(DIT)
    cfg = infer_yak_config(state, str(base.base))
    with torch.device("meta"):
        dit = YakTransformer(cfg)
    return strict_assign(dit, state, str(base.base), "Ovis-U1 Yak DiT (visual_generator.backbone.*)", lambda k: DIT + k, dtype)
