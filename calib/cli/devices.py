"""The hardware the `calibrate` steps may open: a RealSense colour stream, the operator's Enter key, an arm that
reports its gripper pose. Imported only by the steps that need them; drivers and pyrealsense2 stay optional."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def say(message: str) -> None:
    """Operator prompts go to stderr (stdout is the step's report)."""
    print(message, file=sys.stderr)


def enter_prompt(attempt: int) -> bool:
    """Wait for the operator: True to capture a view, False to finish."""
    say("move the board/robot, hold still, press Enter to capture (q + Enter to finish): ")  # stdout: the report
    reply = input()
    return reply.strip().lower() not in ("q", "quit", "exit")


def open_realsense(serial: str, width: int, height: int):
    """A connected RealSense colour stream (drivers.camera.realsense), or MissingDependencyError with the fix."""
    from calib.errors import MissingDependencyError

    try:
        from drivers.camera.realsense import RealSenseCamera, RealSenseConfig
    except ImportError as exc:
        raise MissingDependencyError(f"live capture needs the drivers package and pyrealsense2 ({exc}); "
                                     "pip install 'imagewam-edge[realsense]'") from exc
    cam = RealSenseCamera(RealSenseConfig(serial=str(serial), width=width, height=height, depth=False))
    cam.connect()
    return cam


def capture_for_intrinsics(serial: str, width: int, height: int, images: Path, spec, n_views: int):
    """Capture board views from a RealSense into `images` (no robot poses); its factory intrinsics as calib
    Intrinsics (None when the camera gives none), for the comparison."""
    from calib.capture import run_capture
    from calib.store import Intrinsics

    camera = open_realsense(serial, width, height)
    try:
        run_capture(camera, None, images, spec, wait_for_operator=enter_prompt, n_views=n_views, serial=serial,
                    say=say)
        fi = camera.intrinsics
    finally:
        camera.disconnect()
    if fi is None:
        return None
    dist = list(getattr(fi, "coeffs", (0.0,) * 5))
    if getattr(fi, "model", "none") not in ("none", "brown_conrady", "inverse_brown_conrady"):
        log.warning("factory distortion model %s is not OpenCV's; comparing focal/centre only", fi.model)
        dist = [0.0] * 5
    return Intrinsics(fi.width, fi.height, fi.fx, fi.fy, fi.ppx, fi.ppy, dist, 0.0, serial=serial)


def open_arm(config_path: str | None):
    """A connected arm that reports its gripper pose (drivers.arm.open_arm), or a typed error with the fix."""
    from calib.errors import InputFileError, MissingDependencyError

    if not config_path:
        raise InputFileError("--pose-source arm needs --arm CONFIG.yaml")
    try:  # assumed drivers API: drivers.arm.open_arm(config_path) -> connected arm with read_state()
        from drivers.arm import open_arm as _open
    except ImportError as exc:
        raise MissingDependencyError(
            f"drivers.arm.open_arm is not available ({exc}); use --pose-cmd 'COMMAND' printing T_base_gripper"
        ) from exc
    return _open(config_path)
