"""onnxruntime CPU latency per component, FP32 vs INT8 vs FP8, for a tiny and a medium FLUX.2 ImageWAM, in one
run (ratios against FP32 of the same run; this machine is noisy, so compare within a run only).

    python scripts/bench_quantized.py [--iterations 20] [--configs tiny,medium] [--json out.json]

Each configuration: a random-weight checkpoint in the official layout -> export -> ModelOpt INT8 and FP8 (synthetic
calibration, labelled so) -> per-component latency with onnxruntime (CPU, 2 threads) and the accuracy gate."""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {  # backbone (hidden, heads, double, single), expert hidden
    "tiny": dict(hidden=64, heads=2, double=2, single=2, expert=32, head_dim=32),
    "medium": dict(hidden=768, heads=6, double=2, single=4, expert=384, head_dim=128),
}


def make_checkpoint(name: str, out: Path, demo: Path) -> Path:
    import torch

    from quantize.demo import _randomise
    from quantize.model.action_expert import ActionExpertConfig
    from quantize.model.checkpoint import official_state_dict
    from quantize.model.flux2 import Flux2Config
    from quantize.model.mot import ImageWAMFlux2

    c = CONFIGS[name]
    axes = (c["head_dim"] // 4,) * 4
    backbone = Flux2Config(hidden=c["hidden"], heads=c["heads"], depth_double=c["double"], depth_single=c["single"],
                           context_dim=96, axes_dim=axes)
    expert = ActionExpertConfig(action_dim=7, hidden=c["expert"], heads=c["heads"], head_dim=c["head_dim"],
                                depth_double=c["double"], depth_single=c["single"])
    shutil.copytree(demo, out, ignore=shutil.ignore_patterns("model.pt"))
    model = ImageWAMFlux2(backbone, expert, 8)
    _randomise(model, 0)
    torch.save({**official_state_dict(model), "step": 0, "torch_dtype": "torch.float32"}, out / "model.pt")
    cfg = (out / "train_config.yaml").read_text()
    import yaml

    cfg = yaml.safe_load(cfg)
    cfg["model"]["action_dit_config"].update(hidden_dim=expert.hidden, num_heads=expert.heads, attn_head_dim=expert.head_dim,
                                             num_layers_double=expert.depth_double, num_layers_single=expert.depth_single)
    cfg["edge"]["axes_dim"] = list(axes)
    (out / "train_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def time_components(engines: Path, feeds: dict, iterations: int) -> dict:
    from edge.backends.onnxrt import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(engines, list(feeds), threads=2)
    out = {}
    for comp, feed in feeds.items():
        for _ in range(3):
            backend.run(comp, feed)
        ts = []
        for _ in range(iterations):
            t = time.perf_counter()
            backend.run(comp, feed)
            ts.append((time.perf_counter() - t) * 1e3)
        out[comp] = {"p50": statistics.median(ts), "p90": float(np.percentile(ts, 90))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--configs", default="tiny,medium")
    ap.add_argument("--json")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    from edge.engines import load_engine_policy
    from quantize.demo import write_demo_checkpoint
    from quantize.export import export_checkpoint
    from quantize.ptq import capture_inputs, quantize_engines, synthetic_observations

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = write_demo_checkpoint(tmp / "demo")
        for name in args.configs.split(","):
            ckpt = make_checkpoint(name, tmp / f"ckpt_{name}", demo) if name != "tiny" else demo
            t = time.perf_counter()
            fp32 = Path(export_checkpoint(ckpt, tmp / f"{name}_fp32", instructions=["pick up the red block"])["out"])
            print(f"[{name}] exported in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            dirs = {"fp32": fp32}
            gates = {}
            for prec in ("int8", "fp8"):
                t = time.perf_counter()
                rep = quantize_engines(fp32, prec, tmp / f"{name}_{prec}", synthetic=12)
                dirs[prec] = Path(rep["out"])
                gates[prec] = {c["check"]: round(c["value"], 5) for c in rep["accuracy"]["checks"]}
                gates[prec]["passed"] = rep["accuracy"]["passed"]
                print(f"[{name}] {prec} quantized in {time.perf_counter() - t:.0f} s, gate "
                      f"{'passed' if rep['accuracy']['passed'] else 'FAILED'}", file=sys.stderr)
            pol = load_engine_policy(fp32)
            feeds, _ = capture_inputs(pol, synthetic_observations(1, pol))
            one = {c: items[0] for c, items in feeds.items()}
            lat = {prec: time_components(d, one, args.iterations) for prec, d in dirs.items()}
            params = json.loads((fp32 / "prefill.json").read_text())["parameters_bytes"] / 4e6
            results[name] = {"latency_ms": lat, "gate": gates, "prefill_params_M": params}
            print(f"\n{name} (prefill {params:.1f} M params): onnxruntime CPU, 2 threads, ms p50 (ratio to FP32)")
            print(f"  {'component':<16}" + "".join(f"{p:>22}" for p in dirs))
            for comp in one:
                base = lat["fp32"][comp]["p50"]
                row = "".join(f"{lat[p][comp]['p50']:>12.2f} ({lat[p][comp]['p50'] / base:4.2f}x)" for p in dirs)
                print(f"  {comp:<16}{row}")
            for prec in ("int8", "fp8"):
                g = gates[prec]
                print(f"  {prec} gate: actions cosine {g['control step actions cosine']:.5f}, K cosine "
                      f"{g['prefill.keys cosine']:.5f}, velocity cosine {g['denoise_step.velocity cosine']:.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
