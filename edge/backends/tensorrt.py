"""TensorRT 10 backend (runs on the device): one deserialized engine and execution context per component,
named I/O tensors (`set_input_shape`, `set_tensor_address`, `execute_async_v3`), device and pinned host buffers
allocated once at the profile's maximum shapes (outputs on their first shape), one CUDA stream (pycuda).
Not done yet: keeping the prefill K/V on the device between components, and a CUDA graph for the denoise loop.

Nothing here runs on a machine without an NVIDIA GPU: it is kept thin, imported lazily, and everything around it
(manifest checks, profiles) is tested on the CPU."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from ..files import read_json_object
from ..manifest import check_tensorrt_manifest, verify_files

log = logging.getLogger(__name__)


def _imports():
    try:
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            f"the TensorRT backend needs tensorrt (JetPack) and pycuda ({exc}); on a CPU machine use "
            "--backend onnxruntime") from exc
    return trt, cuda


class _Engine:
    def __init__(self, trt, cuda, runtime, path: Path, meta: dict):
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ConfigError(f"TensorRT could not deserialize {path}; rebuild it on this device with `imagewam-edge build`")
        self.context = self.engine.create_execution_context()
        self.cuda = cuda
        self.inputs, self.outputs, self.device, self.host, self.dtypes = [], [], {}, {}, {}
        profile = {k: v for k, v in meta.get("profile", {}).items()}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.dtypes[name] = dtype
            if mode == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
                shape = tuple(profile[name][2]) if name in profile else tuple(self.engine.get_tensor_shape(name))
            else:
                self.outputs.append(name)
                shape = None
            if shape is not None:
                self._alloc(name, shape, dtype)
        self.max_shapes = {n: tuple(profile[n][2]) for n in self.inputs if n in profile}

    def _alloc(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        n = int(np.prod(shape)) * dtype.itemsize
        if name in self.device and self.device[name][1] >= n:
            return
        self.device[name] = (self.cuda.mem_alloc(max(n, 1)), n)
        self.host[name] = self.cuda.pagelocked_empty(int(np.prod(shape)), dtype)

    def run(self, stream, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, ctx = self.cuda, self.context
        for name in self.inputs:
            arr = np.ascontiguousarray(inputs[name], dtype=self.dtypes[name])
            ctx.set_input_shape(name, arr.shape)
            self._alloc(name, arr.shape, self.dtypes[name])  # no-op within the profile
            cuda.memcpy_htod_async(self.device[name][0], arr, stream)
            ctx.set_tensor_address(name, int(self.device[name][0]))
        shapes = {}
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            shapes[name] = shape
            self._alloc(name, shape, self.dtypes[name])  # first call per shape allocates; later calls reuse
            ctx.set_tensor_address(name, int(self.device[name][0]))
        if not ctx.execute_async_v3(stream.handle):
            raise ConfigError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        out = {}
        for name in self.outputs:
            n = int(np.prod(shapes[name]))
            cuda.memcpy_dtoh_async(self.host[name][:n], self.device[name][0], stream)
            out[name] = self.host[name][:n].reshape(shapes[name])
        stream.synchronize()
        return out


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engines: str | Path, components: list[str]):
        trt, cuda = _imports()
        self.engines = Path(engines)
        manifest_path = self.engines / "manifest.json"
        if not manifest_path.exists():
            raise ConfigError(f"{manifest_path} not found: build the engines with `imagewam-edge build`")
        manifest = read_json_object(manifest_path, "build the engines again with `imagewam-edge build`")
        device = cuda.Device(0)
        check_tensorrt_manifest(manifest, trt.__version__, device.compute_capability(), where=str(self.engines))
        verify_files(self.engines, manifest, [f"{c}.engine" for c in components])
        self.trt, self.cuda = trt, cuda
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.stream = cuda.Stream()
        self.parts = {}
        for comp in components:
            meta = read_json_object(self.engines / f"{comp}.json", "build the engines again with `imagewam-edge build`")
            self.parts[comp] = _Engine(trt, cuda, self.runtime, self.engines / f"{comp}.engine", meta)
        log.info("TensorRT %s on %s (sm %s): %s", trt.__version__, device.name(), device.compute_capability(),
                 ", ".join(components))

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            part = self.parts[component]
        except KeyError:
            raise ConfigError(f"no TensorRT engine for {component} in {self.engines}") from None
        return part.run(self.stream, inputs)

    def close(self) -> None:
        self.parts.clear()
