"""RECORDING FAKES of TensorRT (10 and 11) and of cuda-python (cuda.bindings.runtime / driver / nvrtc), for the
contract test of OUR binding logic (tests/edge/test_tensorrt_contract.py). Neither library can run here (no GPU,
no TensorRT on these machines): these fakes imitate only the calls edge/backends/trt_*.py makes, with the same
names, argument orders and (error, value) result tuples as cuda-python, and record every call. They prove what the
backend asks the libraries to do (which buffer is bound to which tensor, which bytes are copied, what is captured
in the graph), not that TensorRT or CUDA behave like this; that needs `imagewam-edge verify` on a device.

Device memory is a dict of bytearrays at fake addresses; pinned host memory is real host memory (numpy arrays)
so that the backend's numpy views of it work. Stream capture records operations instead of running them; a graph
launch runs them in order. A fake engine's `execute_async_v3` reads its inputs from the fake device memory at the
addresses bound AT ENQUEUE TIME (as a captured TensorRT enqueue would) and writes its outputs with numpy."""
from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np

ALIGN = 256


class Err(int):
    """A CUDA/NVRTC result code with a `.name`, like cuda-python's enums (0 = success)."""

    @property
    def name(self) -> str:
        return "success" if self == 0 else f"error_{int(self)}"


OK = Err(0)


class FakeDeviceMemory:
    def __init__(self):
        self.blocks: dict[int, bytearray] = {}
        self.next = 0x7F00_0000_0000

    def alloc(self, n: int) -> int:
        ptr = self.next
        self.blocks[ptr] = bytearray(n)
        self.next += (n + ALIGN - 1) // ALIGN * ALIGN + ALIGN
        return ptr

    def free(self, ptr: int) -> None:
        del self.blocks[ptr]

    def _find(self, ptr: int, n: int) -> tuple[bytearray, int]:
        for base, block in self.blocks.items():
            if base <= ptr and ptr + n <= base + len(block):
                return block, ptr - base
        raise AssertionError(f"fake device access 0x{ptr:x}+{n} outside any allocation")

    def read(self, ptr: int, n: int) -> bytes:
        block, off = self._find(ptr, n)
        return bytes(block[off: off + n])

    def write(self, ptr: int, data: bytes) -> None:
        block, off = self._find(ptr, len(data))
        block[off: off + len(data)] = data

    def array(self, ptr: int, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.frombuffer(self.read(ptr, n), dtype=dtype).reshape(shape).copy()


class FakeStream:
    def __init__(self, handle: int):
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


@dataclass
class Call:
    name: str
    args: tuple


class FakeCudaWorld:
    """State shared by the three fake cuda-python modules and the fake TensorRT engines."""

    def __init__(self, compute_capability=(8, 7)):
        self.mem = FakeDeviceMemory()
        self.calls: list[Call] = []
        self.host: dict[int, np.ndarray] = {}
        self.capturing: dict[int, list[Callable[[], None]]] = {}
        self.cc = compute_capability
        self.kernel_sources: list[str] = []
        self.runtime, self.driver, self.nvrtc = FakeRuntime(self), FakeDriver(self), FakeNvrtc(self)

    def record(self, name: str, *args) -> None:
        self.calls.append(Call(name, args))

    def submit(self, stream, op: Callable[[], None]) -> None:
        """Run `op` now, or append it to the graph being captured on `stream`."""
        key = int(stream) if stream is not None else 0
        if key in self.capturing:
            self.capturing[key].append(op)
        else:
            op()

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


class FakeRuntime:
    """cuda.bindings.runtime, the calls trt_cuda.Cuda makes."""

    cudaStreamNonBlocking = 1
    cudaDeviceAttr = SimpleNamespace(cudaDevAttrComputeCapabilityMajor="major", cudaDevAttrComputeCapabilityMinor="minor")
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H",
                                     cudaMemcpyDeviceToDevice="D2D")
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread_local")

    def __init__(self, world: FakeCudaWorld):
        self.w = world
        self._streams = 0

    def cudaSetDevice(self, device):
        self.w.record("cudaSetDevice", device)
        return (OK,)

    def cudaDeviceGetAttribute(self, attr, device):
        return (OK, self.w.cc[0] if attr == "major" else self.w.cc[1])

    def cudaMalloc(self, n):
        ptr = self.w.mem.alloc(n)
        self.w.record("cudaMalloc", n, ptr)
        return (OK, ptr)

    def cudaFree(self, ptr):
        self.w.record("cudaFree", ptr)
        if ptr:
            self.w.mem.free(ptr)
        return (OK,)

    def cudaMallocHost(self, n):
        arr = np.zeros(n, np.uint8)
        ptr = arr.ctypes.data
        self.w.host[ptr] = arr
        self.w.record("cudaMallocHost", n, ptr)
        return (OK, ptr)

    def cudaFreeHost(self, ptr):
        self.w.record("cudaFreeHost", ptr)
        del self.w.host[ptr]
        return (OK,)

    def cudaMemGetInfo(self):
        return (OK, 6 << 30, 16 << 30)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.w.record("cudaMemcpyAsync", kind, dst, src, count)
        mem = self.w.mem

        def op():
            if kind == "H2D":
                mem.write(dst, ctypes.string_at(src, count))
            elif kind == "D2H":
                ctypes.memmove(dst, mem.read(src, count), count)
            else:
                mem.write(dst, mem.read(src, count))

        self.w.submit(stream, op)
        return (OK,)

    def cudaStreamCreateWithFlags(self, flags):
        self._streams += 1
        self.w.record("cudaStreamCreateWithFlags", flags)
        return (OK, FakeStream(0x5000 + self._streams))

    def cudaStreamSynchronize(self, stream):
        if int(stream) in self.w.capturing:
            raise AssertionError("cudaStreamSynchronize during capture is illegal")
        return (OK,)

    def cudaStreamDestroy(self, stream):
        self.w.record("cudaStreamDestroy", int(stream))
        return (OK,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.w.record("cudaStreamBeginCapture", int(stream), mode)
        self.w.capturing[int(stream)] = []
        return (OK,)

    def cudaStreamEndCapture(self, stream):
        self.w.record("cudaStreamEndCapture", int(stream))
        return (OK, SimpleNamespace(ops=self.w.capturing.pop(int(stream))))

    def cudaGraphInstantiate(self, graph, flags):
        self.w.record("cudaGraphInstantiate", len(graph.ops))
        return (OK, SimpleNamespace(ops=list(graph.ops)))

    def cudaGraphLaunch(self, graph_exec, stream):
        self.w.record("cudaGraphLaunch", int(stream))
        for op in graph_exec.ops:
            op()
        return (OK,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.w.record("cudaGraphExecDestroy")
        return (OK,)

    def cudaGraphDestroy(self, graph):
        self.w.record("cudaGraphDestroy")
        return (OK,)


def _decode(raw: np.ndarray, kind: str) -> np.ndarray:
    if kind == "euler_f32":
        return raw.view(np.float32)
    if kind == "euler_f16":
        return raw.view(np.float16).astype(np.float32)
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # bf16


class FakeDriver:
    """cuda.bindings.driver: module load and the Euler kernel, executed in numpy with the kernel's rounding
    (multiply rounded to float32, then add rounded to float32)."""

    def __init__(self, world: FakeCudaWorld):
        self.w = world

    def cuModuleLoadData(self, ptx):
        self.w.record("cuModuleLoadData", len(ptx))
        return (OK, "module")

    def cuModuleGetFunction(self, module, name):
        return (OK, name.decode())

    def cuModuleUnload(self, module):
        self.w.record("cuModuleUnload")
        return (OK,)

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra):
        (x_ptr, v_ptr, dt, n), types = params
        self.w.record("cuLaunchKernel", f, x_ptr, v_ptr, dt, n)
        assert gx * bx >= n and types[2] is ctypes.c_float
        mem, vsize = self.w.mem, 4 if f == "euler_f32" else 2

        def op():
            x = mem.array(x_ptr, (n,), np.float32)
            v = _decode(mem.array(v_ptr, (n * vsize,), np.uint8), f)
            x += v * np.float32(dt)
            mem.write(x_ptr, x.tobytes())

        self.w.submit(stream, op)
        return (OK,)


class FakeNvrtc:
    def __init__(self, world: FakeCudaWorld):
        self.w = world

    def nvrtcCreateProgram(self, src, name, n, headers, names):
        self.w.kernel_sources.append(src.decode())
        return (OK, "prog")

    def nvrtcCompileProgram(self, prog, n, opts):
        self.w.record("nvrtcCompileProgram", tuple(opts))
        return (OK,)

    def nvrtcGetPTXSize(self, prog):
        return (OK, 16)

    def nvrtcGetPTX(self, prog, buf):
        return (OK,)

    def nvrtcGetProgramLogSize(self, prog):
        return (OK, 1)

    def nvrtcGetProgramLog(self, prog, buf):
        return (OK,)

    def nvrtcDestroyProgram(self, prog):
        return (OK,)


# ---- TensorRT ------------------------------------------------------------------------------------------------


class _Enum:
    def __init__(self, name: str, value: int):
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<{self.name}: {self.value}>"


NP = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32}
try:
    import ml_dtypes

    NP["BF16"] = ml_dtypes.bfloat16
except ImportError:  # the bf16 case of the contract test is skipped then
    pass


def fake_tensorrt(version: str, world: FakeCudaWorld, models: dict[str, dict], strongly_typed_flag: bool = True):
    """A fake `tensorrt` module. Engine files are JSON: {"component", "tensors": [{name, mode, dtype, shape, range}]}.
    `models[component]`: {"compute": f(inputs: dict of np arrays) -> dict of np arrays (the engine's numpy
    semantics), "out_shapes": {output: f(input shapes) -> shape}}.
    TensorRT 11 removed BuilderFlag.FP16/INT8/... (the fake has no BuilderFlag precision members at all on 11)."""
    trt = SimpleNamespace(__version__=version)
    trt.TensorIOMode = SimpleNamespace(INPUT=_Enum("INPUT", 1), OUTPUT=_Enum("OUTPUT", 2))
    trt.DataType = SimpleNamespace(**{n: _Enum(n, i) for i, n in enumerate(["FLOAT", "HALF", "BF16", "INT32", "INT64"])})
    flags = {"STRONGLY_TYPED": _Enum("STRONGLY_TYPED", 1)} if strongly_typed_flag else {}
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(**flags)
    trt.Logger = type("Logger", (), {"WARNING": "warning", "__init__": lambda self, level=None: None})
    trt.deserialized: list[dict] = []
    trt.contexts: list[FakeContext] = []

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            data = bytes(blob)  # read while mapped; the backend must close the mapping right after
            trt.deserialized.append({"blob": blob, "nbytes": len(data)})
            return FakeEngine(trt, world, json.loads(data), models)

    trt.Runtime = Runtime
    return trt


class FakeEngine:
    def __init__(self, trt, world, spec: dict, models: dict):
        self.trt, self.world, self.spec = trt, world, spec
        self.model = models[spec["component"]]
        self.tensors = {t["name"]: t for t in spec["tensors"]}
        self.names = [t["name"] for t in spec["tensors"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if self.tensors[name]["mode"] == "in" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return getattr(self.trt.DataType, self.tensors[name]["dtype"])

    def get_tensor_shape(self, name):
        return tuple(self.tensors[name]["shape"])

    def create_execution_context(self):
        ctx = FakeContext(self)
        self.trt.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.component = engine.spec["component"]
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.bind_log: list[tuple[str, int]] = []
        self.enqueues = 0
        self.seen_sigma: list[float] = []

    def set_input_shape(self, name, shape):
        t = self.engine.tensors[name]
        lo, hi = t["range"]
        if len(shape) != len(t["shape"]) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        t = self.engine.tensors[name]
        if t["mode"] == "in":
            return self.shapes.get(name, tuple(t["shape"]))
        if any(n not in self.shapes for n, u in self.engine.tensors.items() if u["mode"] == "in"):
            return tuple(t["shape"])  # -1 where unknown, as TensorRT reports before every input shape is set
        return tuple(self.engine.model["out_shapes"][name](self.shapes))

    def set_tensor_address(self, name, ptr):
        if name not in self.engine.tensors:
            return False
        self.addresses[name] = int(ptr)
        self.bind_log.append((name, int(ptr)))
        return True

    def execute_async_v3(self, stream):
        self.enqueues += 1
        addresses, shapes = dict(self.addresses), dict(self.shapes)  # what a captured enqueue bakes in
        mem = self.engine.world.mem
        self.engine.world.record("execute_async_v3", self.component, addresses)

        def op():
            ins = {n: mem.array(addresses[n], shapes[n], NP[self.engine.tensors[n]["dtype"]])
                   for n, t in self.engine.tensors.items() if t["mode"] == "in"}
            if "sigma" in ins:
                self.seen_sigma.append(float(ins["sigma"][0]))
            outs = self.engine.model["compute"](ins)
            for n, arr in outs.items():
                mem.write(addresses[n], np.ascontiguousarray(arr, NP[self.engine.tensors[n]["dtype"]]).tobytes())

        self.engine.world.submit(stream, op)
        return True
