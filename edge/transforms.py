"""Observation and action transforms (numpy + Pillow; no torch): camera canvas composition, pixel scaling, the
embodiment presets of the official evaluations (LIBERO, RoboTwin) and the robot's joint transforms around a policy
(JointMap, RobotPolicy: joint state in, joint commands in robot units out)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import ConfigError, PolicyOutputError
from .strict import FieldError, build, setting


@dataclass(frozen=True)
class CameraSlot:
    name: str
    x: int = setting(minimum=0)  # top-left corner in the canvas, pixels
    y: int = setting(minimum=0)
    width: int = setting(minimum=1)
    height: int = setting(minimum=1)
    rotate180: bool = False
    fit: str = "crop"  # "crop": scale to cover then center-crop (LIBERO); "stretch": plain resize (RoboTwin)

    def __post_init__(self):
        if self.fit not in ("crop", "stretch"):
            raise FieldError(self, "fit", f"{self.fit!r} must be crop or stretch")


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


@dataclass(frozen=True)
class _CanvasLayout:
    """A custom canvas as written (train_config.yaml `edge.canvas`, policy.json `canvas`)."""

    height: int = setting(example="224")
    width: int = setting(example="448")
    slots: tuple[CameraSlot, ...] = setting(example="[{name: front, x: 0, y: 0, width: 224, height: 224}]")
    name: str = "custom"


def canvas_from_dict(d: dict, where: str = "canvas") -> CanvasPreset:
    """A custom camera layout: {"height", "width", "slots": [{"name", "x", "y", "width", "height", "rotate180"
    (default false), "fit" ("crop" | "stretch", default crop)}, ...]} (optional "name"). Slots must lie inside the
    canvas, not overlap and have distinct names; sizes are multiples of 16 (one token per 16x16 px)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a canvas is a preset name ({sorted(CANVASES)}) or a mapping with height, "
                          f"width and slots, got {type(d).__name__}")
    layout = build(_CanvasLayout, d, where)
    made = list(layout.slots)
    if not made:
        raise ConfigError(f"{where}: `slots` must be a non-empty list of camera slots")
    try:
        canvas = CanvasPreset(layout.name, layout.height, layout.width, layout.slots)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    names = [s.name for s in made]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: slot names must be distinct, got {names}")
    for s in made:
        if s.x + s.width > canvas.width or s.y + s.height > canvas.height:
            raise ConfigError(f"{where}: slot {s.name!r} ({s.x},{s.y} {s.width}x{s.height}) reaches outside the "
                              f"{canvas.width}x{canvas.height} canvas")
    for i, a in enumerate(made):
        for b in made[i + 1 :]:
            if a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height:
                raise ConfigError(f"{where}: slots {a.name!r} and {b.name!r} overlap")
    return canvas


def get_canvas(name) -> CanvasPreset:
    """A preset by name, or a custom layout given as a mapping (see canvas_from_dict)."""
    if isinstance(name, dict):
        return canvas_from_dict(name)
    try:
        return CANVASES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown canvas preset {name!r}; choose one of {sorted(CANVASES)} or declare the "
                          "layout: {height, width, slots: [{name, x, y, width, height, rotate180, fit}]}") from None


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


ACTION_MODES = ("absolute", "delta")


@dataclass(frozen=True)
class JointMap:
    """The robot side of a policy, as the run config's `policy` section declares it: which arm joints form the
    policy's state (`state_indices`), which action dimension drives each joint (`action_indices`, one per joint in
    arm order, the arms as listed), each joint's scale and offset from the policy's action units to the robot's
    (`action_scale`, `action_offset`: scalars or one per joint; e.g. a LIBERO gripper of -1 open .. +1 closed onto a
    gripper joint of 0 open .. 1 closed: scale 0.5, offset 0.5) and whether actions are absolute targets or deltas
    added to the joints the observation saw (`action_mode`).

    `state(q)` is the input transform, `commands(actions, q)` the output transform that follows the policy's own
    post-processing (un-normalisation, the embodiment's gripper): joint commands in robot units (radians, grippers
    0..1), checked finite here, once; the control loop only enforces the arm's safety limits on them."""

    n_joints: int
    state_dim: int
    action_dim: int
    state_indices: Optional[tuple] = None  # arm joints -> policy state (None: all, in order)
    action_indices: Optional[tuple] = None  # action dims -> joints in arm order (None: all, in order)
    mode: str = "absolute"
    scale: object = 1.0  # a number or one per joint
    offset: object = 0.0
    source: str = field(default="run config", compare=False)  # names the config file in every complaint

    def __post_init__(self):
        n, src = self.n_joints, self.source
        if self.mode not in ACTION_MODES:
            raise ConfigError(f"{src}: field `policy.action_mode` must be one of {list(ACTION_MODES)}, got "
                              f"{self.mode!r}")
        si, ai = self.state_indices, self.action_indices
        if (len(si) if si else n) != self.state_dim or (si and not all(0 <= i < n for i in si)):
            raise ConfigError(f"{src}: field `policy.state_indices`: the model takes a state of {self.state_dim} "
                              f"values but the arms give {n} joints; list which joints form the state (indices < {n})")
        if (len(ai) if ai else self.action_dim) != n or (ai and not all(0 <= i < self.action_dim for i in ai)):
            raise ConfigError(f"{src}: field `policy.action_indices`: the model outputs {self.action_dim} action dims "
                              f"but the arms have {n} joints; list one action index (< {self.action_dim}) per joint")
        for name in ("scale", "offset"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != n) or not np.all(np.isfinite(v)):
                raise ConfigError(f"{src}: field `policy.action_{name}` must be a finite number or a list of {n} "
                                  f"(one per joint, arms in order), got {getattr(self, name)!r}")
            object.__setattr__(self, f"_{name}", np.broadcast_to(v, (n,)).copy())

    def state(self, q) -> np.ndarray:
        """Joint vector [J] (arm order) -> policy state [state_dim]."""
        q = np.asarray(q, dtype=np.float64)
        return q if self.state_indices is None else q[list(self.state_indices)]

    def commands(self, actions, q_obs) -> np.ndarray:
        """Post-processed policy actions [H, action_dim] -> joint commands [H, J] in robot units:
        scale * actions[:, action_indices] + offset (plus the observed joints `q_obs` [J] in delta mode).
        PolicyOutputError for a chunk of the wrong shape or with a non-finite value."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.action_dim:
            raise PolicyOutputError(f"the policy returned actions of shape {a.shape}; expected [horizon, "
                                    f"{self.action_dim}] (its spec's action_dim)")
        bad = np.argwhere(~np.isfinite(a))
        if bad.size:
            step, dim = (int(x) for x in bad[0])
            raise PolicyOutputError(f"the policy returned non-finite actions ({len(bad)} value(s), first "
                                    f"{a[step, dim]} at step {step}, dim {dim}); nothing of this chunk is sent. A "
                                    "NaN from a finite observation points to the engines (rebuild or re-verify "
                                    "them) or to dataset_stats.json")
        a = a if self.action_indices is None else a[:, list(self.action_indices)]  # [H, J]
        q = a * self._scale + self._offset
        if self.mode == "delta":
            q = q + np.asarray(q_obs, dtype=np.float64)[None]
        return q


class RobotPolicy:
    """A policy with the robot's joint transforms around it (JointMap, declared in the run config):
    `infer({"images", "joints" [J] in robot units, arm order, "instruction"})` gives the policy the state its
    `state_indices` select, runs it (pre-processing, the model, un-normalisation, the embodiment's post-processing)
    and maps its actions onto joint commands in robot units, once, checked finite there. Returns the policy's own
    output plus "state" (what it saw) and "joints" [H, J] float64 (what the control loop streams, within the arm's
    safety limits)."""

    def __init__(self, policy, joints: JointMap):
        self.policy, self.joints = policy, joints

    def infer(self, obs: dict, **kw) -> dict:
        q = np.asarray(obs["joints"], dtype=np.float64)
        state = self.joints.state(q)
        out = self.policy.infer({"images": obs["images"], "state": state, "instruction": obs["instruction"]}, **kw)
        return {**out, "state": state, "joints": self.joints.commands(out["actions"], q)}
