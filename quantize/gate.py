"""Accuracy gate of quantized engines against the FP32 export, on held-out observations: per component (same
inputs to both) and for the whole control step (same noise): cosine, max abs, action error in normalised units.
Thresholds per precision live in quantize/precision.py."""
from __future__ import annotations

import numpy as np

from edge.engines import load_engine_policy

from .onnx_utils import compare
from .precision import gate_for


def _min(values):
    return float(min(values)) if values else float("nan")


def accuracy_report(fp32_dir, quant_dir, observations, precision: str, seed: int = 1000,
                    test_backend: str = "onnxruntime") -> dict:
    from .ptq import capture_inputs

    gate = gate_for(precision)
    ref = load_engine_policy(fp32_dir)
    test = load_engine_policy(quant_dir, backend=test_backend)
    feeds, ref_results = capture_inputs(ref, observations, seed=seed)
    metrics: dict[str, dict] = {}
    # component level: the quantized component on exactly the FP32 pipeline's inputs
    for comp, items in feeds.items():
        outs = {}
        for feed in items:
            a = ref.backend.run(comp, feed)
            a = {k: np.array(v, copy=True) for k, v in a.items()}
            b = test.backend.run(comp, feed)
            for name in a:
                outs.setdefault(name, []).append(compare(a[name], b[name]))
        metrics[comp] = {name: {"cosine_min": _min([c["cosine"] for c in cs]),
                                "max_abs": float(max(c["max_abs"] for c in cs))} for name, cs in outs.items()}
    # whole control step, same noise
    step = []
    for i, (obs, r) in enumerate(zip(observations, ref_results)):
        q = test.infer(obs.as_obs(), seed=seed + i)
        c = compare(r["actions_normalized"], q["actions_normalized"])
        c["mean_abs"] = float(np.abs(r["actions_normalized"] - q["actions_normalized"]).mean())
        c["max_abs_unnormalised"] = float(np.abs(r["actions"] - q["actions"]).max())
        step.append(c)
    metrics["control_step"] = {"actions": {"cosine_min": _min([c["cosine"] for c in step]),
                                           "max_abs": float(max(c["max_abs"] for c in step)),
                                           "mean_abs": float(np.mean([c["mean_abs"] for c in step])),
                                           "max_abs_unnormalised": float(max(c["max_abs_unnormalised"] for c in step))}}
    checks = []

    def check(what, value, limit, higher_is_better=True):
        ok = value >= limit if higher_is_better else value <= limit
        checks.append({"check": what, "value": value, "limit": limit, "passed": bool(ok)})

    if "vision_encoder" in metrics:
        check("vision_encoder.image_tokens cosine", metrics["vision_encoder"]["image_tokens"]["cosine_min"], gate.tokens_cosine)
    for name in ("keys", "values"):
        if name in metrics.get("prefill", {}):
            check(f"prefill.{name} cosine", metrics["prefill"][name]["cosine_min"], gate.kv_cosine)
    if "denoise_step" in metrics:
        check("denoise_step.velocity cosine", metrics["denoise_step"]["velocity"]["cosine_min"], gate.velocity_cosine)
    check("control step actions cosine", metrics["control_step"]["actions"]["cosine_min"], gate.action_cosine)
    check("control step mean |error| (normalised)", metrics["control_step"]["actions"]["mean_abs"], gate.action_mean_abs,
          higher_is_better=False)
    return {"precision": precision, "held_out": len(observations), "metrics": metrics, "checks": checks,
            "passed": all(c["passed"] for c in checks)}


def format_report(report: dict) -> str:
    lines = [f"accuracy gate ({report['precision']} vs FP32, {report['held_out']} held-out observations): "
             + ("PASSED" if report["passed"] else "FAILED")]
    width = max(len(c["check"]) for c in report["checks"])
    for c in report["checks"]:
        op = ">=" if "cosine" in c["check"] else "<="
        lines.append(f"  {c['check']:<{width}}  {c['value']:.6f}  (limit {op} {c['limit']})  "
                     + ("ok" if c["passed"] else "FAIL"))
    a = report["metrics"]["control_step"]["actions"]
    lines.append(f"  actions: max |error| {a['max_abs']:.4f} normalised, {a['max_abs_unnormalised']:.4f} un-normalised")
    return "\n".join(lines)
