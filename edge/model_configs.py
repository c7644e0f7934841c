"""Configuration records of the model variants: plain dataclasses and dicts, no torch. The torch model classes
(quantize/model/...) are built from these very records, and the torch-free roofline (`bench --model-only`,
edge/roofline.py) counts parameters and FLOPs from them, so the two cannot drift apart.

Defaults are the published sizes: FLUX.2 klein 4B/9B backbones and the ImageWAM action expert (DESIGN §2), the
Ovis-U1-3B parts (Yak DiT, its full-width action expert, the AIMv2 visual tokenizer, Qwen3-1.7B, the SDXL-style
autoencoder) and the Qwen3 text encoders. A checkpoint's own shapes (quantize/model/checkpoint.py) override them."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


class _Backbone:
    """What the two DiT backbone records (FLUX.2, Yak) share: validation and the derived sizes."""

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if sum(self.axes_dim) != self.head_dim:
            raise ValueError(f"RoPE axes {self.axes_dim} must sum to the head dim {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden * self.mlp_ratio)

    @property
    def layers(self) -> int:
        return self.depth_double + self.depth_single

    def to_dict(self) -> dict:
        return asdict(self)


# --- FLUX.2 ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flux2Config(_Backbone):
    hidden: int = 3072
    heads: int = 24
    depth_double: int = 5
    depth_single: int = 20
    mlp_ratio: float = 3.0
    in_channels: int = 128
    context_dim: int = 7680
    axes_dim: tuple[int, ...] = (32, 32, 32, 32)
    theta: float = 2000.0
    guidance_embed: bool = False


FLUX2_PRESETS = {
    "flux2-4b": Flux2Config(),
    "flux2-9b": Flux2Config(hidden=4096, heads=32, depth_double=8, depth_single=24, context_dim=12288),
    "flux2-tiny": Flux2Config(hidden=64, heads=2, depth_double=2, depth_single=2, context_dim=96, axes_dim=(8, 8, 8, 8)),
}


@dataclass(frozen=True)
class ActionExpertConfig:
    action_dim: int = 7
    hidden: int = 1024
    heads: int = 24
    head_dim: int = 128
    depth_double: int = 5
    depth_single: int = 20
    mlp_ratio: float = 4.0

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.hidden * self.mlp_ratio))

    @property
    def layers(self) -> int:
        return self.depth_double + self.depth_single

    def to_dict(self) -> dict:
        return asdict(self)


def flux2_expert(backbone: Flux2Config, action_dim: int = 7) -> ActionExpertConfig:
    """The action expert of a FLUX.2 backbone: attention shaped like the backbone's (Mixture-of-Transformers), the
    same layer counts, hidden 1024 (DESIGN §2)."""
    return ActionExpertConfig(action_dim=action_dim, heads=backbone.heads, head_dim=backbone.head_dim,
                              depth_double=backbone.depth_double, depth_single=backbone.depth_single)


# diffusers `AutoencoderKLFlux2` as the FLUX.2 klein releases configure it (its defaults); only the encoder runs
FLUX2_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=32, norm_num_groups=32,
                 use_quant_conv=True, mid_block_add_attention=True)

# Qwen3 text encoders of FLUX.2 klein (public configs, transformers `Qwen3Config` fields); layers 9/18/27 are read
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960,
                tie_word_embeddings=True, attention_bias=False)
QWEN3_8B = dict(QWEN3_4B, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, tie_word_embeddings=False)
TEXT_ENCODERS = {"flux2-4b": QWEN3_4B, "flux2-9b": QWEN3_8B}
TEXT_ENCODER_LAYERS = 27  # the deepest hidden state the prompt embedding reads


# --- Ovis-U1 ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YakConfig(_Backbone):
    hidden: int = 1536
    heads: int = 12
    depth_double: int = 6
    depth_single: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    in_channels: int = 16  # 4 latent channels x 2 x 2 packing
    context_dim: int = 4096  # last two Qwen3-1.7B hidden layers, concatenated
    vec_in_dim: int = 1536  # width of the refiner's pooled vector
    refiner_depth: int = 2
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: float = 10000.0
    guidance_embed: bool = False


@dataclass(frozen=True)
class YakExpertConfig:
    action_dim: int = 7
    hidden: int = 1536
    heads: int = 12
    depth_double: int = 6
    depth_single: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layers(self) -> int:
        return self.depth_double + self.depth_single

    def block_config(self) -> YakConfig:
        head_dim = self.head_dim
        axes = (head_dim - 2 * (head_dim * 7 // 16), head_dim * 7 // 16, head_dim * 7 // 16)  # only the shape matters
        return YakConfig(hidden=self.hidden, heads=self.heads, depth_double=self.depth_double,
                         depth_single=self.depth_single, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, axes_dim=axes)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AIMv2Config:
    hidden: int = 1024
    intermediate: int = 2816
    layers: int = 24
    heads: int = 8
    patch_size: int = 14
    image_size: int = 448  # size the learned position table was trained at ((448/14)^2 = 1024 entries)
    rms_eps: float = 1e-5
    qkv_bias: bool = False
    use_bias: bool = False
    hidden_stride: int = 2
    window_size: int = 112  # pixels; used only by blocks outside fullatt_block_indexes
    fullatt_block_indexes: tuple[int, ...] | None = None  # None: every block attends globally
    preserve_original_pe: bool = False
    interpolate_pe_method: str = "one_dim"
    disable_rope: bool = False
    num_channels: int = 3

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"AIMv2 hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.interpolate_pe_method not in ("one_dim", "two_dim"):
            raise ValueError(f"interpolate_pe_method must be one_dim or two_dim, got {self.interpolate_pe_method!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def windowed(self, index: int) -> bool:
        return self.fullatt_block_indexes is not None and index not in self.fullatt_block_indexes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fullatt_block_indexes"] = None if self.fullatt_block_indexes is None else list(self.fullatt_block_indexes)
        return d


@dataclass(frozen=True)
class VisualTokenizerConfig:
    backbone: AIMv2Config = field(default_factory=AIMv2Config)
    vocab_size: int = 65536  # the last 5 entries are the image indicator embeddings
    indicators: int = 5


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocess:
    patch_size: int = 14
    hidden_stride: int = 2
    min_pixels: int = 448 * 448
    max_pixels: int = 1792 * 1792
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """Qwen2-VL `smart_resize` as Ovis-U1 uses it (factor = patch * stride)."""
        factor = self.patch_size * self.hidden_stride
        if height < factor or width < factor:
            if height < width:
                height, width = factor, round(factor / height * width)
            else:
                height, width = round(factor / width * height), factor
        h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
        return int(h_bar), int(w_bar)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        rh, rw = self.resized(height, width)
        return rh // self.patch_size, rw // self.patch_size

    def visual_tokens(self, height: int, width: int) -> int:
        rows, cols = self.grid(height, width)
        return rows * cols // self.hidden_stride ** 2


# Ovis-U1-3B's language model: Qwen3-1.7B (the base release's `llm_config`, transformers `Qwen3Config` fields)
OVIS_U1_LLM = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                   num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                   max_position_embeddings=40960, tie_word_embeddings=True, attention_bias=False)
OVIS_U1_VAE_SCALING = 0.13025
# the SDXL-style 4-channel autoencoder (diffusers `AutoencoderKL`) of Ovis-U1's `visual_generator.vae`
OVIS_U1_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                   layers_per_block=2, norm_num_groups=32, scaling_factor=OVIS_U1_VAE_SCALING,
                   down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# the published Ovis-U1-3B, every record the roofline and the registry's "ovis-u1" size read
OVIS_U1_3B = dict(backbone=YakConfig(), expert=YakExpertConfig(), tokenizer=VisualTokenizerConfig(),
                  preprocess=ImagePreprocess(), llm=OVIS_U1_LLM, vae=OVIS_U1_VAE)
