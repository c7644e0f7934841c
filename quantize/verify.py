"""`imagewam-edge verify` (runs on the device): engines against a reference on the same observations, per component
(same inputs) and for the whole control step (same noise), with the precision's gate thresholds and the worst error
of the actions the robot receives in robot units (quantize/gate.py).

References: `onnxruntime` (default): TensorRT engines against the ONNX they were built from; `torch`: the engines
(TensorRT, or ONNX on onnxruntime) against the checkpoint on the torch backend (`--device cuda` on the GPU)."""
from __future__ import annotations

from pathlib import Path

from edge.errors import ConfigError
from edge.files import read_json_object
from edge.recording import iter_observations

from .gate import accuracy_report, compare_to_reference

REFERENCES = ("onnxruntime", "torch")


def gate_name(manifest: dict) -> str:
    """The accuracy gate for engines: their quantized precision, else that of the layers the build left in high
    precision (a TensorRT build converts them to BF16 by default: `build --high-precision`)."""
    precision = manifest.get("precision", "fp32")
    if precision != "fp32":
        return precision
    return "bf16" if manifest.get("high_precision") == "bf16" else "fp16"


def verify_engines(engines: str | Path, observations_dir: str | Path | None = None, onnx_dir: str | Path | None = None,
                   max_observations: int = 16, reference: str = "onnxruntime", checkpoint: str | Path | None = None,
                   device: str = "cpu", seed: int = 1000) -> dict:
    if reference not in REFERENCES:
        raise ConfigError(f"--reference {reference!r}: one of {list(REFERENCES)}")
    engines = Path(engines)
    if not engines.is_dir():
        raise ConfigError(f"--engines {engines} is not a directory; pass the TensorRT engines directory written by "
                          "`imagewam-edge build --engines ONNX_DIR --out DIR` (or, with --reference torch, an ONNX "
                          "engines directory from `export` / `quantize`)")
    if reference == "torch":
        if onnx_dir:
            raise ConfigError("--reference-engines is the onnxruntime reference; with --reference torch the reference "
                              "is --checkpoint DIR: drop --reference-engines")
        return verify_against_torch(engines, checkpoint, observations_dir, max_observations, device, seed)
    if checkpoint or device != "cpu":
        raise ConfigError("--checkpoint and --device are for --reference torch; add `--reference torch`, or drop them "
                          "to compare with onnxruntime on the ONNX the engines were built from")
    manifest = read_json_object(engines / "manifest.json", "--engines must be a TensorRT engines directory written by "
                                "`imagewam-edge build --engines ONNX_DIR --out DIR` (build it again if the file was lost)")
    if manifest.get("kind") not in (None, "tensorrt"):
        raise ConfigError(f"{engines / 'manifest.json'}: kind is {manifest.get('kind')!r}, not 'tensorrt'; verify "
                          f"compares TensorRT engines with their ONNX: build them first with "
                          f"`imagewam-edge build --engines {engines} --out DIR`, then verify DIR (or compare these ONNX "
                          f"engines with the checkpoint: --reference torch --checkpoint DIR)")
    onnx_info = manifest.get("onnx") if isinstance(manifest.get("onnx"), dict) else {}
    onnx_dir = Path(onnx_dir or onnx_info.get("dir") or "")
    if not (onnx_dir / "manifest.json").exists():
        raise ConfigError(f"the ONNX engines these were built from are not at {onnx_dir} ({engines / 'manifest.json'} "
                          "field onnx.dir); pass --reference-engines DIR")
    if observations_dir:
        observations = list(iter_observations(observations_dir))[:max_observations]
    else:
        from edge.engines import load_engine_policy

        from .ptq import synthetic_observations

        observations = synthetic_observations(max_observations, load_engine_policy(onnx_dir))
    report = accuracy_report(onnx_dir, engines, observations, gate_name(manifest),
                             seed=seed, test_backend="tensorrt")
    report["reference"] = f"onnxruntime {onnx_dir}"
    report["engines_backend"] = "TensorRT"
    return report


def verify_against_torch(engines: Path, checkpoint: str | Path | None, observations_dir, max_observations: int,
                         device: str, seed: int = 1000) -> dict:
    """The checkpoint on the torch backend runs first (every component's inputs and outputs recorded) and is released
    before the engines load: one model in memory at a time. The engines' backend follows their manifest (tensorrt
    for `build`'s engines, onnxruntime for `export`'s and `quantize`'s)."""
    if not checkpoint:
        raise ConfigError("--reference torch needs --checkpoint DIR (the release directory the engines were exported "
                          "from), e.g. imagewam-edge verify --engines engines/int8-trt --reference torch "
                          "--checkpoint release/ --device cuda")
    manifest = read_json_object(engines / "manifest.json", "--engines must be an engines directory written by "
                                "`imagewam-edge export`, `quantize` or `build`")
    kind = manifest.get("kind")
    if kind not in ("tensorrt", "onnx"):
        raise ConfigError(f"{engines / 'manifest.json'}: kind is {kind!r}; verify compares TensorRT engines "
                          "(`build`) or ONNX engines (`export`, `quantize`) with the checkpoint")
    test_backend = "tensorrt" if kind == "tensorrt" else "onnxruntime"
    from edge.engines import load_engine_policy

    from .memory import release_memory
    from .ptq import capture, synthetic_observations
    from edge.policy_source import PolicySource

    from .variants import load_source

    from edge.engines import read_spec

    spec = read_spec(engines)
    ref = load_source(PolicySource(checkpoint=str(checkpoint), device=device, steps=spec.steps)).policy
    mismatch = {k: (v, getattr(ref.spec, k)) for k, v in spec.to_dict().items()
                if k in ("variant", "action_dim", "state_dim", "horizon", "embodiment") and v != getattr(ref.spec, k)}
    if mismatch:
        raise ConfigError(f"the engines in {engines} and the checkpoint {checkpoint} are different models "
                          f"({', '.join(f'{k}: engines {a!r}, checkpoint {b!r}' for k, (a, b) in mismatch.items())}); "
                          "pass the checkpoint these engines were exported from")
    if observations_dir:
        observations = list(iter_observations(observations_dir))[:max_observations]
    else:
        observations = synthetic_observations(max_observations, ref)
    if not observations:
        raise ConfigError(f"--observations {observations_dir} holds no observations; record some with "
                          "`imagewam-edge run --record DIR`, or leave --observations out for generated ones")
    reference = capture(ref, observations, seed=seed, outputs=True)
    ref.backend.close()
    del ref
    release_memory()
    test = load_engine_policy(engines, backend=test_backend)
    try:
        report = compare_to_reference(reference, test, observations, gate_name(manifest),
                                      seed)
    finally:
        test.backend.close()
    report["reference"] = f"torch {checkpoint} on {device}"
    report["engines_backend"] = "TensorRT" if test_backend == "tensorrt" else "onnxruntime"
    return report
