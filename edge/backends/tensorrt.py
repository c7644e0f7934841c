"""TensorRT backend (TensorRT 10 and 11, runs on the device): the control step stays on the accelerator.

- One device buffer per tensor name, allocated once at the largest shape of the engines' profiles (the `profile`
  in each engine's JSON) and bound by address (`set_tensor_address`) in every engine that names it: the vision
  encoder's `image_tokens` output IS the prefill's input, the prefill's `keys`/`values` outputs ARE the denoise
  step's inputs. Nothing between components passes through the host.
- Host inputs (pixels, text, state, rope; noise) go up from pinned staging buffers; only host-facing outputs and
  the final action chunk come down. `traffic` counts those bytes by stage.
- `vision` returns `DeviceTensor`s (array-like: `np.asarray` downloads one, counted) for what the prefill consumes;
  `prefill` returns a `Prefix` of device tensors; `denoise` runs the whole Euler loop as one CUDA graph with the FP32
  update on the device (trt_denoise.py); `run` (export, calibration, the gate) returns host arrays.
- TensorRT-version-dependent calls: trt_compat.py; CUDA calls through cuda-python: trt_cuda.py; engine loading
  (largest first, memory-mapped, host peak logged): trt_engine.py.

Untested with TensorRT: there is no TensorRT on the machines this was written on, nor in CI, and no GPU in CI. The
binding logic is exercised only by the recording fake of TensorRT and cuda-python in
tests/edge/test_tensorrt_contract.py; the CUDA half (trt_cuda, trt_denoise) ran once on an H200 with a stand-in
engine (tests/edge/test_tensorrt_cuda_gpu.py). `imagewam-edge verify` on the device is the check against ONNX."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..files import read_json_object
from ..manifest import check_tensorrt_manifest, verify_files
from .base import Prefix, Traffic
from .trt_buffers import DeviceBuffer, DeviceTensor, Staging
from .trt_compat import load_tensorrt
from .trt_cuda import Cuda, load_cuda
from .trt_denoise import DenoiseGraph
from .trt_engine import Engine, load_engines

log = logging.getLogger(__name__)
REBUILD = "build the engines again with `imagewam-edge build`"


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engines: str | Path, components: list[str], trt: Any = None, cuda: Cuda | None = None):
        """`trt`/`cuda`: the tensorrt module and a `Cuda`, for tests; imported lazily otherwise."""
        trt = trt if trt is not None else load_tensorrt()
        cuda = cuda if cuda is not None else load_cuda()
        self.trt, self.cuda, self.engines = trt, cuda, Path(engines)
        self.traffic = Traffic()
        self.parts: dict[str, Engine] = {}
        self.buffers: dict[str, DeviceBuffer] = {}
        self.staging: dict[str, Staging] = {}
        self.loop: DenoiseGraph | None = None
        self.stream: Any = None
        manifest_path = self.engines / "manifest.json"
        if not manifest_path.exists():
            raise ConfigError(f"{manifest_path} not found: build the engines with `imagewam-edge build`")
        manifest = read_json_object(manifest_path, REBUILD)
        cc = cuda.compute_capability()
        check_tensorrt_manifest(manifest, trt.__version__, cc, where=str(self.engines))
        verify_files(self.engines, manifest, [f"{c}.engine" for c in components])
        metas = {c: read_json_object(self.engines / f"{c}.json", REBUILD) for c in components}
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            self.stream = cuda.stream()
            self.parts = load_engines(trt, self.runtime, self.engines, list(components), metas)
            self._allocate()
            if "denoise_step" in self.parts:
                self.loop = DenoiseGraph(cuda, self.parts["denoise_step"], self.buffers, self._staging("x"),
                                         self.stream, self.traffic)
        except BaseException:
            self.close()
            raise
        free, total = cuda.mem_free_bytes()
        log.info("TensorRT %s (sm %d.%d): %s; device buffers %.1f MiB; device memory free %.0f of %.0f MiB",
                 trt.__version__, cc[0], cc[1], ", ".join(components),
                 sum(b.capacity for b in self.buffers.values()) / 2**20, free / 2**20, total / 2**20)

    # buffers: one per tensor name, shared by producer and consumers
    def _allocate(self) -> None:
        sizes: dict[str, int] = {}
        for comp, part in self.parts.items():
            for name, spec in part.specs.items():
                nbytes = int(np.prod(spec.max_shape, dtype=np.int64)) * spec.dtype.itemsize
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = DeviceBuffer(name, 0, 0, spec.dtype)
                elif buf.dtype.name != spec.dtype.name:
                    raise ConfigError(f"tensor {name!r} is {buf.dtype.name} in one engine and {spec.dtype.name} in "
                                      f"{comp}; export and build every component from one export")
                if spec.is_input:
                    buf.consumers.append(comp)
                elif buf.producer is not None:
                    raise ConfigError(f"both {buf.producer} and {comp} output {name!r}; re-export the engines")
                else:
                    buf.producer = comp
                sizes[name] = max(sizes.get(name, 0), nbytes)
        for name, buf in self.buffers.items():
            buf.capacity = sizes[name]
            buf.ptr = self.cuda.malloc(buf.capacity)  # once, at the profiles' largest shape
        for part in self.parts.values():
            for name in part.specs:
                part.bind(name, self.buffers[name].ptr)
        for name, buf in self.buffers.items():  # pinned staging for what crosses to/from the host every step
            if buf.producer is None or not buf.consumers:
                self._staging(name)

    def _staging(self, name: str) -> Staging:
        if name not in self.staging:
            ptr, view = self.cuda.host_alloc(self.buffers[name].capacity)
            self.staging[name] = Staging(ptr, view)
        return self.staging[name]

    def _part(self, component: str) -> Engine:
        try:
            return self.parts[component]
        except KeyError:
            raise ConfigError(f"no TensorRT engine for {component} in {self.engines}") from None

    def _put(self, stage: str, name: str, value: Any) -> tuple[int, ...]:
        """Make `value` the content of buffer `name`: nothing for the device tensor already there, a device copy
        for another device tensor, an upload through pinned staging for a host array. Returns its shape."""
        buf = self.buffers[name]
        if isinstance(value, DeviceTensor):
            value.check_current(f"{stage} input {name}")
            buf.check_fits(value.shape, stage)
            if value.ptr != buf.ptr:
                self.cuda.d2d(buf.ptr, value.ptr, value.nbytes, self.stream)
                buf.shape, buf.generation = value.shape, buf.generation + 1
            return value.shape
        if buf.dtype.numpy is None:
            hint = " (pip install ml_dtypes for bfloat16 on the host)" if buf.dtype.name == "BF16" else ""
            raise ConfigError(f"{stage} input {name!r} is {buf.dtype.name}: it cannot come from the host{hint}; "
                              "re-export with float32 inputs (cast inside the graph)")
        arr = np.ascontiguousarray(value, dtype=buf.dtype.numpy)
        n = buf.check_fits(arr.shape, stage)
        staging = self._staging(name)
        staging.put(arr)
        self.cuda.h2d(buf.ptr, staging.ptr, n, self.stream)
        self.traffic.add(stage, h2d=n)
        buf.shape, buf.generation = tuple(arr.shape), buf.generation + 1
        return tuple(arr.shape)

    def _download(self, tensor: DeviceTensor) -> np.ndarray:
        buf = tensor.buffer
        if buf.dtype.numpy is None:
            hint = " (pip install ml_dtypes for bfloat16)" if buf.dtype.name == "BF16" else ""
            raise ConfigError(f"{buf.name!r} is {buf.dtype.name}: it cannot be read on the host{hint}")
        staging = self._staging(buf.name)
        self.cuda.d2h(staging.ptr, tensor.ptr, tensor.nbytes, self.stream)
        self.cuda.sync(self.stream)
        self.traffic.add(buf.producer or "download", d2h=tensor.nbytes)
        return staging.get(tensor.shape, buf.dtype.numpy)

    # the backend contract (edge/backends/base.py)
    def _execute(self, component: str, inputs: dict[str, Any], keep: bool) -> dict[str, Any]:
        """Run one engine; with `keep`, outputs another loaded engine consumes stay on the device (DeviceTensor)."""
        part = self._part(component)
        shapes = {}
        for name in part.inputs:
            if name not in inputs:
                raise ConfigError(f"{component} needs input {name!r}; got {sorted(inputs)}")
            shapes[name] = self._put(component, name, inputs[name])
        out_shapes = part.set_shapes(shapes)
        for name, shape in out_shapes.items():
            self.buffers[name].check_fits(shape, component)
        part.enqueue(self.stream)
        out: dict[str, Any] = {}
        for name, shape in out_shapes.items():
            buf = self.buffers[name]
            buf.shape, buf.generation = shape, buf.generation + 1
            out[name] = DeviceTensor(buf, self._download)
        for name, tensor in list(out.items()):
            if not (keep and self.buffers[name].consumers):  # host-facing output: comes down now
                out[name] = self._download(tensor)
        self.cuda.sync(self.stream)
        return out

    def run(self, component: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """One component, host arrays out (export, calibration capture, the accuracy gate); counted traffic."""
        return self._execute(component, inputs, keep=False)

    def vision(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """The vision encoder; `image_tokens` (and Ovis-U1's `context`) stay on the device for `prefill`."""
        return self._execute("vision_encoder", inputs, keep=True)

    def prefill(self, inputs: dict[str, Any]) -> Prefix:
        out = self._execute("prefill", inputs, keep=True)
        on_device = all(isinstance(v, DeviceTensor) for v in out.values())
        return Prefix(out, int(sum(v.nbytes for v in out.values())), "device" if on_device else "host")

    def denoise(self, prefix: Prefix, noise: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """The whole Euler loop as one CUDA graph; per-step times are not observable inside it, so step_ms is []."""
        if self.loop is None:
            raise ConfigError(f"no denoise_step engine in {self.engines}; load it with the other components")
        part = self.parts["denoise_step"]
        noise = np.asarray(noise, dtype=np.float32)
        shapes: dict[str, tuple[int, ...]] = {}
        for name in part.inputs:
            if name == "x":
                shapes[name] = tuple(noise.shape)
                self.buffers[name].check_fits(shapes[name], "denoise")
            elif name == "sigma":
                shapes[name] = part.specs[name].max_shape
            elif name in prefix.tensors:
                shapes[name] = self._put("denoise", name, prefix.tensors[name])  # K/V: already there, no copy
            else:
                raise ConfigError(f"the prefix has no {name!r} for denoise_step (has {sorted(prefix.tensors)})")
        self.loop.ensure(shapes, np.asarray(sigmas, dtype=np.float64))
        return self.loop.run(noise), []

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        for part in self.parts.values():
            part.close()
        self.parts.clear()
        for buf in self.buffers.values():
            if buf.ptr:
                self.cuda.free(buf.ptr)
        self.buffers.clear()
        for staging in self.staging.values():
            self.cuda.host_free(staging.ptr)
        self.staging.clear()
        if self.stream is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None
