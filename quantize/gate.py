"""Accuracy gate of quantized engines against the FP32 export, on held-out observations: per component (same
inputs to both) and for the whole control step (same noise): cosine, max abs, action error in normalised units, and
the actions the robot receives (un-normalised with dataset_stats.json and post-processed by the embodiment, by the
policy's own code): the worst error per dimension in robot units, and any sign change of a binarised dimension
(the LIBERO gripper) fails the gate however small the normalised error behind it.
Thresholds per precision live in quantize/precision.py."""
from __future__ import annotations

import numpy as np

from edge.engines import load_engine_policy

from .onnx_utils import compare
from .precision import gate_for

MAX_FLIP_EXAMPLES = 5


def _min(values):
    return float(min(values)) if values else float("nan")


def robot_action_errors(reference: list[np.ndarray], quantized: list[np.ndarray], binary_dims: tuple[int, ...]) -> dict:
    """Post-processed, un-normalised action chunks ([H, D] per observation, what the robot receives) -> the worst
    |error| per dimension in robot units and the sign changes of the binarised dimensions."""
    ref, q = np.stack(reference).astype(np.float64), np.stack(quantized).astype(np.float64)  # [N, H, D]
    err = np.abs(ref - q).reshape(-1, ref.shape[-1]).max(axis=0)
    flips, per_dim = [], {}
    for d in binary_dims:
        where = np.argwhere(np.sign(ref[..., d]) != np.sign(q[..., d]))
        per_dim[str(d)] = len(where)
        flips += [{"observation": int(o), "step": int(t), "dim": int(d), "reference": float(ref[o, t, d]),
                   "quantized": float(q[o, t, d])} for o, t in where]
    return {"max_abs_per_dim": [float(e) for e in err], "worst_dim": int(np.argmax(err)), "binary_dims": list(binary_dims),
            "commands_per_dim": int(ref.shape[0] * ref.shape[1]), "flips": len(flips), "flips_per_dim": per_dim,
            "flip_examples": flips[:MAX_FLIP_EXAMPLES]}


def accuracy_report(fp32_dir, quant_dir, observations, precision: str, seed: int = 1000,
                    test_backend: str = "onnxruntime") -> dict:
    """The FP32 engines run first and are released before the quantized ones load: at most one set in memory."""
    from .memory import release_memory
    from .capture import capture

    ref = load_engine_policy(fp32_dir)
    reference = capture(ref, observations, seed=seed, outputs=True)
    ref.backend.close()
    del ref
    release_memory()
    return compare_to_reference(reference, load_engine_policy(quant_dir, backend=test_backend), observations,
                                precision, seed)


def compare_policies(ref, test, observations, precision: str, seed: int = 1000) -> dict:
    """`ref` (FP32) and `test` (quantized) engine policies on the same observations and noise."""
    from .capture import capture

    return compare_to_reference(capture(ref, observations, seed=seed, outputs=True), test, observations, precision, seed)


def compare_to_reference(reference, test, observations, precision: str, seed: int = 1000) -> dict:
    """`test` against what the FP32 policy did on `observations` (a ptq.Capture with outputs, same seeds)."""
    gate = gate_for(precision)
    ref_results = reference.results
    metrics: dict[str, dict] = {}
    # component level: the quantized component on exactly the FP32 pipeline's inputs
    for comp, items in reference.feeds.items():
        outs = {}
        for feed, a in zip(items, reference.outputs[comp]):
            b = test.backend.run(comp, feed)
            for name in a:
                outs.setdefault(name, []).append(compare(a[name], b[name]))
        metrics[comp] = {name: {"cosine_min": _min([c["cosine"] for c in cs]),
                                "max_abs": float(max(c["max_abs"] for c in cs))} for name, cs in outs.items()}
    # whole control step, same noise
    step, robot_ref, robot_q = [], [], []
    for i, (obs, r) in enumerate(zip(observations, ref_results)):
        q = test.infer(obs.as_obs(), seed=seed + i)
        robot_ref.append(r["actions"])
        robot_q.append(q["actions"])
        c = compare(r["actions_normalized"], q["actions_normalized"])
        c["mean_abs"] = float(np.abs(r["actions_normalized"] - q["actions_normalized"]).mean())
        c["max_abs_unnormalised"] = float(np.abs(r["actions"] - q["actions"]).max())
        step.append(c)
    metrics["control_step"] = {"actions": {"cosine_min": _min([c["cosine"] for c in step]),
                                           "max_abs": float(max(c["max_abs"] for c in step)),
                                           "mean_abs": float(np.mean([c["mean_abs"] for c in step])),
                                           "max_abs_unnormalised": float(max(c["max_abs_unnormalised"] for c in step))},
                                "robot_actions": robot_action_errors(robot_ref, robot_q,
                                                                     test.postprocess.binary_dims(test.spec.action_dim))}
    checks = []

    def check(what, value, limit, higher_is_better=True):
        ok = value >= limit if higher_is_better else value <= limit
        checks.append({"check": what, "value": value, "limit": limit, "passed": bool(ok)})

    if "vision_encoder" in metrics:
        check("vision_encoder.image_tokens cosine", metrics["vision_encoder"]["image_tokens"]["cosine_min"], gate.tokens_cosine)
        if "context" in metrics["vision_encoder"]:  # Ovis-U1: the VLM's conditioning, quantized with its encoder
            check("vision_encoder.context cosine", metrics["vision_encoder"]["context"]["cosine_min"], gate.tokens_cosine)
    for name in ("keys", "values"):
        if name in metrics.get("prefill", {}):
            check(f"prefill.{name} cosine", metrics["prefill"][name]["cosine_min"], gate.kv_cosine)
    if "denoise_step" in metrics:
        check("denoise_step.velocity cosine", metrics["denoise_step"]["velocity"]["cosine_min"], gate.velocity_cosine)
    check("control step actions cosine", metrics["control_step"]["actions"]["cosine_min"], gate.action_cosine)
    check("control step mean |error| (normalised)", metrics["control_step"]["actions"]["mean_abs"], gate.action_mean_abs,
          higher_is_better=False)
    robot = metrics["control_step"]["robot_actions"]
    if robot["binary_dims"]:
        check("binarised action sign flips (gripper)", robot["flips"], 0, higher_is_better=False)
    return {"precision": precision, "held_out": len(observations), "metrics": metrics, "checks": checks,
            "passed": all(c["passed"] for c in checks)}


def format_report(report: dict) -> str:
    lines = [f"accuracy gate ({report['precision']} vs FP32, {report['held_out']} held-out observations): "
             + ("PASSED" if report["passed"] else "FAILED")]
    width = max(len(c["check"]) for c in report["checks"])
    for c in report["checks"]:
        op = ">=" if "cosine" in c["check"] else "<="
        value = f"{c['value']:.6f}" if isinstance(c["value"], float) else f"{c['value']:<8}"
        lines.append(f"  {c['check']:<{width}}  {value}  (limit {op} {c['limit']})  " + ("ok" if c["passed"] else "FAIL"))
    a = report["metrics"]["control_step"]["actions"]
    lines.append(f"  actions: max |error| {a['max_abs']:.4f} normalised, {a['max_abs_unnormalised']:.4f} un-normalised")
    robot = report["metrics"]["control_step"].get("robot_actions")
    if robot:
        lines.append("  robot actions (un-normalised, post-processed), worst |error| per dimension in robot units:")
        for d, e in enumerate(robot["max_abs_per_dim"]):
            note = "  <- worst" if d == robot["worst_dim"] and e > 0 else ""
            if d in robot["binary_dims"]:
                note += f"  binarised: {robot['flips_per_dim'][str(d)]} of {robot['commands_per_dim']} commands flipped"
            lines.append(f"    dim {d:>2}  {e:.6f}{note}")
        for f in robot["flip_examples"]:
            lines.append(f"    FLIPPED: observation {f['observation']}, step {f['step']}, dim {f['dim']}: "
                         f"{f['reference']:+g} (FP32) -> {f['quantized']:+g}")
    return "\n".join(lines)
