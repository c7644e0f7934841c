"""Camera calibration: ChArUco boards, intrinsics, hand-eye, multi-camera extrinsics, calibration files.

Kept light: importing `calib` imports neither OpenCV nor torch nor the other packages. The control loop uses
`calib.store.load_intrinsics(path, expect_serial=..., expect_size=(w, h))` and `calib.store.load_handeye(...)`.
"""
from __future__ import annotations

from calib.errors import CalibrationError

__all__ = ["CalibrationError"]
