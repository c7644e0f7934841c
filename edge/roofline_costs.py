"""The per-component costs of one control step, from the model configuration records (edge/model_configs.py):
FLOPs, bytes read and parameters of each engine, and one cost function per model variant (`flux2_costs`,
`ovis_u1_costs`) that the variant's record (edge/model_variants.py) names. Pure python: no torch, no weights.
edge/roofline.py turns these into latency bounds per target.

Counting rules:
- a matmul of an [n, k] activation by a [k, m] weight: 2 n k m FLOPs; weights read once per pass;
- attention: 4 * queries * keys * (heads * head_dim) FLOPs (QK^T and AV), kept in FP16 at every precision
  (softmax stays in high precision, DESIGN §3); linear layers run at the precision's peak (INT8/FP8/FP16);
- the K/V cache is FP16 (2 bytes) at every precision: written by the prefill, re-read by every denoise step;
- convolution activations (the autoencoder) are read and written once per layer (no fusion: an upper bound on
  traffic, the FLOPs dominate anyway);
- embedding tables are resident but only their looked-up rows are read;
- the text encoder runs once per instruction (prompt cache) and is not on our control path: listed, never resident.
Each component's parameter count is that of the parameters its engine reads (tests/edge/test_roofline.py checks every
count against the torch classes, built at real size on fake (meta) tensors).
The video-WAM baseline (FastWAM-like) runs the same backbone over the current frame plus F future latent frames for
K denoising passes, then the same action loop over that longer cache."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .errors import ConfigError
from .model_configs import (FLUX2_VAE, TEXT_ENCODER_LAYERS, ImagePreprocess, VisualTokenizerConfig, YakConfig,
                            YakExpertConfig, flux2_expert)

HORIZON, STEPS, ACTION_DIM, STATE_DIM = 16, 10, 7, 8
CANVAS_HW = (224, 448)  # LIBERO canvas
DEFAULT_TEXT_TOKENS = 44  # the prompt template + a short instruction in the Qwen3 chat template (est.)
PRECISIONS = {"fp16": 2.0, "int8": 1.0, "fp8": 1.0}  # weight bytes per parameter


@dataclass(frozen=True)
class Cost:
    """One component of one control step (all passes included)."""

    name: str
    linear_flops: float  # matmul/conv FLOPs at the precision's peak
    attn_flops: float  # attention FLOPs at the FP16 peak
    weight_bytes: float  # weights read (per pass x passes)
    other_bytes: float  # K/V, activations, inputs and outputs
    params: float  # distinct parameters the engine holds (resident while on the control path)
    passes: int = 1
    on_path: bool = True  # False: not on our control path (cached text encoder)
    cache_bytes: float = 0.0  # K/V cache it writes (resident during the step)

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attn_flops

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.other_bytes


def _times(c: Cost, n: int) -> Cost:
    return replace(c, linear_flops=c.linear_flops * n, attn_flops=c.attn_flops * n, weight_bytes=c.weight_bytes * n,
                   other_bytes=c.other_bytes * n, passes=c.passes * n)


def linear(n_in: int, n_out: int, bias: bool = False) -> int:
    return n_in * n_out + (n_out if bias else 0)


# --- components -----------------------------------------------------------------------------------------------
def vae_encoder(h: int, w: int, wbytes: float, abytes: float, cfg: dict = FLUX2_VAE, name: str = "vision_encoder") -> Cost:
    """diffusers `Encoder` (DownEncoderBlock2D x N + mid block with attention) + quant_conv, on an h x w image."""
    blocks, layers = tuple(cfg["block_out_channels"]), int(cfg.get("layers_per_block", 2))
    latent = int(cfg.get("latent_channels", 4))
    flops, params, act = 0.0, 0, 0.0

    def conv(cin, cout, hh, ww, k=3):
        nonlocal flops, params, act
        flops += 2.0 * cin * cout * k * k * hh * ww
        params += cin * cout * k * k + cout
        act += (cin + cout) * hh * ww * abytes

    def resnet(cin, cout, hh, ww):
        nonlocal params
        params += 2 * cin + 2 * cout  # GroupNorm weights and biases
        conv(cin, cout, hh, ww)
        conv(cout, cout, hh, ww)
        if cin != cout:
            conv(cin, cout, hh, ww, k=1)

    conv(3, blocks[0], h, w)
    cin, hh, ww = blocks[0], h, w
    for i, c in enumerate(blocks):
        for _ in range(layers):
            resnet(cin, c, hh, ww)
            cin = c
        if i < len(blocks) - 1:
            hh, ww = hh // 2, ww // 2
            conv(c, c, hh, ww)  # stride-2 downsample, output resolution
    n = hh * ww
    resnet(cin, cin, hh, ww)
    attn = 0.0
    if cfg.get("mid_block_add_attention", True):
        params += 2 * cin + 4 * linear(cin, cin, bias=True)  # group norm, q/k/v/out projections
        flops += 2.0 * 4 * cin * cin * n
        attn = 4.0 * n * n * cin
    resnet(cin, cin, hh, ww)
    params += 2 * cin  # conv_norm_out
    conv(cin, 2 * latent, hh, ww)
    if cfg.get("use_quant_conv", True):
        conv(2 * latent, 2 * latent, hh, ww, k=1)
    return Cost(name, flops, attn, params * wbytes, act + 3 * h * w * abytes, params)


def qwen3(cfg: dict, tokens: int, wbytes: float, name: str, on_path: bool, layers: int | None = None) -> Cost:
    """transformers `Qwen3Model` (GQA attention with q/k RMS norms, SwiGLU MLP) over `tokens`; its embedding table
    is resident, only the looked-up rows are read."""
    h, hd, m = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q, kv, bias = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg.get("attention_bias", False)
    n_layers = layers or cfg["num_hidden_layers"]
    matmuls = linear(h, q, bias) + 2 * linear(h, kv, bias) + linear(q, h, bias) + 3 * h * m
    per_layer = matmuls + 2 * hd + 2 * h  # + q/k norms, input and post-attention norms
    body = per_layer * n_layers + h  # + final norm
    embed = cfg["vocab_size"] * h
    attn = 4.0 * tokens * tokens * q * n_layers
    acts = 2.0 * tokens * h * 2 * n_layers
    return Cost(name, 2.0 * matmuls * n_layers * tokens, attn, body * wbytes, acts + tokens * h * wbytes, body + embed,
                on_path=on_path)


def visual_tokenizer(cfg: VisualTokenizerConfig, patches: int, llm_hidden: int, wbytes: float,
                     name: str = "vlm_vision_tower") -> Cost:
    """Ovis-U1's AIMv2 tower + probabilistic head + `vte` (probabilities @ visual embedding table) over `patches`."""
    a, v = cfg.backbone, cfg.vocab_size - cfg.indicators
    h, hs2 = a.hidden, a.hidden_stride ** 2
    patch = linear(a.num_channels * a.patch_size ** 2, h, bias=True)
    block = (linear(h, 3 * h, a.qkv_bias) + linear(h, h, a.use_bias) + 2 * linear(h, a.intermediate, a.use_bias)
             + linear(a.intermediate, h, a.use_bias))
    pos = (a.image_size // a.patch_size) ** 2 * h if a.preserve_original_pe else 0
    head = linear(h * hs2, v)
    vte = cfg.vocab_size * llm_hidden
    params = patch + h + pos + a.layers * (block + 2 * h) + head + 2 * v + vte  # post_trunk_norm is never run
    visual = patches // hs2
    lin = patches * (patch + a.layers * block) + visual * (head + v * llm_hidden)
    attn = 4.0 * patches * patches * h * a.layers
    return Cost(name, 2.0 * lin, attn, params * wbytes, 2.0 * patches * h * 2 * a.layers, params)


def flux2_prefill(b, text: int, image: int, wbytes: float, kv_bytes: float = 2.0, proprio_dim: int = STATE_DIM,
                  name: str = "prefill") -> Cost:
    """FLUX.2 backbone pass over [text(+proprio) ; image] (+ the proprio encoder); K/V of every layer written out.
    The output layer (`final_layer`) and the guidance embedder are never run."""
    h, a, m, hd = b.hidden, b.heads * b.head_dim, b.mlp_hidden, b.head_dim
    s = text + image
    stream = linear(h, 3 * a) + linear(a, h) + linear(h, 2 * m) + linear(m, h)  # one stream's matmuls, SwiGLU
    single = linear(h, 3 * a + 2 * m) + linear(a + m, h)
    mods = 2 * linear(h, 6 * h) + linear(h, 3 * h)
    vec = linear(256, h) + linear(h, h) + mods  # time embedder + shared modulation: one token
    proprio = linear(proprio_dim, b.context_dim, bias=True)
    params = (b.depth_double * (2 * stream + 4 * hd) + b.depth_single * (single + 2 * hd) + vec
              + linear(b.in_channels, h) + linear(b.context_dim, h) + proprio)
    lin = (b.depth_double * stream * s + b.depth_single * single * s + b.in_channels * h * image
           + b.context_dim * h * text + vec + proprio)
    attn = 4.0 * s * s * a * b.layers
    kv = 2.0 * b.layers * s * a * kv_bytes
    return Cost(name, 2.0 * lin, attn, params * wbytes, kv + 2.0 * s * h * 2, params, cache_bytes=kv)


def _yak_parts(h: int, m: int, qkv_bias: bool) -> dict:
    attn = linear(h, 3 * h, qkv_bias) + linear(h, h, True)
    mlp = linear(h, m, True) + linear(m, h, True)
    return {"attn": attn, "mlp": mlp, "single": linear(h, 3 * h + m, True) + linear(h + m, h, True),
            "mod": lambda sets: linear(h, 3 * sets * h, True)}


def yak_prefill(b: YakConfig, text: int, image: int, wbytes: float, kv_bytes: float = 2.0, proprio_dim: int = STATE_DIM,
                name: str = "prefill") -> Cost:
    """Ovis-U1 Yak pass over [refined VLM context(+proprio) ; reference image]: token refiner, double blocks with the
    extra image self-attention branch, single blocks; joint K/V of every layer and image self-attention K/V of every
    double block written out. `final_layer` and the guidance embedder are never run."""
    h, hd, y = b.hidden, b.head_dim, _yak_parts(b.hidden, b.mlp_hidden, b.qkv_bias)
    s = text + image
    img = 2 * y["attn"] + y["mlp"]  # joint + self-attention branches, MLP: applied to image tokens
    txt = y["attn"] + y["mlp"]  # applied to text tokens
    double = img + txt + y["mod"](3) + y["mod"](2) + 3 * 2 * hd
    single = y["single"] + 2 * hd + y["mod"](1)
    r_mlp = int(h * 4.0)
    r_block = linear(h, 3 * h, True) + linear(h, h, True) + linear(h, r_mlp, True) + linear(r_mlp, h, True)
    refiner_vec = linear(b.context_dim, h, True) + linear(h, h, True) + b.refiner_depth * linear(h, 2 * h, True)
    refiner = linear(b.context_dim, h, True) + refiner_vec + b.refiner_depth * (r_block + 4 * h) + h  # + CLS token
    vec = linear(256, h, True) + linear(h, h, True) + linear(b.vec_in_dim, h, True) + linear(h, h, True)
    mods = b.depth_double * (y["mod"](3) + y["mod"](2)) + b.depth_single * y["mod"](1)
    proprio = linear(proprio_dim, b.context_dim, bias=True)
    params = b.depth_double * double + b.depth_single * single + refiner + vec + linear(b.in_channels, h, True) + proprio
    lin = (b.depth_double * (img * image + txt * text) + b.depth_single * y["single"] * s + b.in_channels * h * image
           + b.context_dim * h * text + r_block * b.refiner_depth * (text + 1) + refiner_vec + vec + mods + proprio)
    attn = 4.0 * s * s * h * b.layers + 4.0 * image * image * h * b.depth_double
    attn += 4.0 * (text + 1) ** 2 * h * b.refiner_depth
    kv = 2.0 * (b.layers * s + b.depth_double * image) * h * kv_bytes
    return Cost(name, 2.0 * lin, attn, params * wbytes, kv + 2.0 * s * h * 2, params, cache_bytes=kv)


def flux2_expert_step(e, prefix: int, wbytes: float, kv_bytes: float = 2.0, horizon: int = HORIZON,
                      name: str = "denoise_step") -> Cost:
    """One FLUX.2 action-expert velocity: `horizon` action tokens attending to [prefix K/V ; action K/V]."""
    h, a, m, hd = e.hidden, e.attn_dim, e.mlp_hidden, e.head_dim
    double = linear(h, 3 * a) + linear(a, h) + linear(h, 2 * m) + linear(m, h)
    single = linear(h, 3 * a + 2 * m) + linear(a + m, h)
    vec = linear(256, h) + linear(h, h) + linear(h, 6 * h) + linear(h, 3 * h) + linear(h, 2 * h)  # time, mods, head adaLN
    io = linear(e.action_dim, h, True) + linear(h, e.action_dim)
    params = e.depth_double * (double + 2 * hd) + e.depth_single * (single + 2 * hd) + vec + io
    lin = (e.depth_double * double + e.depth_single * single) * horizon + vec + io * horizon
    attn = 4.0 * horizon * (prefix + horizon) * a * e.layers
    kv = 2.0 * e.layers * prefix * a * kv_bytes
    return Cost(name, 2.0 * lin, attn, params * wbytes, kv, params)


def yak_expert_step(e: YakExpertConfig, prefix: int, image: int, wbytes: float, kv_bytes: float = 2.0,
                    horizon: int = HORIZON, name: str = "denoise_step") -> Cost:
    """One Ovis-U1 action-expert velocity: in double blocks the action tokens attend to [joint prefix K/V ; action
    K/V] and to [image self-attention K/V ; action K/V]; in single blocks to [prefix K/V ; action K/V]. The double
    blocks' text-stream parameters (present in the class and the checkpoint) are never run, so not in the engine."""
    h, hd = e.hidden, e.head_dim
    m = int(h * e.mlp_ratio)
    y = _yak_parts(h, m, e.qkv_bias)
    double = 2 * y["attn"] + y["mlp"]
    vec = linear(256, h, True) + linear(h, h, True) + e.depth_double * y["mod"](3) + e.depth_single * y["mod"](1)
    vec += linear(h, 2 * h, True)  # head adaLN
    io = linear(e.action_dim, h, True) + linear(h, e.action_dim, True)
    params = e.depth_double * (double + 2 * 2 * hd) + e.depth_single * (y["single"] + 2 * hd) + vec + io
    lin = (e.depth_double * double + e.depth_single * y["single"]) * horizon + vec + io * horizon
    attn = 4.0 * horizon * (prefix + horizon) * h * e.layers + 4.0 * horizon * (image + horizon) * h * e.depth_double
    kv = 2.0 * (e.layers * prefix + e.depth_double * image) * h * kv_bytes
    return Cost(name, 2.0 * lin, attn, params * wbytes, kv, params)


def ovis_tokens(pre: ImagePreprocess, text_tokens: int, canvas=CANVAS_HW) -> tuple[int, int]:
    """(vision-tower patches, VLM context tokens) for a canvas: the image is resized as Ovis-U1's preprocessing does."""
    rows, cols = pre.grid(*canvas)
    return rows * cols, text_tokens + pre.visual_tokens(*canvas)


def _sizes(precision: str, canvas) -> tuple[float, float, int]:
    """(weight bytes per parameter, activation bytes, image tokens of the canvas at 16 px per token)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose one of {list(PRECISIONS)}")
    h, w = canvas
    return PRECISIONS[precision], 2.0 if precision == "fp16" else 1.0, (h // 16) * (w // 16)


def flux2_costs(config: Mapping, precision: str, text_tokens: int = DEFAULT_TEXT_TOKENS, canvas=CANVAS_HW,
                steps: int = STEPS, video: tuple[int, int] | None = None) -> list[Cost]:
    """A FLUX.2 klein control step from its size's records (`backbone`, `text_encoder`, `vae`): the cached text
    encoder (off the path), the autoencoder, one prefill, `steps` expert velocities. `video=(frames, passes)`: the
    video-WAM baseline instead (`passes` backbone passes over the current frame + `frames` future latent frames)."""
    wb, ab, image = _sizes(precision, canvas)
    b = config["backbone"]
    text = qwen3(config["text_encoder"], text_tokens, wb, "text_encoder (cached)", on_path=False,
                 layers=TEXT_ENCODER_LAYERS)
    vision = vae_encoder(*canvas, wb, ab, config["vae"])
    ctx, frames, passes = text_tokens + 1, *(video or (0, 1))
    tokens = image * (1 + frames)
    prefill = flux2_prefill(b, ctx, tokens, wb, name="video_denoise" if video else "prefill")
    step = flux2_expert_step(flux2_expert(b, ACTION_DIM), ctx + tokens, wb)
    return [text, vision, _times(prefill, passes), _times(step, steps)]


def ovis_u1_costs(config: Mapping, precision: str, text_tokens: int = DEFAULT_TEXT_TOKENS, canvas=CANVAS_HW,
                  steps: int = STEPS, video: tuple[int, int] | None = None) -> list[Cost]:
    """An Ovis-U1 control step from its size's records (`backbone`, `expert`, `tokenizer`, `preprocess`, `llm`,
    `vae`): the VLM (vision tower + LLM, every step: it reads the image), the autoencoder, one Yak prefill, `steps`
    expert velocities. `video=(frames, passes)`: the video-WAM baseline instead, as for FLUX.2."""
    wb, ab, image = _sizes(precision, canvas)
    patches, llm_tokens = ovis_tokens(config["preprocess"], text_tokens, canvas)
    tower = visual_tokenizer(config["tokenizer"], patches, config["llm"]["hidden_size"], wb)
    llm = qwen3(config["llm"], llm_tokens, wb, "vlm_llm", on_path=True)
    vision = vae_encoder(*canvas, wb, ab, config["vae"], name="vae_encoder")
    ctx, frames, passes = llm_tokens + 1, *(video or (0, 1))
    tokens = image * (1 + frames)
    prefill = yak_prefill(config["backbone"], ctx, tokens, wb, name="video_denoise" if video else "prefill")
    step = yak_expert_step(config["expert"], ctx + tokens, tokens, wb)
    return [tower, llm, vision, _times(prefill, passes), _times(step, steps)]
