"""`calibrate capture`: save board views (and robot poses) in the formats the other commands read.

Written against two tiny protocols so it runs on any camera and arm:
  FrameSource.read() -> object with `.color` (H, W, 3) uint8 RGB (and optionally `.serial`)
  PoseSource.read_pose() -> 4x4 T_base_gripper in metres
`SimBoardRig` provides both from a synthetic hand-eye scene (tests, demos, a self-check of the pipeline).
"""
from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np

from calib.board import BoardDetector, BoardSpec, usable_reason
from calib.dataset import read_poses, write_image, write_poses, write_session
from calib.errors import CalibrationError, InputFileError
from calib.geometry import T_from_list, make_T, rodrigues, transform_delta
from calib.store import now_iso

log = logging.getLogger(__name__)

MOVING_MM, MOVING_DEG = 1.0, 0.1  # pose change during one capture above this = robot still moving
DUPLICATE_MM, DUPLICATE_DEG = 10.0, 3.0  # closer than this to a saved view adds nothing


class FrameSource(Protocol):
    def read(self) -> Any: ...


class PoseSource(Protocol):
    def read_pose(self) -> np.ndarray: ...


@dataclass
class CaptureResult:
    out_dir: Path
    saved: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (attempt, reason)


def parse_pose_text(text: str) -> np.ndarray:
    """A pose typed or printed by a command: 16 numbers (4x4 row-major), 6 (x y z rx ry rz: metres + rotation
    vector in radians) or 7 (x y z qx qy qz qw)."""
    try:
        v = [float(x) for x in text.replace(",", " ").replace("[", " ").replace("]", " ").split()]
    except ValueError as exc:
        raise InputFileError(f"pose {text.strip()!r} is not a list of numbers ({exc})") from exc
    if len(v) == 16:
        try:
            return T_from_list(v, "pose")
        except ValueError as exc:
            raise InputFileError(str(exc)) from exc
    if len(v) == 6:
        return make_T(rodrigues(v[3:]), v[:3])
    if len(v) == 7:
        x, y, z, w = v[3:]
        n = np.sqrt(x * x + y * y + z * z + w * w)
        if n < 1e-9:
            raise InputFileError(f"pose {text.strip()!r}: quaternion has zero norm")
        x, y, z, w = x / n, y / n, z / n, w / n
        R = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])
        return make_T(R, v[:3])
    raise InputFileError(
        f"pose {text.strip()!r} has {len(v)} numbers: give 16 (4x4 row-major), 6 (x y z rx ry rz, metres and "
        "rotation vector in radians) or 7 (x y z qx qy qz qw)"
    )


class CommandPoseSource:
    """Runs a command that prints T_base_gripper (e.g. a wrapper around your robot's forward kinematics)."""

    def __init__(self, command: str, timeout_s: float = 5.0):
        self.argv = shlex.split(command)
        self.timeout_s = timeout_s

    def read_pose(self) -> np.ndarray:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=self.timeout_s, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise CalibrationError(f"--pose-cmd {' '.join(self.argv)!r} failed ({exc}); it must print 16 numbers") from exc
        return parse_pose_text(out)


class PromptPoseSource:
    """Asks the operator to type the pose shown on the robot's pendant."""

    def __init__(self, ask: Callable[[str], str] = input):
        self.ask = ask

    def read_pose(self) -> np.ndarray:
        return parse_pose_text(self.ask("T_base_gripper (16 numbers, or x y z rx ry rz in m/rad): "))


class ArmPoseSource:
    """Adapter for an arm link that reports its end-effector pose (read_pose(), or read_state() with a 4x4
    `T_base_gripper` / `ee_pose`). Arms that only report joint angles need --pose-cmd with your kinematics."""

    def __init__(self, arm: Any):
        self.arm = arm

    def read_pose(self) -> np.ndarray:
        if hasattr(self.arm, "read_pose"):
            return np.asarray(self.arm.read_pose(), dtype=float)
        state = self.arm.read_state()
        for key in ("T_base_gripper", "ee_pose"):
            value = state.get(key) if isinstance(state, dict) else getattr(state, key, None)
            if value is not None:
                return T_from_list(value, f"arm state {key}")
        raise CalibrationError(
            "the arm link reports joint angles only, not the gripper pose: pass --pose-cmd 'CMD' (a command printing "
            "T_base_gripper from your robot's kinematics) or --pose-source prompt"
        )


class SimBoardRig:
    """A simulated arm + camera viewing a ChArUco board (eye-in-hand or eye-to-hand), stepping through a
    synthetic hand-eye scene: `advance()` moves the arm to the next pose, `read()` renders, `read_pose()` reports."""

    def __init__(self, spec: BoardSpec, n: int = 15, mode: str = "eye-in-hand", seed: int = 0, serial: str = "sim-board"):
        from calib import synth

        self._synth = synth
        self.spec = spec
        self.camera = synth.Camera()
        self.scene = synth.handeye_scene(spec, n, mode, self.camera, np.random.default_rng(seed))
        self.serial = serial
        self.i = -1
        self.rng = np.random.default_rng(seed + 1)

    def advance(self, _attempt: int = 0) -> bool:
        self.i += 1
        return self.i < len(self.scene.T_cam_board)

    def read(self):
        img = self._synth.render_view(self.spec, self.scene.T_cam_board[self.i], self.camera, rng=self.rng, rgb=True)
        return _SimFrame(img, self.serial)

    def read_pose(self) -> np.ndarray:
        return self.scene.T_base_gripper[self.i].copy()


@dataclass
class _SimFrame:
    color: np.ndarray
    serial: str


def run_capture(
    frames: FrameSource,
    poses: Optional[PoseSource],
    out_dir: str | Path,
    spec: BoardSpec,
    *,
    wait_for_operator: Callable[[int], bool],
    n_views: int = 20,
    serial: str | None = None,
    min_corners: int = 6,
    say: Callable[[str], None] = lambda msg: log.warning(msg),
    max_attempts: int = 1000,
) -> CaptureResult:
    """Loop: wait for the operator (False = finish), grab a frame and the pose, keep the view if the board is seen,
    the robot stood still and the view is not a duplicate. Images, poses.json and session.yaml are written as
    they are captured, so an interrupted session keeps what it saved."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("view_*.png"))
    if existing:
        raise InputFileError(f"{out} already holds {len(existing)} views; pass an empty or new --out directory")
    det = BoardDetector(spec)
    saved_poses: dict[str, np.ndarray] = {}
    result = CaptureResult(out)
    size = None
    for attempt in range(max_attempts):
        if len(result.saved) >= n_views or not wait_for_operator(attempt):
            break
        p0 = poses.read_pose() if poses else None
        frame = frames.read()
        p1 = poses.read_pose() if poses else None
        color = np.asarray(frame.color)
        serial = serial or getattr(frame, "serial", None)
        if p0 is not None:
            dr, dt = transform_delta(p0, p1)
            if dt > MOVING_MM or dr > MOVING_DEG:
                result.skipped.append((attempt, "robot moving"))
                say(f"skipped: the robot moved during the capture ({dt:.1f} mm, {dr:.2f} deg); hold still")
                continue
        d = det.detect(color)
        reason = usable_reason(d, spec, min_corners)
        if reason:
            result.skipped.append((attempt, reason))
            say(f"skipped: {reason}; move the board fully into view")
            continue
        if p1 is not None:
            near = [n for n, T in saved_poses.items() if _close(T, p1)]
            if near:
                result.skipped.append((attempt, f"duplicate of {near[0]}"))
                say(f"skipped: pose within {DUPLICATE_MM} mm / {DUPLICATE_DEG} deg of {near[0]}; move/rotate more")
                continue
        name = f"view_{len(result.saved):03d}.png"
        write_image(out / name, color, rgb=True)
        size = (color.shape[1], color.shape[0])
        result.saved.append(name)
        if p1 is not None:
            saved_poses[name] = p1
            write_poses(out / "poses.json", saved_poses)
        write_session(out, {
            "serial": serial, "width": size[0], "height": size[1], "board": str(spec), "date": now_iso(),
            "n_views": len(result.saved), "poses": "poses.json" if poses else None,
        })
        say(f"saved {name}: {len(d)} corners ({len(result.saved)}/{n_views})")
    return result


def _close(A: np.ndarray, B: np.ndarray) -> bool:
    dr, dt = transform_delta(A, B)
    return dt < DUPLICATE_MM and dr < DUPLICATE_DEG


def load_capture_poses(out_dir: str | Path) -> dict[str, np.ndarray]:
    return read_poses(Path(out_dir) / "poses.json")
