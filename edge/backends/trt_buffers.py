"""Device buffers of the TensorRT backend: one per tensor NAME, allocated once at the largest size any loaded
engine's shape profile allows, and shared by every engine that names the tensor (the vision encoder's
`image_tokens` output IS the prefill's `image_tokens` input; the prefill's `keys`/`values` outputs ARE the
denoise step's inputs). `DeviceTensor` is the handle the backend hands out for a tensor that stays on the device.

Exercised by the recording fake in tests/edge/test_tensorrt_contract.py; the pinned staging also ran once on an
H200 in tests/edge/test_tensorrt_cuda_gpu.py. Never run with TensorRT (none on these machines)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .trt_compat import TensorType


@dataclass
class DeviceBuffer:
    """`capacity` bytes at device address `ptr`; `generation` counts the writes by an engine, so a handle taken
    before the last write is recognised as stale; `shape` is the shape of the last tensor written into it."""

    name: str
    ptr: int
    capacity: int
    dtype: TensorType
    producer: str | None = None  # the component whose output this is (None: only ever an input)
    consumers: list[str] = field(default_factory=list)
    generation: int = 0
    shape: tuple[int, ...] = ()

    def check_fits(self, shape: tuple[int, ...], what: str) -> int:
        nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        if nbytes > self.capacity:
            raise ConfigError(f"{what}: {self.name} of shape {tuple(shape)} ({nbytes} bytes) exceeds the largest "
                              f"shape of the engines' profiles ({self.capacity} bytes); rebuild with wider ranges")
        return nbytes


class DeviceTensor:
    """A tensor that stays on the device: `shape`/`dtype` over a `DeviceBuffer`, valid until an engine writes the
    buffer again. `np.asarray(t)` downloads it (counted as device->host traffic of its producer); pass the tensor
    itself back to the backend to keep it on the device."""

    def __init__(self, buffer: DeviceBuffer, download: Callable[["DeviceTensor"], np.ndarray]):
        self.buffer, self._download = buffer, download
        self.shape = tuple(buffer.shape)
        self.generation = buffer.generation
        self.ptr = buffer.ptr
        self.dtype = buffer.dtype.numpy if buffer.dtype.numpy is not None else np.dtype(np.uint8)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * buffer.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def current(self) -> bool:
        return self.generation == self.buffer.generation

    def check_current(self, what: str) -> None:
        if not self.current:
            raise ConfigError(f"{what}: the device tensor {self.buffer.name!r} was overwritten by a later "
                              f"{self.buffer.producer} call; use the result of the latest call")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        self.check_current("reading a device tensor")
        arr = self._download(self)
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"DeviceTensor({self.buffer.name}, shape={self.shape}, {self.buffer.dtype.name}, ptr=0x{self.ptr:x})"


@dataclass
class Staging:
    """Pinned host memory for one tensor's uploads or downloads (allocated once, at the buffer's capacity)."""

    ptr: int
    view: np.ndarray  # uint8 [capacity]

    def put(self, arr: np.ndarray) -> int:
        """Copy a C-contiguous array into the pinned bytes; returns the byte count."""
        raw = arr.reshape(-1).view(np.uint8)  # [nbytes]
        self.view[: raw.size] = raw
        return int(raw.size)

    def get(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A fresh host array of `shape` from the first bytes (the staging buffer is reused by the next call)."""
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return self.view[:n].view(dtype).reshape(shape).copy()  # [n bytes] -> shape
