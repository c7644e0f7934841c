"""`bench --compare reference`: the same checkpoint the way the official evaluation runs it, timed against ours.

Reference (official `infer_action_flux2`): PyTorch eager in the checkpoint's dtype, the instruction re-encoded by
the Qwen3 text encoder EVERY control step, the text padded to the checkpoint's `qwen_context_len` (512 in the
releases) with the padding masked in the prefill and in the action expert, then 10 Euler steps.
Ours: the exported engines through onnxruntime (or TensorRT), the text embedding from the prompt cache, trimmed
text. Both get the same observations and the same initial noise, so the actions must agree (reported).

Imports torch and quantize.model: reached only through the `bench` CLI handler (the lazy dispatch DESIGN §8
allows); the runtime never imports this module."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .sampler import euler_sample, initial_noise
from .timing import summarize
from .transforms import compose_canvas, to_model_pixels


class ReferencePath:
    """One official control step on a LoadedPolicy (quantize.torch_backend)."""

    def __init__(self, loaded):
        import torch

        self.torch = torch
        self.loaded, self.policy = loaded, loaded.policy
        self.model = loaded.checkpoint.model
        self.tokenizer = self.policy.backend.tokenizer
        self.encoder = loaded.text_encoder
        self.dtype = loaded.checkpoint.dtype

    def infer(self, obs: dict, noise: np.ndarray) -> dict:
        torch, p, m = self.torch, self.policy, self.model
        timings, clock = {}, time.perf_counter
        with torch.inference_mode():
            t = clock()
            hidden, mask = self.encoder.encode_padded(obs["instruction"])  # [1, L, W], [1, L] (every step)
            timings["text"] = (clock() - t) * 1e3
            t = clock()
            state = p.state_norm.forward(np.asarray(obs["state"], np.float64))[None]  # [1, P]
            pixels = to_model_pixels(compose_canvas(list(obs["images"]), p.canvas))  # [1, 3, H, W]
            timings["preprocess"] = (clock() - t) * 1e3
            t = clock()
            tokens = self.tokenizer(torch.from_numpy(pixels))  # [1, N, 128]
            timings["vision_encoder"] = (clock() - t) * 1e3
            t = clock()
            context, cmask = m.pack_context(hidden.to(self.dtype), torch.from_numpy(state).to(self.dtype), mask)
            rows, cols = p.canvas.token_grid
            cos, sin = (torch.from_numpy(a) for a in m.prefix_rope(context.shape[1], rows, cols))
            key_mask = torch.cat([cmask, torch.ones(1, tokens.shape[1], dtype=torch.bool)], dim=1)  # [1, L+1+N]
            keys, values = m.prefill(context, tokens.to(self.dtype), cos, sin, key_mask)
            timings["prefill"] = (clock() - t) * 1e3
            acos, asin = (torch.from_numpy(a) for a in m.action_rope(p.spec.horizon))

            def velocity(x, sigma, i):
                v = m.velocity(torch.from_numpy(x).to(self.dtype), torch.tensor([sigma], dtype=torch.float32), keys,
                               values, acos, asin, prefix_mask=key_mask)
                return v.float().numpy()

            t = clock()
            x = euler_sample(noise, velocity, p.sigmas)
            timings["denoise"] = (clock() - t) * 1e3
            actions = p.postprocess(p.action_norm.backward(x[0]))
        timings["total"] = sum(timings.values())
        return {"actions": actions, "timings_ms": timings, "text_tokens": int(hidden.shape[1])}


def check_reference_inputs(checkpoint: str) -> None:
    """The official path encodes the instruction every step: refuse at once, naming what to add, when the FLUX.2
    checkpoint's base/ has no text encoder (a prompt cache is no substitute there)."""
    from pathlib import Path

    from quantize.train_config import load_train_config
    from quantize.variants import detect_variant

    if detect_variant(checkpoint) == "flux2":
        from quantize.torch_backend import resolve_base

        resolve_base(Path(checkpoint), load_train_config(checkpoint), None, need="text_encoder")


def compare_reference(args, ours, progress: Callable[[str], None] = lambda s: None) -> tuple[dict, dict]:
    """Reference and ours interleaved step by step on the same observations and noise.

    Returns (the comparison, ours' measurement in `edge.bench.measure`'s form): bench reports ours from that one
    measurement, so the stage table's control_step and the comparison's "ours" are the same samples."""
    from .process_memory import rss_mb
    from .loader import PolicySource, load_checkpoint_policy
    from .synthetic import synthetic_observation

    progress(f"loading {args.checkpoint} in PyTorch for the reference path")
    loaded = load_checkpoint_policy(PolicySource(checkpoint=args.checkpoint))
    ref = ReferencePath(loaded)
    n, warm = max(1, args.iterations), args.warmup
    spec = ours.spec
    progress(f"reference path (PyTorch eager, text re-encoded every step, padded to {ref.encoder.max_length} tokens) "
             f"interleaved with ours: {warm} warm-up + {n} steps")
    times = {"reference": [], "ours": []}
    stages = {"reference": {}, "ours": {}}
    samples: dict[str, list] = {}
    transfers: list[dict] = []
    rss_peak = rss_mb()
    diff = 0.0
    text_tokens = 0
    t_last = time.monotonic()
    for k in range(warm + n):
        obs = synthetic_observation(ours, args.instruction, k)
        noise = initial_noise(k, spec.horizon, spec.action_dim)
        t0 = time.perf_counter()
        r = ref.infer(obs, noise)
        t1 = time.perf_counter()
        o = ours.infer(obs, noise=noise)
        t2 = time.perf_counter()
        if time.monotonic() - t_last > 5 or k + 1 == warm + n:
            progress(f"  {k + 1}/{warm + n} steps (reference {(t1 - t0) * 1e3:.0f} ms, ours {(t2 - t1) * 1e3:.0f} ms)")
            t_last = time.monotonic()
        if k < warm:
            continue
        text_tokens = r["text_tokens"]
        times["reference"].append((t1 - t0) * 1e3)
        times["ours"].append((t2 - t1) * 1e3)
        samples.setdefault("control_step", []).append((t2 - t1) * 1e3)
        for s, v in o.get("timings_ms", {}).items():
            if s != "total":
                samples.setdefault(s, []).append(v)
        for ms in o.get("step_ms", ()):
            samples.setdefault("denoise_step", []).append(ms)
        transfers.append(o.get("transfer_bytes") or {"h2d": {}, "d2h": {}})
        if k % 10 == 0:
            rss_peak = max(rss_peak, rss_mb())
        for name, out in (("reference", r), ("ours", o)):
            for s, v in out["timings_ms"].items():
                stages[name].setdefault(s, []).append(v)
        diff = max(diff, float(np.max(np.abs(np.asarray(r["actions"]) - np.asarray(o["actions"])))))
    ref_s, our_s = summarize(times["reference"]), summarize(times["ours"])
    compare = {
        "reference": {**ref_s, "how": f"PyTorch {loaded.checkpoint.dtype} eager, Qwen3 text re-encoded every step, "
                      f"text padded to {text_tokens} tokens (masked)",
                      "stages_p50": {s: round(float(np.median(v)), 3) for s, v in stages["reference"].items()}},
        "ours": {**our_s, "how": f"{getattr(ours.backend, 'name', '?')} engines, prompt cache, trimmed text",
                 "stages_p50": {s: round(float(np.median(v)), 3) for s, v in stages["ours"].items()}},
        "ratio_p50": round(ref_s["p50"] / our_s["p50"], 3), "ratio_mean": round(ref_s["mean"] / our_s["mean"], 3),
        "actions_max_abs_diff": diff, "iterations": n, "warmup": warm, "torch_threads": ref.torch.get_num_threads(),
    }
    return compare, {"samples": samples, "rss_peak_mb": max(rss_peak, rss_mb()), "transfers": transfers}
