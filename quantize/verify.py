"""`imagewam-edge verify` (runs on the device): TensorRT engines against onnxruntime on the same observations,
per component (same inputs) and for the whole control step (same noise), with the precision's gate thresholds."""
from __future__ import annotations

from pathlib import Path

from edge.errors import ConfigError
from edge.files import read_json_object
from edge.recording import iter_observations

from .gate import accuracy_report


def verify_engines(engines: str | Path, observations_dir: str | Path | None = None, onnx_dir: str | Path | None = None,
                   max_observations: int = 16) -> dict:
    engines = Path(engines)
    if not engines.is_dir():
        raise ConfigError(f"--engines {engines} is not a directory; pass the TensorRT engines directory written by "
                          "`imagewam-edge build --onnx ONNX_DIR --out DIR`")
    manifest = read_json_object(engines / "manifest.json", "--engines must be a TensorRT engines directory written by "
                                "`imagewam-edge build --onnx ONNX_DIR --out DIR` (build it again if the file was lost)")
    if manifest.get("kind") not in (None, "tensorrt"):
        raise ConfigError(f"{engines / 'manifest.json'}: kind is {manifest.get('kind')!r}, not 'tensorrt'; verify "
                          f"compares TensorRT engines with their ONNX: build them first with "
                          f"`imagewam-edge build --onnx {engines} --out DIR`, then verify DIR")
    onnx_info = manifest.get("onnx") if isinstance(manifest.get("onnx"), dict) else {}
    onnx_dir = Path(onnx_dir or onnx_info.get("dir") or "")
    if not (onnx_dir / "manifest.json").exists():
        raise ConfigError(f"the ONNX engines these were built from are not at {onnx_dir} ({engines / 'manifest.json'} "
                          "field onnx.dir); pass --onnx DIR")
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
