"""Simulated camera: a deterministic moving scene rendered in pure numpy, behind the same `Camera` interface.

The scene (seeded): a vertical colour gradient, a checkered floor band, and coloured discs and boxes moving on
Lissajous paths. Depth (uint16 millimetres, depth_scale 0.001) is a tilted plane with the shapes in front of it.
`render(config, n)` is a pure function of (config, frame index), so two runs with the same seed give identical
frames, and frames change over time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.camera.base import Camera, Frame, Intrinsics
from drivers.camera.pacing import FramePacer
from drivers.errors import ConfigError
from edge.strict import StrictConfig


@dataclass(frozen=True)
class SimCameraConfig(StrictConfig):
    width: int = 320
    height: int = 240
    fps: float = 30.0
    depth: bool = True
    seed: int = 0
    n_shapes: int = 4
    serial: str = "sim-0"
    real_time: bool = True  # False: frames as fast as they are read, none dropped (tests, offline replay)
    stall_timeout_s: float = 1.0

    def __post_init__(self):
        for name in ("width", "height", "n_shapes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "n_shapes" else 8):
                raise ConfigError(f"SimCameraConfig.{name} must be an integer >= {0 if name == 'n_shapes' else 8}, got {value!r}")
        if not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 1000):
            raise ConfigError(f"SimCameraConfig.fps must be in (0, 1000], got {self.fps!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"SimCameraConfig.seed must be an integer, got {self.seed!r}")



def _scene(config: SimCameraConfig) -> dict:
    rng = np.random.default_rng(config.seed)
    n = config.n_shapes
    return {
        "colors": rng.integers(40, 256, size=(n, 3)).astype(np.uint8),
        "radius": rng.uniform(0.06, 0.14, size=n),
        "freq": rng.uniform(0.1, 0.5, size=(n, 2)),
        "phase": rng.uniform(0, 2 * np.pi, size=(n, 2)),
        "depth_mm": rng.uniform(400, 900, size=n),
        "box": rng.random(n) < 0.5,
        "top": rng.integers(0, 256, size=3), "bottom": rng.integers(0, 256, size=3),
    }


_SCENES: dict = {}
_BASES: dict = {}


def render(config: SimCameraConfig, n: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Frame `n` of the scene: color (H, W, 3) uint8 RGB and depth (H, W) uint16 mm (or None)."""
    key = (config.seed, config.n_shapes)
    scene = _SCENES.get(key)
    if scene is None:
        scene = _SCENES[key] = _scene(config)
    h, w = config.height, config.width
    t = n / float(config.fps)
    base = _BASES.get((key, h, w))
    if base is None:
        v = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]  # (H, 1, 1)
        grad = np.broadcast_to(scene["top"] * (1 - v) + scene["bottom"] * v, (h, w, 3)).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
        plane = (1500.0 - 600.0 * (yy / h)).astype(np.float32)  # tilted plane, nearer at the bottom
        base = _BASES[(key, h, w)] = (grad, yy, xx, plane)
    grad, yy, xx, plane = base
    color = grad.copy()
    # checkered floor in the lower quarter, scrolling with time
    y0 = int(np.ceil(0.75 * h))
    checker = (((xx[y0:] + 20.0 * t) // 16) + (yy[y0:] // 16)) % 2 == 1
    color[y0:][checker] *= 0.6
    depth = plane.copy() if config.depth else None
    scale = float(min(h, w))
    for i in range(config.n_shapes):
        cx = w * (0.5 + 0.35 * np.sin(2 * np.pi * scene["freq"][i, 0] * t + scene["phase"][i, 0]))
        cy = h * (0.45 + 0.3 * np.sin(2 * np.pi * scene["freq"][i, 1] * t + scene["phase"][i, 1]))
        r = scene["radius"][i] * scale
        ys = slice(max(0, int(cy - r) - 1), min(h, int(cy + r) + 2))  # bounding box only
        xs = slice(max(0, int(cx - r) - 1), min(w, int(cx + r) + 2))
        bx, by = xx[ys, xs], yy[ys, xs]
        if scene["box"][i]:
            mask = (np.abs(bx - cx) <= r) & (np.abs(by - cy) <= r)
        else:
            mask = (bx - cx) ** 2 + (by - cy) ** 2 <= r * r
        color[ys, xs][mask] = scene["colors"][i]
        if depth is not None:
            sub = depth[ys, xs]
            sub[mask] = np.minimum(sub[mask], scene["depth_mm"][i])
    color_u8 = np.clip(color, 0, 255).astype(np.uint8)
    depth_u16 = None if depth is None else depth.astype(np.uint16)
    return color_u8, depth_u16


class SimCamera(Camera):
    """A camera that renders `render(config, n)`; paced at `fps` in real time, or on demand (no drops)."""

    depth_scale = 0.001  # metres per depth unit

    def __init__(self, config: Optional[SimCameraConfig] = None):
        self.config = config or SimCameraConfig()
        super().__init__(stall_timeout_s=self.config.stall_timeout_s)
        self.keep_all = not self.config.real_time
        self.serial = self.config.serial
        self._n = 0
        self._pacer = FramePacer(self.config.fps)

    @property
    def intrinsics(self) -> Intrinsics:
        c = self.config
        f = 0.8 * c.width  # ~64 degree horizontal field of view
        return Intrinsics(c.width, c.height, f, f, (c.width - 1) / 2.0, (c.height - 1) / 2.0)

    def _open(self) -> None:
        self._n = 0
        self._pacer.start()

    def _grab(self, timeout_s: float) -> Optional[Frame]:
        if self.config.real_time:
            missed = self._pacer.wait(timeout_s)
            if missed is None:
                return None
            self._n += missed
        color, depth = render(self.config, self._n)
        frame = Frame(color=color, depth=depth, timestamp=time.monotonic(), frame_number=self._n,
                      serial=self.serial, device_timestamp_ms=1000.0 * self._n / self.config.fps)
        self._n += 1
        return frame

    def _close(self) -> None:
        pass
