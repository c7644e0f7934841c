"""The denoise loop on the device, as one CUDA graph: for each of the N steps, a 4-byte device-to-device copy of
that step's sigma (a per-step constant in a device table) into the engine's `sigma` input, the denoise engine
(execute_async_v3), and the Euler update x += v * dt in FP32 by a tiny NVRTC kernel, in place in the engine's `x`
input buffer (the accumulator IS the engine input; every address in the graph is fixed). Captured once per
(prefix shape, schedule) after one warm-up enqueue (TensorRT needs one after a shape change before capture), and
re-captured when the prefix length changes (a new instruction). Only the noise goes in (pinned staging) and the
final action chunk comes out.

The alternative the issue names, an exported N-step loop engine (the N steps unrolled in one ONNX/engine), is not
built here: it fixes N at export and makes the engine N times larger in activations; the graph keeps one engine.

Exercised in CI by the recording fake in tests/edge/test_tensorrt_contract.py (its fake engine computes a known
velocity in numpy). The CUDA part (sigma copies, Euler kernel, capture, replay; result equal to edge/sampler.py bit
for bit) ran once on an H200 with a stand-in kernel in place of the TensorRT engine
(tests/edge/test_tensorrt_cuda_gpu.py); with a real TensorRT engine inside the graph it has never run."""
from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import Traffic
from .trt_buffers import DeviceBuffer, Staging
from .trt_cuda import Cuda, CudaError
from .trt_engine import Engine

log = logging.getLogger(__name__)

# x is float32 (the FP32 accumulator); v may be float32, float16 or bfloat16. __fmul_rn/__fadd_rn (and --fmad=false)
# round after the multiply and after the add, exactly like numpy's `x += v * np.float32(dt)` in edge/sampler.py.
EULER_SOURCE = r"""
extern "C" __global__ void euler_f32(float* x, const float* v, float dt, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(x[i], __fmul_rn(v[i], dt));
}
extern "C" __global__ void euler_f16(float* x, const unsigned short* v, float dt, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v[i])); x[i] = __fadd_rn(x[i], __fmul_rn(f, dt)); }
}
extern "C" __global__ void euler_bf16(float* x, const unsigned short* v, float dt, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) { float f = __uint_as_float(((unsigned int)v[i]) << 16); x[i] = __fadd_rn(x[i], __fmul_rn(f, dt)); }
}
"""
KERNELS = {"FLOAT": "euler_f32", "HALF": "euler_f16", "BF16": "euler_bf16"}


class DenoiseGraph:
    """Owns the sigma table, the Euler kernel and the captured graph of the denoise engine `engine`, whose
    `x`, `sigma`, `velocity` (and `keys`/`values`) are bound to `buffers` by the backend."""

    def __init__(self, cuda: Cuda, engine: Engine, buffers: dict[str, DeviceBuffer], staging: Staging,
                 stream: Any, traffic: Traffic):
        self.cuda, self.engine, self.buffers, self.staging = cuda, engine, buffers, staging
        self.stream, self.traffic = stream, traffic
        for name in ("x", "sigma", "velocity"):
            if name not in engine.specs:
                raise ConfigError(f"the denoise_step engine has no tensor {name!r}; re-export and rebuild it")
        if engine.specs["x"].dtype.name != "FLOAT":
            raise ConfigError(f"denoise_step input x is {engine.specs['x'].dtype.name}; the Euler accumulation is "
                              "FP32 on the device: re-export with x as float32 (cast inside the graph)")
        vtype = engine.specs["velocity"].dtype.name
        if vtype not in KERNELS:
            raise ConfigError(f"denoise_step output velocity is {vtype}; float32, float16 or bfloat16 expected")
        self.sigma_type = engine.specs["sigma"].dtype
        if self.sigma_type.numpy is None or self.sigma_type.name not in ("FLOAT", "HALF", "BF16"):
            raise ConfigError(f"denoise_step input sigma is {self.sigma_type.name}; float32 expected")
        self.module, functions = cuda.compile(EULER_SOURCE, [KERNELS[vtype]])
        self.kernel = functions[KERNELS[vtype]]
        self.key: tuple | None = None
        self.graph: Any = None
        self.graph_exec: Any = None
        self.table: int | None = None  # device sigma table: one value per step
        self.table_bytes = 0
        self.captures = 0

    def _upload_table(self, sigmas: np.ndarray) -> int:
        # the network is fed fp32(sigma) (DESIGN.md §2.6); one entry per step i = 0..N-1
        values = np.ascontiguousarray(np.asarray(sigmas[:-1], dtype=np.float32).astype(self.sigma_type.numpy))  # [N]
        if self.table is None or self.table_bytes < values.nbytes:
            if self.table is not None:
                self.cuda.free(self.table)
            self.table, self.table_bytes = self.cuda.malloc(values.nbytes), values.nbytes
        self.cuda.h2d(self.table, values.ctypes.data, values.nbytes, self.stream)  # pageable, once per capture
        self.cuda.sync(self.stream)
        self.traffic.add("denoise_setup", h2d=values.nbytes)  # once per capture, not per control step
        return self.table

    def ensure(self, shapes: dict[str, tuple[int, ...]], sigmas: np.ndarray) -> None:
        """Capture the loop for these input shapes and this schedule unless the current graph already is."""
        key = (tuple(sorted(shapes.items())), tuple(np.asarray(sigmas, np.float64).tolist()))
        if key == self.key:
            return
        self.release_graph()
        self.engine.set_shapes(shapes)
        table = self._upload_table(sigmas)
        x, v, s = self.buffers["x"], self.buffers["velocity"], self.buffers["sigma"]
        n = int(np.prod(shapes["x"]))
        step = self.sigma_type.itemsize
        self.engine.enqueue(self.stream)  # warm-up: TensorRT's deferred shape work must not land in the graph
        self.cuda.sync(self.stream)
        self.cuda.begin_capture(self.stream)
        try:
            for i in range(len(sigmas) - 1):
                dt = float(np.float32(sigmas[i + 1] - sigmas[i]))  # the sampler's float32 step
                self.cuda.d2d(s.ptr, table + i * step, step, self.stream)
                self.engine.enqueue(self.stream)
                self.cuda.launch_kernel(self.kernel, n, (x.ptr, v.ptr, dt, n),
                                        (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int), self.stream)
        except BaseException:
            with contextlib.suppress(CudaError):  # end the broken capture so the stream is usable again
                self.cuda.destroy_graph(self.cuda.end_capture(self.stream), None)
            raise
        graph = self.cuda.end_capture(self.stream)
        try:
            self.graph_exec = self.cuda.instantiate(graph)
        except BaseException:
            self.cuda.destroy_graph(graph, None)
            raise
        self.graph = graph
        self.key = key
        self.captures += 1
        log.info("denoise loop captured as one CUDA graph: %d steps, shapes %s (capture #%d)", len(sigmas) - 1,
                 dict(shapes), self.captures)

    def run(self, noise: np.ndarray) -> np.ndarray:
        """noise [1, A, Da] float32 -> x0 [1, A, Da] float32 (the graph must be captured for these shapes)."""
        x = np.ascontiguousarray(noise, dtype=np.float32)
        xb = self.buffers["x"]
        n = self.staging.put(x)
        self.cuda.h2d(xb.ptr, self.staging.ptr, n, self.stream)
        self.cuda.launch_graph(self.graph_exec, self.stream)
        self.cuda.d2h(self.staging.ptr, xb.ptr, n, self.stream)
        self.cuda.sync(self.stream)
        self.traffic.add("denoise", h2d=n, d2h=n)
        return self.staging.get(x.shape, np.dtype(np.float32))

    def release_graph(self) -> None:
        if self.graph is not None or self.graph_exec is not None:
            self.cuda.destroy_graph(self.graph, self.graph_exec)
        self.graph = self.graph_exec = None
        self.key = None

    def close(self) -> None:
        self.release_graph()
        if self.table is not None:
            self.cuda.free(self.table)
            self.table = None
        self.cuda.unload(self.module)
