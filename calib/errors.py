"""Typed calibration errors. The CLI prints the message without a traceback, so every message names the file,
field or view at fault and says what to do next."""
from __future__ import annotations

from edge.errors import ImageWAMEdgeError


class CalibrationError(ImageWAMEdgeError):
    """Base of every error calib raises on purpose."""


class BoardSpecError(CalibrationError, ValueError):
    """A board spec string (`charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT`) is malformed."""


class BoardNotFoundError(CalibrationError):
    """The board was not detected (or too few corners) in an image that needed it."""


class InsufficientViewsError(CalibrationError):
    """Too few usable views to calibrate; capture more views."""


class DegenerateMotionError(CalibrationError):
    """The robot motions (or views) do not constrain the solution: e.g. pure translations or one rotation axis."""


class InputFileError(CalibrationError, ValueError):
    """An input file (images dir, poses file) is missing or malformed."""


class CalibrationFileError(CalibrationError, ValueError):
    """A calibration file is missing, malformed or of an unsupported schema version."""


class CalibrationMismatchError(CalibrationFileError):
    """A calibration file belongs to a different camera (serial) or resolution than the one in use."""


class MissingDependencyError(CalibrationError, ImportError):
    """An optional dependency (OpenCV, matplotlib, drivers) is not installed; the message gives the fix."""


def require_cv2():
    """Import OpenCV with the hand-eye solver or raise MissingDependencyError with the pip command."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(
            f"OpenCV is not importable ({exc}); install it with: pip install 'opencv-python-headless>=4.8,<5' "
            "(or pip install 'imagewam-edge[calib]')"
        ) from exc
    if not hasattr(cv2, "calibrateHandEye") or not hasattr(cv2, "aruco"):
        raise MissingDependencyError(
            f"OpenCV {cv2.__version__} lacks cv2.calibrateHandEye or cv2.aruco (OpenCV 5 dropped hand-eye); "
            "install it with: pip install 'opencv-python-headless>=4.8,<5'"
        )
    return cv2


class InconsistentDataError(CalibrationError):
    """The data do not agree with any solution (wrong mode, inverted poses, images not matching poses)."""
