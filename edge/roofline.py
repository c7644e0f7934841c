"""`bench --model-only`: FLOPs, bytes and resident weights per component of one control step from the model
configuration records, and a roofline lower bound of latency on a Jetson target (DESIGN §4): per component
max(FLOPs / peak, bytes / bandwidth).

Pure python: no torch, no model weights. The configurations are the very records the model classes are built from
(edge/model_configs.py: FLUX.2 klein 4B/9B and their action experts, the Ovis-U1 Yak DiT, its expert, AIMv2 visual
tokenizer, Qwen3-1.7B and autoencoder), and each component's parameter count is that of the parameters its engine
reads (tests/edge/test_roofline.py checks every count against the torch classes, built at real size on fake (meta)
tensors). Counting rules:
- a matmul of an [n, k] activation by a [k, m] weight: 2 n k m FLOPs; weights read once per pass;
- attention: 4 * queries * keys * (heads * head_dim) FLOPs (QK^T and AV), kept in FP16 at every precision
  (softmax stays in high precision, DESIGN §3); linear layers run at the precision's peak (INT8/FP8/FP16);
- the K/V cache is FP16 (2 bytes) at every precision: written by the prefill, re-read by every denoise step;
- convolution activations (the autoencoder) are read and written once per layer (no fusion: an upper bound on
  traffic, the FLOPs dominate anyway);
- embedding tables are resident but only their looked-up rows are read;
- resident memory counts what stays on the device during the control loop: the weights of the on-path engines
  and the K/V cache. The text encoder runs once per instruction (prompt cache) and is not on our control path:
  listed, never resident; the official evaluation re-encodes 512 padded tokens every step (reported as `reference`).
  A module fits when resident + RESERVE_GB (OS, CUDA context, activations, TensorRT workspace) < its memory.
Not counted: kernel launches, synchronisation, imperfect fusion. Measured against this model on an NVIDIA H200
(scripts/gpu_control_step.py: real-size FLUX.2-4B, torch BF16, K/V resident, CUDA graphs; ceilings set to the GPU's
measured matmul rate and copy bandwidth; README "The control step on a GPU"): MEASURED_EFFICIENCY below, i.e. the
real step took 2-12x the bound per component (4-12x with graphs alone); read the roofline as a floor, and divide by these for an estimate.
The video-WAM baseline (FastWAM-like) runs the same backbone over the current frame plus F future latent frames for
K denoising passes, then the same action loop over that longer cache."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import ConfigError
from .model_configs import (FLUX2_PRESETS, FLUX2_VAE, OVIS_U1_LLM, OVIS_U1_VAE, TEXT_ENCODER_LAYERS, TEXT_ENCODERS,
                            ImagePreprocess, VisualTokenizerConfig, YakConfig, YakExpertConfig, flux2_expert)

HORIZON, STEPS, ACTION_DIM, STATE_DIM = 16, 10, 7, 8
# roofline ms / measured ms per component, FLUX.2-4B BF16 on an H200 (docs/measurements/gpu_control_step_h200_run3.json)
MEASURED_ON = "H200, torch 2.11 BF16, CUDA graphs / + torch.compile"
MEASURED_EFFICIENCY = {"vision_encoder": (0.12, 0.24), "prefill": (0.29, 0.50), "denoise_step": (0.08, 0.23)}
CANVAS_HW = (224, 448)  # LIBERO canvas
DEFAULT_TEXT_TOKENS = 44  # the prompt template + a short instruction in the Qwen3 chat template (est.)
PADDED_TEXT = 512
SEED_CLAIM_SAVED = 0.847  # "84.7% FLOPs saved" vs FastWAM (seed/ImageWAM.txt)
RESERVE_GB = 2.0  # besides the resident weights and K/V cache: OS, CUDA context, activations, TensorRT workspace


@dataclass(frozen=True)
class Target:
    name: str
    int8_tops: float
    fp16_tflops: float
    fp8_tflops: float | None  # None: no FP8 (sm 8.7)
    bandwidth_gbs: float
    memory_gb: float
    note: str = ""


TARGETS = {  # DESIGN §4 (dense, derived)
    "orin-agx-64gb": Target("orin-agx-64gb", 85.0, 42.6, None, 204.8, 64),
    "orin-agx-32gb": Target("orin-agx-32gb", 54.0, 27.0, None, 204.8, 32),
    "orin-nx-16gb": Target("orin-nx-16gb", 30.0, 15.0, None, 102.4, 16),
    "orin-nano-8gb": Target("orin-nano-8gb", 20.0, 10.0, None, 68.0, 8),
    "thor": Target("thor", 517.0, 258.0, 517.0, 273.0, 128, "FP8 ~half of 2070 sparse FP4 TFLOPS, dense: unconfirmed"),
}
PRECISIONS = {"fp16": 2.0, "int8": 1.0, "fp8": 1.0}  # weight bytes per parameter
VARIANTS = ("flux2-4b", "flux2-9b", "ovis-u1")
OVIS_U1 = {"backbone": YakConfig(), "expert": YakExpertConfig(), "tokenizer": VisualTokenizerConfig(),
           "preprocess": ImagePreprocess(), "llm": OVIS_U1_LLM, "vae": OVIS_U1_VAE}  # the Ovis-U1-3B records


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


def ovis_tokens(text_tokens: int, canvas=CANVAS_HW) -> tuple[int, int]:
    """(vision-tower patches, VLM context tokens) for a canvas: the image is resized as Ovis-U1's preprocessing does."""
    pre = OVIS_U1["preprocess"]
    rows, cols = pre.grid(*canvas)
    return rows * cols, text_tokens + pre.visual_tokens(*canvas)


def step_costs(variant: str, precision: str, text_tokens: int = DEFAULT_TEXT_TOKENS, canvas=CANVAS_HW,
               steps: int = STEPS) -> list[Cost]:
    """Our control step: components in order (the text encoder listed, off the path)."""
    if variant not in VARIANTS:
        raise ConfigError(f"--variant {variant!r}: choose one of {list(VARIANTS)} (or all)")
    wb = PRECISIONS[precision]
    ab = 2.0 if precision == "fp16" else 1.0
    h, w = canvas
    image = (h // 16) * (w // 16)
    if variant.startswith("flux2"):
        b = FLUX2_PRESETS[variant]
        text = qwen3(TEXT_ENCODERS[variant], text_tokens, wb, "text_encoder (cached)", on_path=False,
                     layers=TEXT_ENCODER_LAYERS)
        vision = vae_encoder(h, w, wb, ab, FLUX2_VAE)
        prefill = flux2_prefill(b, text_tokens + 1, image, wb)
        step = flux2_expert_step(flux2_expert(b, ACTION_DIM), text_tokens + 1 + image, wb)
        return [text, vision, prefill, _times(step, steps)]
    o = OVIS_U1
    patches, llm_tokens = ovis_tokens(text_tokens, canvas)
    tower = visual_tokenizer(o["tokenizer"], patches, o["llm"]["hidden_size"], wb)
    llm = qwen3(o["llm"], llm_tokens, wb, "vlm_llm", on_path=True)
    vision = vae_encoder(h, w, wb, ab, o["vae"], name="vae_encoder")
    prefill = yak_prefill(o["backbone"], llm_tokens + 1, image, wb)
    step = yak_expert_step(o["expert"], llm_tokens + 1 + image, image, wb)
    return [tower, llm, vision, prefill, _times(step, steps)]


def roofline_ms(c: Cost, target: Target, precision: str) -> dict:
    peak = {"fp16": target.fp16_tflops, "int8": target.int8_tops, "fp8": target.fp8_tflops}[precision]
    compute = c.linear_flops / (peak * 1e12) + c.attn_flops / (target.fp16_tflops * 1e12)
    memory = c.bytes / (target.bandwidth_gbs * 1e9)
    return {"compute_ms": compute * 1e3, "memory_ms": memory * 1e3, "ms": max(compute, memory) * 1e3,
            "bound": "compute" if compute >= memory else "memory"}


def check_precision(target: Target, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose fp16, int8 or fp8")
    if precision == "fp8" and target.fp8_tflops is None:
        raise ConfigError(f"--precision fp8 on {target.name}: Orin (sm 8.7) has no FP8 tensor cores; use int8 or "
                          "fp16 (FP8 needs Thor, sm 11.0)")


def video_baseline(variant: str, precision: str, frames: int, passes: int, text_tokens: int = DEFAULT_TEXT_TOKENS,
                   canvas=CANVAS_HW, steps: int = STEPS) -> list[Cost]:
    """FastWAM-like video WAM on the same backbone: `passes` backbone passes over text + current frame + `frames`
    future latent frames (passes=1: one pass, cache intermediates; more: iterative video denoising), then the
    action loop over that longer cache. VAE decoding of the future frames is not counted (favours the baseline)."""
    ours = step_costs(variant, precision, text_tokens, canvas, steps)
    h, w = canvas
    image = (h // 16) * (w // 16)
    video_tokens = image * (1 + frames)
    wb = PRECISIONS[precision]
    if variant.startswith("flux2"):
        b = FLUX2_PRESETS[variant]
        ctx = text_tokens + 1
        video = flux2_prefill(b, ctx, video_tokens, wb, name="video_denoise")
        step = flux2_expert_step(flux2_expert(b, ACTION_DIM), ctx + video_tokens, wb)
    else:
        ctx = ovis_tokens(text_tokens, canvas)[1] + 1
        video = yak_prefill(OVIS_U1["backbone"], ctx, video_tokens, wb, name="video_denoise")
        step = yak_expert_step(OVIS_U1["expert"], ctx + video_tokens, video_tokens, wb)
    keep = [c for c in ours if c.name not in ("prefill", "denoise_step")]
    return keep + [_times(video, passes), _times(step, steps)]


def totals(costs: list[Cost], target: Target, precision: str) -> dict:
    on = [c for c in costs if c.on_path]
    per = {c.name: {"gflops": round(c.flops / 1e9, 2), "gbytes": round(c.bytes / 1e9, 4), "params_m": round(c.params / 1e6, 1),
                    "passes": c.passes, "on_control_path": c.on_path, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                        for k, v in roofline_ms(c, target, precision).items()}}
           for c in costs}
    return {"components": per, "tflops": round(sum(c.flops for c in on) / 1e12, 4),
            "gbytes": round(sum(c.bytes for c in on) / 1e9, 3),
            "roofline_ms": round(sum(roofline_ms(c, target, precision)["ms"] for c in on), 2),
            "resident_gb": round((sum(c.params for c in on) * PRECISIONS[precision] + sum(c.cache_bytes for c in on)) / 1e9, 2),
            "off_path_gb": round(sum(c.params for c in costs if not c.on_path) * PRECISIONS[precision] / 1e9, 2)}


def _expand(value: str, allowed) -> list[str]:
    vals = list(allowed) if value == "all" else [v.strip() for v in value.split(",")]
    bad = [v for v in vals if v not in allowed]
    if bad:
        raise ConfigError(f"unknown value(s) {bad}; choose from {list(allowed)} (or all)")
    return vals


def model_only(variant: str = "flux2-4b", target: str = "orin-agx-64gb", precision: str = "int8",
               text_tokens: int | None = None, video_frames: tuple = (1, 2, 4, 8), video_passes: tuple = (1, 2, 4, 10)) -> dict:
    text_tokens = text_tokens or DEFAULT_TEXT_TOKENS
    rows = []
    for v in _expand(variant, VARIANTS):
        for t in _expand(target, list(TARGETS)):
            tg = TARGETS[t]
            for p in _expand(precision, list(PRECISIONS)):
                if p == "fp8" and tg.fp8_tflops is None:
                    if precision == "all" or target == "all" or "," in precision + target:
                        continue  # skipped in tables; refused when asked for explicitly
                check_precision(tg, p)
                ours = totals(step_costs(v, p, text_tokens), tg, p)
                fits = ours["resident_gb"] + RESERVE_GB < tg.memory_gb
                grid = {}
                for f in video_frames:
                    for k in video_passes:
                        base = totals(video_baseline(v, p, f, k, text_tokens), tg, p)
                        grid[f"F{f}_K{k}"] = {"tflops": base["tflops"], "roofline_ms": base["roofline_ms"],
                                              "flops_saved": round(1 - ours["tflops"] / base["tflops"], 4)}
                closest = min(grid, key=lambda key: abs(grid[key]["flops_saved"] - SEED_CLAIM_SAVED))
                rows.append({"variant": v, "target": t, "precision": p, "text_tokens": text_tokens, **ours,
                             "fits_memory": fits, "target_note": tg.note,
                             "video_baseline": grid, "closest_to_seed_claim": closest})
    if not rows:
        raise ConfigError("no valid (variant, target, precision) combination; fp8 needs --target thor")
    ref = totals(step_costs("flux2-4b", "fp16", PADDED_TEXT), TARGETS["orin-agx-64gb"], "fp16")
    return {"rows": rows, "seed_claim_flops_saved": SEED_CLAIM_SAVED,
            "reference_padded_text_flux2_4b_tflops": ref["tflops"]}


def format_table(result: dict) -> str:
    lines = ["variant   target         prec  TFLOP/step  GB/step  roofline ms  (per component ms: bound)  "
             "resident GB  video-WAM F4/K1 saved  K10 saved"]
    for r in result["rows"]:
        comps = ", ".join(f"{n.split(' ')[0]} {c['ms']:.1f}{'' if c['on_control_path'] else ' off-path'}"
                          f"{'M' if c['bound'] == 'memory' else 'C'}" for n, c in r["components"].items())
        vb = r["video_baseline"]
        lines.append(f"{r['variant']:<9} {r['target']:<14} {r['precision']:<5} {r['tflops']:>9.3f} {r['gbytes']:>8.2f} "
                     f"{r['roofline_ms']:>11.1f}  ({comps})  {r['resident_gb']:>6.1f}{'' if r['fits_memory'] else ' NO FIT'}"
                     f"  {vb.get('F4_K1', {}).get('flops_saved', float('nan')):.1%}  {vb.get('F4_K10', {}).get('flops_saved', float('nan')):.1%}")
    r0 = result["rows"][0]
    lines.append(f"(resident: weights of the engines on the control path + the K/V cache, the cached text encoder is "
                 f"not; NO FIT: resident + {RESERVE_GB:g} GB reserve reaches the module's memory)")
    lines.append(f"(C: compute-bound, M: memory-bound; text {r0['text_tokens']} valid tokens; the official path's 512 "
                 f"padded tokens make the FLUX.2-4B step {result['reference_padded_text_flux2_4b_tflops']} TFLOP)")
    lines.append(f"(measured efficiency against this roofline, {MEASURED_ON}: " + ", ".join(
        f"{k} {a:.0%} / {b:.0%}" for k, (a, b) in MEASURED_EFFICIENCY.items()) + ")")
    lines.append(f"video-WAM baseline (same backbone, F future latent frames, K backbone passes) closest to the seed's "
                 f"{result['seed_claim_flops_saved']:.1%} FLOPs saved: {r0['closest_to_seed_claim']} "
                 f"({r0['video_baseline'][r0['closest_to_seed_claim']]['flops_saved']:.1%}) for {r0['variant']}")
    return "\n".join(lines)
