"""One deserialized TensorRT engine and its execution context: I/O tensors by name, the largest shape of each
(inputs from the engine JSON's `profile`, outputs inferred by TensorRT at those shapes), shapes and addresses set
through trt_compat. Loading keeps host memory near the engines' size on a unified-memory Jetson: the engine file is
memory-mapped (no private heap copy), unmapped right after deserialisation, and the largest engine goes first.

Untested on hardware here (no GPU, no TensorRT on these machines); exercised by the recording fake in
tests/edge/test_tensorrt_contract.py."""
from __future__ import annotations

import gc
import logging
import mmap
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import trt_compat as compat
from .trt_compat import TensorType

if TYPE_CHECKING:  # typed by tensorrt-stubs in CI; TensorRT itself is imported lazily
    import tensorrt as trt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    is_input: bool
    dtype: TensorType
    max_shape: tuple[int, ...]


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        now = pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        now = float("nan")
    return now, peak


def load_order(engines: Path, components: list[str]) -> list[str]:
    """Largest engine file first: each deserialisation briefly needs its file's pages plus its device copy on top
    of the engines already resident, so the peak is lowest when the biggest transient comes while nothing else is
    loaded (about total + smallest, instead of total + largest)."""
    return sorted(components, key=lambda c: (engines / f"{c}.engine").stat().st_size, reverse=True)


def deserialize_file(runtime: trt.Runtime, path: Path) -> trt.ICudaEngine:
    with open(path, "rb") as f:
        try:
            blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise ConfigError(f"{path} is empty; rebuild it with `imagewam-edge build`") from None
        try:
            engine = compat.deserialize(runtime, blob)
        finally:
            blob.close()  # the mapping goes now, not when the engine goes
    gc.collect()
    if engine is None:
        raise ConfigError(f"TensorRT could not deserialize {path}; rebuild it on this device with "
                          "`imagewam-edge build`")
    return engine


class Engine:
    def __init__(self, trt_module: Any, runtime: trt.Runtime, component: str, path: Path, meta: dict):
        self.component = component
        self.engine: trt.ICudaEngine = deserialize_file(runtime, path)
        context: trt.IExecutionContext | None = self.engine.create_execution_context()
        if context is None:
            raise ConfigError(f"TensorRT could not create an execution context for {path} (out of device memory?)")
        self.context: trt.IExecutionContext = context
        profile = meta.get("profile", {})
        self.specs: dict[str, TensorSpec] = {}
        names = compat.io_names(self.engine)
        for name in names:
            if compat.is_input(trt_module, self.engine, name):
                self.specs[name] = TensorSpec(name, True, compat.engine_dtype(self.engine, name),
                                              self._max_input_shape(name, profile, path))
        for name in self.inputs:  # outputs' largest shapes: TensorRT infers them at the inputs' largest shapes
            compat.set_input_shape(self.context, name, self.specs[name].max_shape)
        for name in names:
            if name not in self.specs:
                self.specs[name] = TensorSpec(name, False, compat.engine_dtype(self.engine, name),
                                              compat.output_shape(self.context, name))
        self.shapes: dict[str, tuple[int, ...]] = {}  # the input shapes currently set

    def _max_input_shape(self, name: str, profile: dict, path: Path) -> tuple[int, ...]:
        if name in profile:
            return tuple(int(d) for d in profile[name][2])  # [min, opt, max] -> max
        shape = compat.dims(self.engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise ConfigError(f"{path.with_suffix('.json')} has no profile for the dynamic input {name!r}; rebuild "
                              "with `imagewam-edge build` (it writes the profile beside each engine)")
        return shape

    @property
    def inputs(self) -> list[str]:
        return [n for n, s in self.specs.items() if s.is_input]

    @property
    def outputs(self) -> list[str]:
        return [n for n, s in self.specs.items() if not s.is_input]

    def set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Set the input shapes that changed; returns every output's shape."""
        for name, shape in shapes.items():
            if self.shapes.get(name) != tuple(shape):
                compat.set_input_shape(self.context, name, tuple(shape))
                self.shapes[name] = tuple(shape)
        return {name: compat.output_shape(self.context, name) for name in self.outputs}

    def bind(self, name: str, ptr: int) -> None:
        compat.set_address(self.context, name, ptr)

    def enqueue(self, stream: Any) -> None:
        compat.enqueue(self.context, stream, self.component)

    def close(self) -> None:
        """Drop the context, then the engine (TensorRT frees them on the last reference)."""
        if hasattr(self, "context"):
            del self.context
        if hasattr(self, "engine"):
            del self.engine


def load_engines(trt_module: Any, runtime: trt.Runtime, engines: Path, components: list[str],
                 metas: dict[str, dict]) -> dict[str, Engine]:
    """Deserialize one engine at a time, largest first, logging host memory after each (see `load_order`)."""
    parts: dict[str, Engine] = {}
    for comp in load_order(engines, components):
        path = engines / f"{comp}.engine"
        parts[comp] = Engine(trt_module, runtime, comp, path, metas[comp])
        now, peak = rss_mib()
        log.info("loaded %s (%.1f MiB engine file): host RSS %.0f MiB, peak %.0f MiB", comp,
                 path.stat().st_size / 2**20, now, peak)
    return {comp: parts[comp] for comp in components}
