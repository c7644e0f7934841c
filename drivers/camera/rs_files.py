"""pyrealsense2 and recording files, below the camera driver: the lazy import with its install hint, stream
intrinsics, and what streams a recording (.db3/.bag) holds. Both the driver (realsense.py) and the recording scan
(recording_scan.py) build on these."""
from __future__ import annotations

import os

from drivers.camera.base import Intrinsics
from drivers.errors import CameraNotFoundError, MissingDependencyError


def import_rs():
    """pyrealsense2, or MissingDependencyError with the install command."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise MissingDependencyError(
            f"pyrealsense2 is not importable ({exc}). Install it with `pip install 'imagewam-edge[realsense]'` "
            "(PyPI has aarch64 wheels for Python 3.10 only) and `apt-get install libusb-1.0-0`.") from exc
    return rs


def _intrinsics(profile) -> Intrinsics:
    i = profile.as_video_stream_profile().get_intrinsics()
    return Intrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, str(i.model).split(".")[-1], tuple(i.coeffs))


def recording_streams(path: str) -> list[dict]:
    """The streams stored in a recording (type, index, width, height, fps, format, intrinsics)."""
    rs = import_rs()
    _check_file(path)
    ctx = rs.context()
    dev = ctx.load_device(str(path))
    try:
        dev.as_playback().set_real_time(False)
        out = []
        for sensor in dev.query_sensors():
            for p in sensor.get_stream_profiles():
                entry = {"sensor": sensor.get_info(rs.camera_info.name) if sensor.supports(rs.camera_info.name) else "",
                         "type": str(p.stream_type()).split(".")[-1], "index": p.stream_index(), "fps": p.fps(),
                         "format": str(p.format()).split(".")[-1]}
                if p.is_video_stream_profile():
                    v = p.as_video_stream_profile()
                    entry.update(width=v.width(), height=v.height())
                    try:
                        entry["intrinsics"] = _intrinsics(p).to_dict()
                    except RuntimeError:
                        entry["intrinsics"] = None
                out.append(entry)
        return out
    finally:
        ctx.unload_device(str(path))


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise CameraNotFoundError(f"recording {path!r} does not exist; give the path of a .db3/.bag file "
                                  "(record one with `imagewam-edge camera record --out FILE.db3 --seconds 10`)")
