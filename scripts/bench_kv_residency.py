"""Per control step on the CPU, before/after the K/V-resident backend contract, side by side in one run.

    python scripts/bench_kv_residency.py [--iterations 20] [--config medium] [--json out.json]

"before": every component through `run()` on host arrays, the K/V fed to every denoise step as call arguments
(the previous contract; `edge.backends.host_loop.RunOnly` over the same backend). "after": `prefill` keeps the
K/V where the backend keeps it and `denoise` runs the whole loop (onnxruntime: K/V bound once per control step;
torch: the prefill's tensors themselves, no float32 numpy round trip). The medium configuration of
scripts/bench_quantized.py (hidden 768, 2 double + 4 single blocks, expert 384), exported to FP32 ONNX. The two
paths alternate iteration by iteration, so load on this noisy machine hits both alike; ratios are after/before."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def observation(k: int) -> dict:
    rng = np.random.default_rng(k)
    return {"images": [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(2)],
            "state": rng.uniform(-0.5, 0.5, 8), "instruction": "pick up the red block"}


def compare(policy, iterations: int) -> dict:
    from edge.backends.host_loop import RunOnly

    backend = policy.backend
    paths = {"before": RunOnly(backend), "after": backend}
    times: dict[str, list[float]] = {k: [] for k in paths}
    stages: dict[str, dict[str, list[float]]] = {k: {} for k in paths}
    outs = {}
    for i in range(iterations + 2):
        for name, b in (paths.items() if i % 2 == 0 else reversed(list(paths.items()))):
            policy.backend = b
            t = time.perf_counter()
            out = policy.infer(observation(i % 3), seed=i % 3)
            ms = (time.perf_counter() - t) * 1e3
            if i >= 2:
                times[name].append(ms)
                for s in ("prefill", "denoise"):
                    stages[name].setdefault(s, []).append(out["timings_ms"][s])
            outs.setdefault(name, out["actions_normalized"])
    policy.backend = backend
    res = {name: {"step_p50_ms": round(statistics.median(v), 2), "step_p90_ms": round(float(np.percentile(v, 90)), 2),
                  **{f"{s}_p50_ms": round(statistics.median(x), 2) for s, x in stages[name].items()}}
           for name, v in times.items()}
    res["ratio_after_over_before"] = round(res["after"]["step_p50_ms"] / res["before"]["step_p50_ms"], 3)
    res["denoise_ratio"] = round(res["after"]["denoise_p50_ms"] / res["before"]["denoise_p50_ms"], 3)
    res["max_abs_diff"] = float(np.max(np.abs(outs["after"] - outs["before"])))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--config", default="medium", choices=["tiny", "medium"])
    ap.add_argument("--json")
    args = ap.parse_args()
    import logging
    import os

    logging.basicConfig(level=logging.ERROR)
    from bench_quantized import make_checkpoint

    from edge.engines import load_engine_policy
    from quantize.demo import write_demo_checkpoint
    from quantize.export import export_checkpoint
    from quantize.torch_backend import load_torch_policy

    results = {"config": args.config, "iterations": args.iterations, "cpus": os.cpu_count(),
               "load_avg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = write_demo_checkpoint(tmp / "demo")
        ckpt = make_checkpoint(args.config, tmp / "ckpt", demo) if args.config != "tiny" else demo
        t = time.perf_counter()
        fp32 = Path(export_checkpoint(ckpt, tmp / "fp32", instructions=["pick up the red block"])["out"])
        print(f"exported in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        results["onnxruntime"] = compare(load_engine_policy(fp32, threads=2), args.iterations)
        torch_policy = load_torch_policy(ckpt, prompt_cache=fp32 / "prompts.npz").policy
        results["torch"] = compare(torch_policy, args.iterations)
    results["load_avg_end"] = os.getloadavg()[0]
    print(f"\n{args.config}: CPU, ms per control step p50 (before -> after, ratio), {args.iterations} alternating runs")
    for name in ("onnxruntime", "torch"):
        r = results[name]
        print(f"  {name:<12} step {r['before']['step_p50_ms']:8.2f} -> {r['after']['step_p50_ms']:8.2f} "
              f"({r['ratio_after_over_before']:.3f}x)   denoise {r['before']['denoise_p50_ms']:8.2f} -> "
              f"{r['after']['denoise_p50_ms']:8.2f} ({r['denoise_ratio']:.3f}x)   max |diff| {r['max_abs_diff']:.1e}")
    print(f"  load average {results['load_avg_start']:.2f} -> {results['load_avg_end']:.2f} on {results['cpus']} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
