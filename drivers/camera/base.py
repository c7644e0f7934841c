"""Camera interface: `Frame`, intrinsics/extrinsics records, and a `Camera` base class with a capture thread.

Lifecycle: `connect()` starts a background capture thread; `read(timeout)` returns the next frame not returned
before (blocking); `read_latest(max_age)` returns the newest frame without waiting; `disconnect()` stops the
thread. Both read calls raise `CameraStalledError` when no fresh frame exists, never return stale data silently.

Two delivery modes:
- latest-only (live cameras, real-time simulation): the thread keeps only the newest frame, older ones are
  counted in `dropped` if nobody read them;
- keep-all (recordings played as fast as possible): frames go through a small bounded queue and the capture
  thread blocks until they are read, so no frame is dropped and order is preserved.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from drivers.errors import CameraError, CameraStalledError, RecordingEndedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one stream, as librealsense reports them."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str = "none"  # librealsense distortion model name, e.g. "brown_conrady", "inverse_brown_conrady"
    coeffs: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)

    def matrix(self) -> np.ndarray:
        """3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.ppx], [0.0, self.fy, self.ppy], [0.0, 0.0, 1.0]])

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "ppx": self.ppx,
                "ppy": self.ppy, "model": self.model, "coeffs": list(self.coeffs)}


@dataclass(frozen=True)
class Extrinsics:
    """Rigid transform from one stream to another: p_to = R @ p_from + t (metres)."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def to_dict(self) -> dict:
        return {"rotation": self.rotation.tolist(), "translation": self.translation.tolist()}


@dataclass
class Frame:
    """One capture. `depth` is aligned to `color` (same H, W) when both are present and alignment is on. A recording
    that holds one stream only (or streams that never pair) gives frames with the other one None."""

    color: Optional[np.ndarray]  # (H, W, 3) uint8 RGB; None only in a depth-only recording
    depth: Optional[np.ndarray]  # (H, W) uint16 in depth units (see the camera's depth_scale), or None
    timestamp: float  # time.monotonic() seconds when the frame reached this process
    frame_number: int
    serial: str
    device_timestamp_ms: float = float("nan")  # the camera's own clock, when known


class Camera:
    """Base class: subclasses implement `_open()`, `_grab(timeout_s) -> Frame | None` and `_close()`.

    `_grab` runs on the capture thread; returning None means "nothing yet" (the thread keeps trying until
    `stall_timeout_s` passes without a frame). Raising RecordingEndedError ends capture for good.
    """

    keep_all: bool = False  # True: bounded queue, no drops (recordings played as fast as possible)
    serial: str = ""

    def __init__(self, stall_timeout_s: float = 1.0, queue_size: int = 4):
        if not stall_timeout_s > 0:
            raise CameraError(f"stall_timeout_s must be > 0 seconds, got {stall_timeout_s!r}")
        self.stall_timeout_s = float(stall_timeout_s)
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._queue_size = int(queue_size)
        self._latest: Optional[Frame] = None
        self._last_returned = -1  # sequence number (count of delivered frames) of the last frame read
        self._delivered = 0
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._last_frame_time = 0.0
        self.dropped = 0

    # --- subclass hooks ---------------------------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self, timeout_s: float) -> Optional[Frame]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def capture_thread(self) -> Optional[threading.Thread]:
        """The thread that reads frames (the control loop raises its priority beside its own threads)."""
        return self._thread

    def connect(self) -> "Camera":
        if self.is_connected:
            return self
        self._open()
        self._stop.clear()
        self._error = None
        self._last_frame_time = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.serial or 'unknown'}", daemon=True)
        self._thread.start()
        return self

    def disconnect(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("camera %s: capture thread did not stop within 5 s", self.serial)
            self._thread = None
        try:
            self._close()
        except Exception as exc:  # closing must not mask the reason we are closing
            log.warning("camera %s: error while closing: %s", self.serial, exc)

    def reconnect(self) -> None:
        """Close and open again (a replugged camera, or a recording from its beginning)."""
        self.disconnect()
        with self._cond:
            self._queue.clear()
            self._latest = None
        self.connect()

    def __enter__(self) -> "Camera":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # --- capture thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._grab(min(0.1, self.stall_timeout_s))
            except BaseException as exc:  # handed to the reader, which raises it with context
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            if frame is None:
                continue
            with self._cond:
                if self.keep_all:
                    while len(self._queue) >= self._queue_size and not self._stop.is_set():
                        self._cond.wait(0.05)
                    self._queue.append(frame)
                else:
                    if self._latest is not None and self._delivered - 1 > self._last_returned:
                        self.dropped += 1
                self._latest = frame
                self._delivered += 1
                self._last_frame_time = time.monotonic()
                self._cond.notify_all()

    def _stalled(self, waited: float) -> CameraStalledError:
        if isinstance(self._error, RecordingEndedError):
            return self._error
        if self._error is not None:
            err = CameraStalledError(f"camera {self.serial}: capture stopped: {self._error}. "
                                     "Check the cable/USB port, then call reconnect().")
            err.__cause__ = self._error
            return err
        return CameraStalledError(
            f"camera {self.serial}: no new frame within {waited:.2f} s (last frame "
            f"{time.monotonic() - self._last_frame_time:.2f} s ago). The camera may be unplugged or starved of USB "
            "bandwidth: check `rs-enumerate-devices`, use a USB3 port, lower fps/resolution, then reconnect().")

    def read(self, timeout: Optional[float] = None) -> Frame:
        """Next frame not returned before, waiting up to `timeout` s (default: stall_timeout_s)."""
        if self._thread is None:
            raise CameraError(f"camera {self.serial}: read() before connect(); call connect() or use `with camera:`")
        timeout = self.stall_timeout_s if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.keep_all and self._queue:
                    frame = self._queue.popleft()
                    self._last_returned += 1
                    self._cond.notify_all()
                    return frame
                if not self.keep_all and self._latest is not None and self._delivered - 1 > self._last_returned:
                    self._last_returned = self._delivered - 1
                    return self._latest
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._error is not None:
                    raise self._stalled(timeout)
                self._cond.wait(remaining)

    def read_latest(self, max_age: float = 0.1) -> Frame:
        """Newest frame without waiting; CameraStalledError if it is older than `max_age` seconds."""
        if self._thread is None:
            raise CameraError(f"camera {self.serial}: read_latest() before connect(); call connect() first")
        with self._cond:
            if self.keep_all and self._queue:
                frame = self._queue[-1]
                self._last_returned += len(self._queue)
                self._queue.clear()
                self._cond.notify_all()
            else:
                frame = self._latest
            if frame is None or time.monotonic() - frame.timestamp > max_age:
                age = "no frame yet" if frame is None else f"newest is {time.monotonic() - frame.timestamp:.3f} s old"
                err = self._stalled(max_age)
                raise type(err)(f"camera {self.serial}: no frame younger than {max_age:.3f} s ({age}). {err}")
            self._last_returned = max(self._last_returned, self._delivered - 1)
            return frame


class CameraGroup:
    """Several cameras opened together; `read()` returns {serial: Frame}. Connect failures close the others."""

    def __init__(self, cameras: list):
        self.cameras = list(cameras)

    def connect(self) -> "CameraGroup":
        opened = []
        try:
            for cam in self.cameras:
                cam.connect()
                opened.append(cam)
        except BaseException:
            for cam in reversed(opened):
                cam.disconnect()
            raise
        return self

    def disconnect(self) -> None:
        for cam in self.cameras:
            cam.disconnect()

    def read(self, timeout: Optional[float] = None) -> dict:
        return {cam.serial: cam.read(timeout) for cam in self.cameras}

    def read_latest(self, max_age: float = 0.1) -> dict:
        return {cam.serial: cam.read_latest(max_age) for cam in self.cameras}

    def __enter__(self) -> "CameraGroup":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()
