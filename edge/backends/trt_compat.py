"""TensorRT 10 and 11 from one code path: every TensorRT call whose spelling or meaning differs between the two
majors, and the data-type table, live here (the runtime and `build` import them; nothing else touches a
version-dependent name).

What we rely on (NVIDIA TensorRT docs, "Migrating from TensorRT 10.x to 11.x", 11.0-11.4 and latest):
- "Removed Python APIs and Replacements" (api/migration/tensorrt-10x-to-11x-python-api-reference.html): removed in 11
  are BuilderFlag.FP16/BF16/INT8/FP8/INT4/FP4, OBEY_/PREFER_PRECISION_CONSTRAINTS, DIRECT_IO,
  IBuilderConfig.int8_calibrator, set/get_calibration_profile, the quantization flags, and
  ICudaEngine.device_memory_size, device_memory_size_v2 and the per-profile variant. We use none of them, on 10 either.
- "Strongly Typed Networks Are Now Required" (api/migration/tensorrt-10x-to-11x.html): 11 removes weak typing;
  precision comes from the ONNX types (ModelOpt AutoCast / high_precision_dtype) and explicit Q/DQ nodes.
- NetworkDefinitionCreationFlag.STRONGLY_TYPED: on 10 it must be set (1 << int(flag), Python API reference
  "Builder"); the 11 C++ reference says "Deprecated in TensorRT 11.0. Strongly typed mode is always enabled. This
  flag is retained for API compatibility but is ignored." We set it when the enum has it and pass 0 when a later
  release drops it (11 only; on 10 a missing flag is refused).
- The named-tensor runtime API (10.0 migration guide: num_io_tensors, get_tensor_name, get_tensor_mode,
  get_tensor_dtype, set_input_shape, get_tensor_shape, set_tensor_address, execute_async_v3) is not in 11's
  removed list; it is the only execution API used here.
- `trt.nptype` is not used: it has no numpy type for BF16/FP8 on 10; the table below gives sizes by DataType name.
Checked statically against the published `tensorrt-stubs` (10.13) in CI (.ci/run); never run against a real
TensorRT 11 here (no TensorRT on these machines)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:  # the published stubs (tensorrt-stubs) type these; TensorRT itself is imported lazily
    import tensorrt as trt

SUPPORTED_MAJORS = (10, 11)
CPU_HINT = ("on a Jetson TensorRT comes with JetPack (python3-libnvinfer, or the jetson.Dockerfile image); on an "
            "x86 GPU machine `pip install tensorrt`; on a CPU machine use --backend onnxruntime")


def load_tensorrt(hint: str = CPU_HINT) -> ModuleType:
    """`import tensorrt`, refusing a TensorRT major this code was not written for, and the stubs-only package
    (`tensorrt-stubs` installs a `tensorrt/` folder of .pyi files that imports as an empty namespace package)."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(f"TensorRT is not importable here ({exc}). {hint}") from exc
    version = getattr(tensorrt, "__version__", None)
    if not isinstance(version, str):
        raise MissingDependencyError(
            f"`import tensorrt` found {list(getattr(tensorrt, '__path__', []))} without a TensorRT runtime (only the "
            f"type stubs of `tensorrt-stubs`?). {hint}")
    if major_version(version) not in SUPPORTED_MAJORS:
        raise ConfigError(f"TensorRT {version} is not supported (TensorRT {' or '.join(map(str, SUPPORTED_MAJORS))} "
                          "only); use the TensorRT of JetPack 6/7 or --backend onnxruntime")
    return tensorrt


def major_version(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ConfigError(f"cannot read the TensorRT version {version!r}") from None


def strongly_typed_flags(trt_module: Any) -> int:
    """The `create_network` flags of a strongly typed network on this TensorRT (see the module docstring)."""
    flag = getattr(trt_module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is not None:
        return 1 << int(flag)
    if major_version(trt_module.__version__) >= 11:
        return 0  # 11: every network is strongly typed; the flag is optional (and may be gone)
    raise ConfigError(f"TensorRT {trt_module.__version__} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED; "
                      "TensorRT 10.0 or later is needed")


def create_strongly_typed_network(trt_module: Any, builder: trt.Builder) -> trt.INetworkDefinition:
    return builder.create_network(strongly_typed_flags(trt_module))


@dataclass(frozen=True)
class TensorType:
    """A TensorRT DataType as the runtime needs it: its name, bytes per element, the numpy dtype for host staging
    (None where numpy has none: FP8/FP4/INT4 are never host-facing in our engines)."""

    name: str
    itemsize: int
    numpy: np.dtype | None


def _bfloat16() -> np.dtype | None:
    try:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return None


_TYPES = {"FLOAT": (4, "float32"), "HALF": (2, "float16"), "BF16": (2, "bfloat16"), "INT8": (1, "int8"),
          "INT32": (4, "int32"), "INT64": (8, "int64"), "BOOL": (1, "bool"), "UINT8": (1, "uint8"), "FP8": (1, None)}


def tensor_type(dtype: trt.DataType) -> TensorType:
    name = str(getattr(dtype, "name", dtype)).split(".")[-1]
    if name not in _TYPES:
        raise ConfigError(f"engine tensor of TensorRT type {name}: no host or device handling for it here; "
                          "re-export with float32/float16/bfloat16/int32/int64 inputs and outputs")
    size, np_name = _TYPES[name]
    if np_name == "bfloat16":
        return TensorType(name, size, _bfloat16())
    return TensorType(name, size, np.dtype(np_name) if np_name else None)


def io_names(engine: trt.ICudaEngine) -> list[str]:
    return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]


def is_input(trt_module: Any, engine: trt.ICudaEngine, name: str) -> bool:
    return bool(engine.get_tensor_mode(name) == trt_module.TensorIOMode.INPUT)


def engine_dtype(engine: trt.ICudaEngine, name: str) -> TensorType:
    return tensor_type(engine.get_tensor_dtype(name))


def set_input_shape(context: trt.IExecutionContext, name: str, shape: tuple[int, ...]) -> None:
    if not context.set_input_shape(name, tuple(int(d) for d in shape)):
        raise ConfigError(f"TensorRT refused shape {tuple(shape)} for input {name!r}: outside the engine's "
                          "optimization profile; rebuild with a wider range (export ranges) or shorten the input")


def dims(d: trt.Dims) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple (indexing and len(), the part of its tuple behaviour the stubs declare)."""
    return tuple(int(d[i]) for i in range(len(d)))


def output_shape(context: trt.IExecutionContext, name: str) -> tuple[int, ...]:
    shape = dims(context.get_tensor_shape(name))
    if any(d < 0 for d in shape):
        raise ConfigError(f"TensorRT cannot infer the shape of output {name!r} ({shape}) from the input shapes set")
    return shape


def set_address(context: trt.IExecutionContext, name: str, ptr: int) -> None:
    if not context.set_tensor_address(name, int(ptr)):
        raise ConfigError(f"TensorRT refused the device address of tensor {name!r} (not an I/O tensor of this engine?)")


def enqueue(context: trt.IExecutionContext, stream: int, what: str) -> None:
    if not context.execute_async_v3(int(stream)):
        raise ConfigError(f"TensorRT execute_async_v3 failed for {what} (see the TensorRT log above)")


def deserialize(runtime: trt.Runtime, blob: Any) -> trt.ICudaEngine | None:
    """`blob`: any buffer (bytes, mmap); TensorRT copies what it needs, the caller frees it right after."""
    return runtime.deserialize_cuda_engine(blob)
