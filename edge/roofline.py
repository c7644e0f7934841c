"""`bench --model-only`: FLOPs, bytes and resident weights per component of one control step from the model
configuration records, and a roofline lower bound of latency on a Jetson target (DESIGN §4): per component
max(FLOPs / peak, bytes / bandwidth).

Pure python: no torch, no model weights. Which sizes have figures, and the cost function of each, come from the
variant registry (edge/model_variants.py); the costs themselves (counting rules, parameter counts checked against the
torch classes) are in edge/roofline_costs.py. Resident memory counts what stays on the device during the control
loop: the weights of the on-path engines and the K/V cache (the cached text encoder is listed, never resident; the
official evaluation re-encodes 512 padded tokens every step, reported as `reference`). A module fits when resident +
RESERVE_GB (OS, CUDA context, activations, TensorRT workspace) < its memory.
Not counted: kernel launches, synchronisation, imperfect fusion. Measured against this model on an NVIDIA H200
(scripts/gpu_control_step.py: real-size FLUX.2-4B, torch BF16, K/V resident, CUDA graphs; ceilings set to the GPU's
measured matmul rate and copy bandwidth; README "The control step on a GPU"): MEASURED_EFFICIENCY below, i.e. the
real step took 2-12x the bound per component (4-12x with graphs alone); read the roofline as a floor, and divide by these for an estimate."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .model_variants import find_size, roofline_names
from .roofline_costs import CANVAS_HW, DEFAULT_TEXT_TOKENS, PRECISIONS, STEPS, Cost

# roofline ms / measured ms per component, FLUX.2-4B BF16 on an H200 (docs/measurements/gpu_control_step_h200_run3.json)
MEASURED_ON = "H200, torch 2.11 BF16, CUDA graphs / + torch.compile"
MEASURED_EFFICIENCY = {"vision_encoder": (0.12, 0.24), "prefill": (0.29, 0.50), "denoise_step": (0.08, 0.23)}
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


def _model(variant: str):
    """The cost function and configuration records of a size with roofline figures (e.g. "flux2-4b")."""
    if variant not in roofline_names():
        raise ConfigError(f"--variant {variant!r}: choose one of {list(roofline_names())} (or all)")
    record, size = find_size(variant)
    return record.roofline, size.config


def step_costs(variant: str, precision: str, text_tokens: int = DEFAULT_TEXT_TOKENS, canvas=CANVAS_HW,
               steps: int = STEPS) -> list[Cost]:
    """Our control step: components in order (the text encoder listed, off the path)."""
    costs, config = _model(variant)
    return costs(config, precision, text_tokens, canvas, steps)


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
    costs, config = _model(variant)
    return costs(config, precision, text_tokens, canvas, steps, video=(frames, passes))

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
    for v in _expand(variant, roofline_names()):
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
