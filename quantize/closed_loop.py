"""Closed-loop part of the quantization gate: the success of quantized engines on the toy task (edge/task) against the
FP32 engines on the SAME seeded episodes, through the real control loop (or kinematically, without real time).

Tensor-level agreement (quantize/gate.py) says how far the numbers moved; this says whether the robot still does the
task. A quantized engine fails when its success rate drops more than CLOSED_LOOP_TOLERANCE below FP32's."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from edge.engines import load_engine_policy

CLOSED_LOOP_TOLERANCE = 0.10  # success-rate points a quantized engine may lose against FP32 on the same seeds


def closed_loop_compare(fp32_dir: str | Path, quantized: dict, episodes: int, seed: int = 0, kinematic: bool = False,
                        threads: int = 0, tolerance: float = CLOSED_LOOP_TOLERANCE,
                        progress: Callable[[str], None] = lambda s: None) -> dict:
    """`quantized`: {label: engines dir}. Returns {"success": {label: rate}, "evaluations": {label: summary},
    "checks": [...], "passed"} with FP32 under the label "fp32"."""
    from edge.task.evaluate import evaluate, evaluate_kinematic, format_eval

    evaluations = {}
    for label, directory in {"fp32": fp32_dir, **quantized}.items():
        progress(f"closed loop: {label} engines ({directory}), {episodes} episodes from seed {seed}")
        policy = load_engine_policy(directory, threads=threads)
        try:
            evaluations[label] = (evaluate_kinematic(policy, episodes, seed, progress=lambda s: progress("      " + s))
                                  if kinematic
                                  else evaluate(policy, episodes, seed, progress=lambda s: progress("      " + s)))
        finally:
            getattr(policy.backend, "close", lambda: None)()
        progress("      " + format_eval(evaluations[label], label))
    ref = evaluations["fp32"]["success_rate"]
    checks = [{"check": f"{label} closed-loop success vs fp32", "value": ev["success_rate"],
               "limit": round(ref - tolerance, 4), "passed": ev["success_rate"] >= ref - tolerance - 1e-9}
              for label, ev in evaluations.items() if label != "fp32"]
    return {"episodes": episodes, "seed": seed, "mode": "kinematic" if kinematic else "closed-loop",
            "tolerance": tolerance, "success": {k: v["success_rate"] for k, v in evaluations.items()},
            "evaluations": evaluations, "checks": checks, "passed": all(c["passed"] for c in checks)}


def format_closed_loop(report: dict) -> str:
    lines = [f"closed-loop gate ({report['mode']}, {report['episodes']} episodes from seed {report['seed']}, the same "
             f"for every engine): " + ("PASSED" if report["passed"] else "FAILED")]
    for label, ev in report["evaluations"].items():
        lines.append(f"  {label:<5} success {ev['successes']}/{ev['episodes']} ({100 * ev['success_rate']:.1f}%), "
                     f"mean episode {ev['mean_episode_s']:.2f} s")
    for c in report["checks"]:
        lines.append(f"  {c['check']}: {c['value']:.3f} (limit >= {c['limit']:.3f}) " + ("ok" if c["passed"] else "FAIL"))
    return "\n".join(lines)
