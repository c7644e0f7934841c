"""The CUDA half of the TensorRT backend on a real GPU with real cuda-python (marked gpu: skipped without one):
pinned staging and copies, NVRTC, the Euler kernel and the CUDA graph of the denoise loop (trt_denoise.py), with a
stand-in for the TensorRT engine (an NVRTC kernel computing v = -x * sigma + 0.25 from the device buffers, launched
where the engine's execute_async_v3 would be). TensorRT itself is not involved.
Ran once, passed: NVIDIA H200 (sm 9.0), driver 580.159.04, Python 3.12, cuda-bindings 13.3.1 (2026-11-27, the
lent GPU machine; also NVRTC-compiled all three Euler kernels there). Skipped on CPU machines and in CI."""
import ctypes

import numpy as np
import pytest

from edge.backends.base import Traffic
from edge.backends.trt_buffers import DeviceBuffer, Staging
from edge.backends.trt_compat import TensorType
from edge.backends.trt_engine import TensorSpec
from edge.sampler import euler_sample, flow_sigmas

STAND_IN = r"""
extern "C" __global__ void velocity(const float* x, const float* sigma, float* v, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = __fadd_rn(__fmul_rn(-x[i], sigma[0]), 0.25f);
}
"""


def _cuda():
    try:
        from edge.backends.trt_cuda import load_cuda

        cuda = load_cuda()
        cuda.compute_capability()
        return cuda
    except Exception:
        return None


CUDA = _cuda()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(CUDA is None, reason="needs cuda-python and an NVIDIA GPU")]
F32 = TensorType("FLOAT", 4, np.dtype(np.float32))


class StandInEngine:
    """What DenoiseGraph needs of an Engine: specs, set_shapes, enqueue (here: one capturable kernel launch)."""

    def __init__(self, cuda, buffers, n):
        self.cuda, self.buffers, self.n = cuda, buffers, n
        self.specs = {"x": TensorSpec("x", True, F32, (1, n)), "sigma": TensorSpec("sigma", True, F32, (1,)),
                      "velocity": TensorSpec("velocity", False, F32, (1, n))}
        self.module, fns = cuda.compile(STAND_IN, ["velocity"])
        self.fn = fns["velocity"]
        self.enqueues = 0

    def set_shapes(self, shapes):
        return {"velocity": (1, self.n)}

    def enqueue(self, stream):
        self.enqueues += 1
        b = self.buffers
        self.cuda.launch_kernel(self.fn, self.n, (b["x"].ptr, b["sigma"].ptr, b["velocity"].ptr, self.n),
                                (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int), stream)


def test_denoise_graph_on_the_gpu_equals_the_sampler():
    from edge.backends.trt_denoise import DenoiseGraph

    cuda, n = CUDA, 4 * 7
    stream = cuda.stream()
    buffers = {name: DeviceBuffer(name, cuda.malloc(nb), nb, F32) for name, nb in (("x", 4 * n), ("sigma", 4),
                                                                                   ("velocity", 4 * n))}
    ptr, view = cuda.host_alloc(4 * n)
    traffic = Traffic()
    engine = StandInEngine(cuda, buffers, n)
    loop = DenoiseGraph(cuda, engine, buffers, Staging(ptr, view), stream, traffic)
    sigmas = flow_sigmas(10)
    for seed in (0, 1):
        noise = np.random.default_rng(seed).standard_normal((1, n)).astype(np.float32)
        loop.ensure({"x": (1, n), "sigma": (1,)}, sigmas)
        x0 = loop.run(noise)
        ref = euler_sample(noise, lambda x, s, i: (-x * np.float32(s) + np.float32(0.25)).astype(np.float32), sigmas)
        np.testing.assert_array_equal(x0, ref)
    assert loop.captures == 1 and engine.enqueues == 1 + 10  # warm-up + the captured steps, replayed twice
    assert traffic.take()["d2h"] == {"denoise": 2 * 4 * n}
    loop.close()
    cuda.unload(engine.module)
    for b in buffers.values():
        cuda.free(b.ptr)
    cuda.host_free(ptr)
    cuda.destroy_stream(stream)
