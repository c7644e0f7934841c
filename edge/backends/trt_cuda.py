"""The CUDA calls of the TensorRT backend, through cuda-python (imported lazily; it installs and imports on a CPU
machine, unlike pycuda, but needs a driver and a GPU to do anything): the runtime API for memory, pinned host
memory, copies, streams and CUDA graphs; NVRTC and the driver API for the one small kernel (the Euler update).
Every result is checked here and turned into `CudaError` with the call's name.

Exercised in CI only by the recording fake in tests/edge/test_tensorrt_contract.py (it stands in for
cuda.bindings.{runtime,driver,nvrtc}); these calls ran once on a real GPU (H200, cuda-bindings 13.3.1) in
tests/edge/test_tensorrt_cuda_gpu.py with a stand-in for the engine. Never run on a Jetson, nor next to TensorRT."""
from __future__ import annotations

import ctypes
from typing import Any, Sequence

import numpy as np

from ..errors import ImageWAMEdgeError, MissingDependencyError


class CudaError(ImageWAMEdgeError, RuntimeError):
    """A CUDA call failed; the message names the call and the CUDA error."""


def load_cuda() -> "Cuda":
    try:
        from cuda.bindings import driver, nvrtc, runtime
    except ImportError:
        try:  # cuda-python < 12.8 spells the modules cuda.cudart / cuda.cuda / cuda.nvrtc
            from cuda import cuda as driver
            from cuda import cudart as runtime
            from cuda import nvrtc
        except ImportError as exc:
            raise MissingDependencyError(
                f"the TensorRT backend needs cuda-python ({exc}): pip install 'imagewam-edge[jetson]' (or "
                "`pip install cuda-python` matching the CUDA of this device); on a CPU machine use "
                "--backend onnxruntime") from exc
    try:
        return Cuda(runtime, driver, nvrtc)
    except CudaError as exc:
        raise CudaError(f"no usable CUDA device ({exc}). In a container run it with --runtime nvidia (Jetson) or "
                        "--gpus all; on a CPU machine use --backend onnxruntime") from exc


def _code(result: Any) -> int:
    return int(result[0] if isinstance(result, tuple) else result)


class Cuda:
    """Thin, checked wrappers; handles are what cuda-python returns (ints for pointers)."""

    def __init__(self, runtime: Any, driver: Any, nvrtc: Any, device: int = 0):
        self.rt, self.drv, self.nvrtc = runtime, driver, nvrtc
        self.device = device
        self.call("cudaSetDevice", self.rt.cudaSetDevice(device))
        self.call("cudaFree", self.rt.cudaFree(0))  # creates the primary context TensorRT and the driver calls share

    def call(self, what: str, result: Any) -> Any:
        """Check a cuda-python result tuple (error, *values); returns the value(s)."""
        code = _code(result)
        if code:
            raise CudaError(f"{what} failed: CUDA error {code} ({self._name(result)}); check `imagewam-edge doctor` "
                            "(driver, free memory) and the TensorRT log")
        values = result[1:] if isinstance(result, tuple) else ()
        return values[0] if len(values) == 1 else (values or None)

    @staticmethod
    def _name(result: Any) -> str:
        err = result[0] if isinstance(result, tuple) else result
        return str(getattr(err, "name", err))

    # device and pinned host memory
    def compute_capability(self) -> tuple[int, int]:
        attr = self.rt.cudaDeviceAttr
        major = self.call("cudaDeviceGetAttribute", self.rt.cudaDeviceGetAttribute(
            attr.cudaDevAttrComputeCapabilityMajor, self.device))
        minor = self.call("cudaDeviceGetAttribute", self.rt.cudaDeviceGetAttribute(
            attr.cudaDevAttrComputeCapabilityMinor, self.device))
        return int(major), int(minor)

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", self.rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self.call("cudaFree", self.rt.cudaFree(ptr))

    def host_alloc(self, nbytes: int) -> tuple[int, np.ndarray]:
        """Pinned (page-locked) host memory and a uint8 numpy view of it."""
        n = max(int(nbytes), 1)
        ptr = int(self.call("cudaMallocHost", self.rt.cudaMallocHost(n)))
        return ptr, np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))

    def host_free(self, ptr: int) -> None:
        self.call("cudaFreeHost", self.rt.cudaFreeHost(ptr))

    def mem_free_bytes(self) -> tuple[int, int]:
        free, total = self.call("cudaMemGetInfo", self.rt.cudaMemGetInfo())
        return int(free), int(total)

    # copies (asynchronous on `stream`)
    def _copy(self, dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
        if nbytes:
            self.call(f"cudaMemcpyAsync({kind})", self.rt.cudaMemcpyAsync(
                dst, src, int(nbytes), getattr(self.rt.cudaMemcpyKind, kind), stream))

    def h2d(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyHostToDevice", stream)

    def d2h(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyDeviceToHost", stream)

    def d2d(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyDeviceToDevice", stream)

    # streams and graphs
    def stream(self) -> Any:
        return self.call("cudaStreamCreateWithFlags", self.rt.cudaStreamCreateWithFlags(
            self.rt.cudaStreamNonBlocking))

    def sync(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def destroy_stream(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.call("cudaStreamBeginCapture", self.rt.cudaStreamBeginCapture(stream, mode))

    def end_capture(self, stream: Any) -> Any:
        return self.call("cudaStreamEndCapture", self.rt.cudaStreamEndCapture(stream))

    def instantiate(self, graph: Any) -> Any:
        return self.call("cudaGraphInstantiate", self.rt.cudaGraphInstantiate(graph, 0))

    def launch_graph(self, graph_exec: Any, stream: Any) -> None:
        self.call("cudaGraphLaunch", self.rt.cudaGraphLaunch(graph_exec, stream))

    def destroy_graph(self, graph: Any, graph_exec: Any) -> None:
        if graph_exec is not None:
            self.call("cudaGraphExecDestroy", self.rt.cudaGraphExecDestroy(graph_exec))
        if graph is not None:
            self.call("cudaGraphDestroy", self.rt.cudaGraphDestroy(graph))

    # one small kernel: NVRTC -> PTX -> driver module
    def compile(self, source: str, names: Sequence[str]) -> tuple[Any, dict[str, Any]]:
        """Compile `source` for this GPU; returns (module, {name: function})."""
        major, minor = self.compute_capability()
        prog = self.call("nvrtcCreateProgram", self.nvrtc.nvrtcCreateProgram(
            source.encode(), b"imagewam_edge.cu", 0, [], []))
        try:
            opts = [f"--gpu-architecture=compute_{major}{minor}".encode(), b"--fmad=false"]
            result = self.nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
            if _code(result):
                size = self.call("nvrtcGetProgramLogSize", self.nvrtc.nvrtcGetProgramLogSize(prog))
                log = b" " * int(size)
                self.call("nvrtcGetProgramLog", self.nvrtc.nvrtcGetProgramLog(prog, log))
                raise CudaError(f"NVRTC could not compile the Euler kernel: {log.decode(errors='replace')}")
            size = self.call("nvrtcGetPTXSize", self.nvrtc.nvrtcGetPTXSize(prog))
            ptx = b" " * int(size)
            self.call("nvrtcGetPTX", self.nvrtc.nvrtcGetPTX(prog, ptx))
        finally:
            self.call("nvrtcDestroyProgram", self.nvrtc.nvrtcDestroyProgram(prog))
        module = self.call("cuModuleLoadData", self.drv.cuModuleLoadData(ptx))
        return module, {n: self.call("cuModuleGetFunction", self.drv.cuModuleGetFunction(module, n.encode()))
                        for n in names}

    def unload(self, module: Any) -> None:
        self.call("cuModuleUnload", self.drv.cuModuleUnload(module))

    def launch_kernel(self, function: Any, n: int, args: tuple, types: tuple, stream: Any, block: int = 128) -> None:
        """1-D launch over `n` elements; `args`/`types`: cuda-python's (values, ctypes types) kernel parameters."""
        grid = (int(n) + block - 1) // block
        self.call("cuLaunchKernel", self.drv.cuLaunchKernel(
            function, grid, 1, 1, block, 1, 1, 0, int(stream), (args, types), 0))
