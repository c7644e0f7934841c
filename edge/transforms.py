"""Observation and action transforms (numpy + Pillow; no torch): camera canvas composition, pixel scaling and
the embodiment presets of the official evaluations (LIBERO, RoboTwin)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class CameraSlot:
    name: str
    x: int  # top-left corner in the canvas, pixels
    y: int
    width: int
    height: int
    rotate180: bool = False
    fit: str = "crop"  # "crop": scale to cover then center-crop (LIBERO); "stretch": plain resize (RoboTwin)


@dataclass(frozen=True)
class CanvasPreset:
    name: str
    height: int
    width: int
    slots: tuple[CameraSlot, ...]

    def __post_init__(self):
        if self.height % 16 or self.width % 16:
            raise ConfigError(f"canvas {self.name}: {self.height}x{self.width} must be multiples of 16 (one token per 16x16 px)")

    @property
    def token_grid(self) -> tuple[int, int]:
        return self.height // 16, self.width // 16


CANVASES = {
    # agentview + wrist, each rotated 180 deg, 224x224, side by side -> 224x448 (392 tokens)
    "libero": CanvasPreset("libero", 224, 448, (CameraSlot("agentview", 0, 0, 224, 224, True),
                                                CameraSlot("wrist", 224, 0, 224, 224, True))),
    # cam_high 192x256 above the two wrists 96x128 -> 288x256
    "robotwin": CanvasPreset("robotwin", 288, 256, (CameraSlot("cam_high", 0, 0, 256, 192, fit="stretch"),
                                                    CameraSlot("left_wrist", 0, 192, 128, 96, fit="stretch"),
                                                    CameraSlot("right_wrist", 128, 192, 128, 96, fit="stretch"))),
    # one camera, 224x224 (196 tokens): SO-100/101-style single-camera robots
    "single": CanvasPreset("single", 224, 224, (CameraSlot("main", 0, 0, 224, 224),)),
    # small single-camera canvas for the simulated demo
    "sim": CanvasPreset("sim", 64, 64, (CameraSlot("main", 0, 0, 64, 64),)),
}


def get_canvas(name: str) -> CanvasPreset:
    try:
        return CANVASES[name]
    except KeyError:
        raise ConfigError(f"unknown canvas preset {name!r}; choose one of {sorted(CANVASES)}") from None


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))


def fit_image(img: np.ndarray, slot: CameraSlot) -> np.ndarray:
    """HxWx3 uint8 -> slot.height x slot.width x 3 uint8."""
    img = np.ascontiguousarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"camera {slot.name}: expected an HxWx3 uint8 RGB image, got {img.shape} {img.dtype}")
    if slot.rotate180:
        img = np.ascontiguousarray(img[::-1, ::-1])
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (slot.height, slot.width):
        return img
    if slot.fit == "stretch":
        return _resize(img, slot.width, slot.height)
    scale = max(slot.width / src_w, slot.height / src_h)
    new_w, new_h = max(slot.width, round(src_w * scale)), max(slot.height, round(src_h * scale))
    img = _resize(img, new_w, new_h)
    top, left = (new_h - slot.height) // 2, (new_w - slot.width) // 2
    return img[top : top + slot.height, left : left + slot.width]


def compose_canvas(images: list[np.ndarray], preset: CanvasPreset) -> np.ndarray:
    """One image per slot, in slot order -> canvas HxWx3 uint8."""
    if len(images) != len(preset.slots):
        raise ConfigError(f"canvas {preset.name} takes {len(preset.slots)} camera image(s) "
                          f"({', '.join(s.name for s in preset.slots)}), got {len(images)}")
    canvas = np.zeros((preset.height, preset.width, 3), dtype=np.uint8)
    for img, slot in zip(images, preset.slots):
        canvas[slot.y : slot.y + slot.height, slot.x : slot.x + slot.width] = fit_image(img, slot)
    return canvas


def to_model_pixels(canvas: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> [1, 3, H, W] float32 in [-1, 1]."""
    return (canvas.astype(np.float32).transpose(2, 0, 1)[None] * (2.0 / 255.0) - 1.0).astype(np.float32)


def libero_gripper(actions: np.ndarray) -> np.ndarray:
    """Official LIBERO post-processing of the last (gripper) dimension: 2g-1, sign flip, binarise."""
    out = np.array(actions, dtype=np.float32, copy=True)
    out[..., -1] = np.sign(-(out[..., -1] * 2.0 - 1.0))
    return out


def as_float32(actions: np.ndarray) -> np.ndarray:
    return np.asarray(actions, dtype=np.float32)


@dataclass(frozen=True)
class PostProcess:
    """An embodiment's post-processing of un-normalised actions (what the robot receives). `binary` names the
    dimensions it binarises (negative: counted from the end): the quantization gate compares them by sign, since a
    flipped gripper is wrong whatever the size of the normalised error behind it."""

    fn: Callable[[np.ndarray], np.ndarray]
    binary: tuple[int, ...] = ()

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        return self.fn(actions)

    def binary_dims(self, action_dim: int) -> tuple[int, ...]:
        return tuple(sorted({d % action_dim for d in self.binary}))


POSTPROCESS = {"none": PostProcess(as_float32), "libero-gripper": PostProcess(libero_gripper, binary=(-1,))}


@dataclass(frozen=True)
class Embodiment:
    name: str
    canvas: str
    norm_mode: str  # "min/max" | "z-score"
    postprocess: str  # key of POSTPROCESS
    replan: int  # actions executed per chunk before replanning (official eval configs)
    horizon: int = 16
    extra: dict = field(default_factory=dict)


EMBODIMENTS = {
    "libero": Embodiment("libero", "libero", "min/max", "libero-gripper", replan=10),
    "robotwin": Embodiment("robotwin", "robotwin", "z-score", "none", replan=8),
    "sim": Embodiment("sim", "sim", "min/max", "none", replan=8),
}


def get_embodiment(name: str) -> Embodiment:
    try:
        return EMBODIMENTS[name]
    except KeyError:
        raise ConfigError(f"unknown embodiment {name!r}; choose one of {sorted(EMBODIMENTS)}") from None
