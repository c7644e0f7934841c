"""`imagewam-edge build` (runs ON the device): TensorRT 10 or 11 engines from an engines directory of ONNX files.

Strongly typed networks only (the ONNX types and Q/DQ nodes decide every layer's precision): no BuilderFlag
FP16/BF16/INT8/FP8 and no calibrators, which TensorRT 11 removes (the version-dependent calls are in
edge/backends/trt_compat.py); optimization profiles from the export metadata, a persistent timing cache, and a
manifest (TensorRT version, compute capability, precision, source checksums) the runtime checks before loading.
One component at a time, each builder's objects and serialized plan released before the next (host memory on a
unified-memory Jetson), the plan written from TensorRT's buffer without a bytes copy.
Device precision of the layers left unquantized (`high_precision`, default bf16): the engines directory keeps them
in float32 (the CPU accuracy gate runs it); a BF16/FP16 copy of each graph is written weight by weight beside the
engines being built (quantize/lowprec.py; FP16 only where the calibration ranges allow, quantize/fp16_check.py),
TensorRT parses that copy, and the copy is deleted once the engines are built; "fp32" builds the graphs as they are.
TensorRT is imported lazily; everything before the first TensorRT call is plain Python and tested on CPU machines;
the TensorRT calls are exercised only by a recording fake (tests/quantize/test_build_tensorrt_fake.py), never on
hardware here (no TensorRT on these machines)."""
from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edge.atomic import replace_dir, staged_dir, write_bytes as atomic_write_bytes
from edge.backends import trt_compat
from edge.backends.trt_engine import rss_mib
from edge.errors import ConfigError, MissingDependencyError
from edge.files import read_json_object, require_keys
from edge.manifest import profile_shapes, sha256_file, verify_files

from .export import write_manifest
from .device_precision import convert_engines_dir
from .lowprec import DEFAULT_HIGH_PRECISION, LowPrecisionError, check_high_precision
from .precision import check_precision_supported

if TYPE_CHECKING:  # typed by tensorrt-stubs in CI (requirements/typecheck_tensorrt.sh)
    import tensorrt as trt

log = logging.getLogger(__name__)
BF16_MIN_CC = (8, 0)  # BF16 tensor cores: Ampere and later (Orin sm 8.7, Thor sm 11.0)
WEAK_TYPING = ("--fp16 asked TensorRT to pick FP16 kernels by itself (weak typing, BuilderFlag.FP16), which "
               "TensorRT 11 removes. Put the precision in the ONNX instead: build without --fp16 and with `--high-precision "
               "fp16` (or the bf16 default), which types the graphs before TensorRT parses them (always strongly typed)")


def import_tensorrt() -> Any:
    return trt_compat.load_tensorrt(
        "`build` runs on the device: on a Jetson it comes with JetPack (python3-libnvinfer, or the jetson.Dockerfile "
        "image); on an x86 GPU machine `pip install tensorrt`.")


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


def device_high_precision(manifest: dict, requested: str | None) -> tuple[str, bool]:
    """-> (the type of the unquantized layers in the engines, whether build converts to it). `requested` None means
    the default (bf16). A directory whose graphs are already typed (quantize --method modelopt --high-precision
    fp16) is built as it is when nothing else is asked for."""
    source = manifest.get("high_precision", "fp32")
    if requested is not None:
        check_high_precision(requested)
    if source != "fp32":
        if requested in (None, source):
            return source, False
        raise LowPrecisionError(f"the ONNX graphs are already {source} outside their Q/DQ nodes (manifest "
                                f"high_precision); --high-precision {requested} needs the float32 ones: quantize "
                                "again without --high-precision, or build with --high-precision " + source)
    wanted = requested or DEFAULT_HIGH_PRECISION
    return wanted, wanted != "fp32"


def build_engines(onnx_dir: str | Path, out: str | Path, workspace_gb: float = 4.0, timing_cache: str | Path | None = None,
                  fp16: bool = False, compute_capability: tuple[int, int] | None = None,
                  progress: Callable[[str], None] = lambda s: None, high_precision: str | None = None) -> dict:
    """`fp16` is refused (weak typing; see WEAK_TYPING): kept as a parameter so the old flag gets the explanation.
    `high_precision` ("bf16" default, "fp16", "fp32"): the type of the layers left unquantized on the device."""
    if fp16:
        raise ConfigError(WEAK_TYPING)
    onnx_dir, out = Path(onnx_dir), Path(out)
    cc = compute_capability or device_compute_capability()
    plan = plan_build(onnx_dir, cc)
    device_hp, convert = device_high_precision(plan["manifest"], high_precision)
    if device_hp == "bf16" and tuple(cc) < BF16_MIN_CC:
        raise LowPrecisionError(f"BF16 needs compute capability {BF16_MIN_CC[0]}.{BF16_MIN_CC[1]} or later (Ampere); "
                                f"this GPU is sm {cc[0]}.{cc[1]}: build with --high-precision fp16 (or fp32)")
    trt_module = import_tensorrt()
    logger = trt_module.Logger(trt_module.Logger.WARNING)
    cache_path = Path(timing_cache) if timing_cache else out.parent / "timing.cache"
    # built in a staging directory beside OUT; a crash or kill leaves OUT as it was (edge.atomic)
    with staged_dir(out) as tmp:
        conversion = None
        if convert:  # the device-precision copy lives in the staging directory and goes before the swap
            progress(f"converting the unquantized layers to {device_hp} (float32 islands: norms, softmax, sinusoids)")
            converted = tmp / f"onnx-{device_hp}"
            conversion = convert_engines_dir(onnx_dir, converted, device_hp, progress)
            for comp, item in plan["components"].items():
                item["onnx"] = converted / f"{comp}.onnx"
        cache_blob = cache_path.read_bytes() if cache_path.exists() else b""
        built = {}
        for i, (comp, item) in enumerate(plan["components"].items(), 1):
            progress(f"[{i}/{len(plan['components'])}] building {comp} ({plan['precision']}, unquantized layers "
                     f"{device_hp}, strongly typed)")
            t0 = time.perf_counter()
            nbytes, cache_blob = build_one(trt_module, logger, item, tmp / f"{comp}.engine", workspace_gb, cache_blob)
            gc.collect()  # the builder, network, parser and plan of this component are gone before the next one
            (tmp / f"{comp}.json").write_text(json.dumps({**item["meta"], "engine": f"{comp}.engine",
                                                          "profile": {k: [list(s) for s in v] for k, v in item["profile"].items()}},
                                                         indent=1))
            now, peak = rss_mib()
            built[comp] = {"seconds": round(time.perf_counter() - t0, 1), "bytes": nbytes}
            progress(f"      {comp}: {nbytes / 2**20:.1f} MiB in {built[comp]['seconds']} s "
                     f"(host RSS {now:.0f} MiB, peak {peak:.0f} MiB)")
        atomic_write_bytes(cache_path, cache_blob)
        if convert:
            shutil.rmtree(tmp / f"onnx-{device_hp}")
        for name in ("policy.json", "dataset_stats.json", "prompts.npz"):
            if (onnx_dir / name).exists():
                shutil.copy(onnx_dir / name, tmp / name)
        src = plan["manifest"]
        manifest = write_manifest(tmp, "tensorrt", plan["precision"], {
            "variant": src.get("variant"), "tensorrt": trt_module.__version__, "compute_capability": list(cc),
            "strongly_typed": True, "high_precision": device_hp, "components": sorted(built), "source": src.get("source"),
            "onnx": {"dir": str(onnx_dir.resolve()), "manifest_sha256": sha256_file(onnx_dir / "manifest.json")},
            "build": built, **({"conversion": _conversion_summary(conversion)} if conversion else {})})
        replace_dir(tmp, out)  # the previous engines stay until the new ones are complete
    return manifest


def _conversion_summary(conversion: dict) -> dict:
    return {comp: {k: r[k] for k in ("converted", "kept_fp32", "casts", "seconds")} | {"fp32_islands": len(r["fp32_islands"])}
            for comp, r in conversion.items()}


def build_one(trt_module: Any, logger: trt.ILogger, item: dict, path: Path, workspace_gb: float,
              cache_blob: bytes) -> tuple[int, bytes]:
    """Parse one ONNX into a strongly typed network, build it with its profile, write the plan to `path`.
    Returns (plan bytes, the updated timing cache)."""
    builder: trt.Builder = trt_module.Builder(logger)
    network = trt_compat.create_strongly_typed_network(trt_module, builder)
    parser: trt.OnnxParser = trt_module.OnnxParser(network, logger)
    if not parser.parse_from_file(str(item["onnx"])):
        errors = "; ".join(str(parser.get_error(k)) for k in range(parser.num_errors))
        raise ConfigError(f"TensorRT could not parse {item['onnx']}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt_module.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in item["profile"].items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ConfigError(f"TensorRT failed to build {item['onnx'].stem} (see the TensorRT log above); try a larger "
                          "--workspace-gb or check `imagewam-edge doctor`")
    with open(path, "wb") as f:
        f.write(memoryview(blob))  # from TensorRT's buffer, no bytes() copy
    nbytes = path.stat().st_size
    timing = config.get_timing_cache()
    return nbytes, bytes(timing.serialize()) if timing is not None else cache_blob
