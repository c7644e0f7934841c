"""`imagewam-edge build` (runs ON the device): TensorRT 10 engines from an engines directory of ONNX files.

Strongly typed networks (the Q/DQ ONNX decides every layer's precision; TensorRT 10 deprecated implicit INT8
calibration and 11 removes it), optimization profiles from the export metadata, a persistent timing cache, and a
manifest (TensorRT version, compute capability, precision, source checksums) the runtime checks before loading.
TensorRT is imported lazily; everything before the first TensorRT call is plain Python and tested on CPU machines."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

from edge.atomic import replace_dir, staged_dir, write_bytes as atomic_write_bytes
from edge.errors import ConfigError, MissingDependencyError
from edge.files import read_json_object, require_keys
from edge.manifest import profile_shapes, sha256_file, verify_files

from .export import write_manifest
from .precision import check_precision_supported

log = logging.getLogger(__name__)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not importable here. `build` runs on the device: on a Jetson it comes with JetPack "
            "(python3-libnvinfer, or the jetson.Dockerfile image); on an x86 GPU machine `pip install tensorrt`. "
            f"({exc})") from exc
    return trt


def device_compute_capability() -> tuple[int, int]:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.8
        except ImportError as exc:
            raise MissingDependencyError("cuda-python is needed to query the GPU: pip install 'imagewam-edge[jetson]'") from exc
    err, major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, 0)
    err2, minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, 0)
    if int(err) or int(err2):
        raise ConfigError(f"no CUDA device visible (cudaDeviceGetAttribute error {err}); on a Jetson run with "
                          "--runtime nvidia (container) and check `imagewam-edge doctor`")
    return int(major), int(minor)


def plan_build(onnx_dir: Path, compute_capability: tuple[int, int]) -> dict:
    """Everything decided before TensorRT: manifest and checksums, precision vs GPU, per-component profiles."""
    manifest_path = onnx_dir / "manifest.json"
    fix = "`build` reads a directory written by `export` or `quantize`; export it again"
    manifest = read_json_object(manifest_path, fix)
    require_keys(manifest, ["components"], manifest_path, fix)
    if manifest.get("kind") != "onnx":
        raise ConfigError(f"{onnx_dir} holds {manifest.get('kind')} engines; build takes ONNX (from export/quantize)")
    if manifest.get("gate") == "failed":
        raise ConfigError(f"{onnx_dir} failed its accuracy gate (quantization.json); re-quantize with better "
                          "calibration data before building")
    precision = manifest.get("precision", "fp32")
    check_precision_supported(precision, compute_capability)
    verify_files(onnx_dir, manifest)
    components = {}
    for comp in manifest["components"]:
        meta = read_json_object(onnx_dir / f"{comp}.json", f"it is listed in {manifest_path}; export the directory again")
        components[comp] = {"onnx": onnx_dir / f"{comp}.onnx", "profile": profile_shapes(meta), "meta": meta}
    return {"manifest": manifest, "precision": precision, "components": components}


def build_engines(onnx_dir: str | Path, out: str | Path, workspace_gb: float = 4.0, timing_cache: str | Path | None = None,
                  fp16: bool = False, compute_capability: tuple[int, int] | None = None,
                  progress: Callable[[str], None] = lambda s: None) -> dict:
    onnx_dir, out = Path(onnx_dir), Path(out)
    cc = compute_capability or device_compute_capability()
    plan = plan_build(onnx_dir, cc)
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    cache_path = Path(timing_cache) if timing_cache else out.parent / "timing.cache"
    # built in a staging directory beside OUT; a crash or kill leaves OUT as it was (edge.atomic)
    with staged_dir(out) as tmp:
        cache_blob = cache_path.read_bytes() if cache_path.exists() else b""
        strongly_typed = not (fp16 and plan["precision"] == "fp32")
        built = {}
        for i, (comp, item) in enumerate(plan["components"].items(), 1):
            progress(f"[{i}/{len(plan['components'])}] building {comp} ({plan['precision']}"
                     f"{', fp16 weak typing' if not strongly_typed else ', strongly typed'})")
            t0 = time.perf_counter()
            builder = trt.Builder(logger)
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse_from_file(str(item["onnx"])):
                errors = "; ".join(str(parser.get_error(k)) for k in range(parser.num_errors))
                raise ConfigError(f"TensorRT could not parse {item['onnx']}: {errors}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
            if not strongly_typed:
                config.set_flag(trt.BuilderFlag.FP16)
            cache = config.create_timing_cache(cache_blob)
            config.set_timing_cache(cache, ignore_mismatch=False)
            profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in item["profile"].items():
                profile.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(profile)
            blob = builder.build_serialized_network(network, config)
            if blob is None:
                raise ConfigError(f"TensorRT failed to build {comp} (see the TensorRT log above); try a larger "
                                  "--workspace-gb or check `imagewam-edge doctor`")
            (tmp / f"{comp}.engine").write_bytes(bytes(blob))
            cache_blob = bytes(config.get_timing_cache().serialize())
            (tmp / f"{comp}.json").write_text(json.dumps({**item["meta"], "engine": f"{comp}.engine",
                                                          "profile": {k: [list(s) for s in v] for k, v in item["profile"].items()}},
                                                         indent=1))
            built[comp] = {"seconds": round(time.perf_counter() - t0, 1), "bytes": len(blob)}
            progress(f"      {comp}: {len(blob) / 2**20:.1f} MiB in {built[comp]['seconds']} s")
        atomic_write_bytes(cache_path, cache_blob)
        for name in ("policy.json", "dataset_stats.json", "prompts.npz"):
            if (onnx_dir / name).exists():
                shutil.copy(onnx_dir / name, tmp / name)
        src = plan["manifest"]
        manifest = write_manifest(tmp, "tensorrt", plan["precision"], {
            "variant": src.get("variant"), "tensorrt": trt.__version__, "compute_capability": list(cc),
            "strongly_typed": strongly_typed, "components": sorted(built), "source": src.get("source"),
            "onnx": {"dir": str(onnx_dir.resolve()), "manifest_sha256": sha256_file(onnx_dir / "manifest.json")},
            "build": built})
        replace_dir(tmp, out)  # the previous engines stay until the new ones are complete
    return manifest
