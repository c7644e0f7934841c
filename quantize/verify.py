"""`imagewam-edge verify` (runs on the device): TensorRT engines against onnxruntime on the same observations,
per component (same inputs) and for the whole control step (same noise), with the precision's gate thresholds."""
from __future__ import annotations

import json
from pathlib import Path

from edge.errors import ConfigError
from edge.recording import iter_observations

from .gate import accuracy_report


def verify_engines(engines: str | Path, observations_dir: str | Path | None = None, onnx_dir: str | Path | None = None,
                   max_observations: int = 16) -> dict:
    engines = Path(engines)
    manifest = json.loads((engines / "manifest.json").read_text())
    onnx_dir = Path(onnx_dir or manifest.get("onnx", {}).get("dir", ""))
    if not (onnx_dir / "manifest.json").exists():
        raise ConfigError(f"the ONNX engines these were built from are not at {onnx_dir}; pass --onnx DIR")
    if observations_dir:
        observations = list(iter_observations(observations_dir))[:max_observations]
    else:
        from edge.engines import load_engine_policy

        from .ptq import synthetic_observations

        observations = synthetic_observations(max_observations, load_engine_policy(onnx_dir))
    precision = manifest.get("precision", "fp32")
    report = accuracy_report(onnx_dir, engines, observations, precision if precision != "fp32" else "fp16",
                             test_backend="tensorrt")
    report["reference"] = f"onnxruntime {onnx_dir}"
    return report
