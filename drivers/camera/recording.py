"""Writing recordings: live cameras to .db3 (`record_live`), and synthetic recordings through pyrealsense2's
software device (`write_synthetic_recording`) so the playback path can be tested without a camera.
librealsense 2.59 records ROS2 bags (`.db3`) only; it still plays older `.bag` files."""
from __future__ import annotations

import gc
import logging
import os
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from drivers.camera.base import Intrinsics
from drivers.camera.realsense import RealSenseConfig, import_rs, list_devices
from drivers.errors import CameraError, CameraNotFoundError, ConfigError

log = logging.getLogger(__name__)


def _rs_intrinsics(rs, intr: Intrinsics):
    i = rs.intrinsics()
    i.width, i.height, i.fx, i.fy, i.ppx, i.ppy = intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy
    i.model = getattr(rs.distortion, intr.model)
    i.coeffs = list(intr.coeffs)
    return i


def write_synthetic_recording(path: str, colors: Sequence[np.ndarray], depths: Optional[Sequence[np.ndarray]] = None,
                              *, color_intrinsics: Intrinsics, depth_intrinsics: Optional[Intrinsics] = None,
                              depth_scale: float = 0.001, fps: int = 30, serial: str = "000000000000",
                              depth_to_color_translation: tuple = (0.015, 0.0, 0.0)) -> str:
    """Record `colors` (N x (H, W, 3) uint8 RGB) and optional `depths` (N x (H, W) uint16) as a .db3 recording
    of a software device with the given intrinsics, depth scale and serial; frame numbers 0..N-1."""
    rs = import_rs()
    if not str(path).endswith(".db3"):
        raise ConfigError(f"synthetic recording path must end with .db3 (librealsense 2.59 writes ROS2 bags), got {path!r}")
    h, w = colors[0].shape[:2]
    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "Synthetic RealSense")
    cs = dev.add_sensor("RGB Camera")
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.color, 0, 0, w, h, fps, 3
    vs.fmt, vs.intrinsics = rs.format.rgb8, _rs_intrinsics(rs, color_intrinsics)
    cp = cs.add_video_stream(vs)
    ds = dp = None
    if depths is not None:
        di = depth_intrinsics or color_intrinsics
        ds = dev.add_sensor("Stereo Module")
        vd = rs.video_stream()
        vd.type, vd.index, vd.uid, vd.width, vd.height, vd.fps, vd.bpp = rs.stream.depth, 0, 1, di.width, di.height, fps, 2
        vd.fmt, vd.intrinsics = rs.format.z16, _rs_intrinsics(rs, di)
        dp = ds.add_video_stream(vd)
        ds.add_read_only_option(rs.option.depth_units, float(depth_scale))
        e = rs.extrinsics()
        e.rotation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        e.translation = list(depth_to_color_translation)
        dp.register_extrinsics_to(cp, e)
    recorder = rs.recorder(str(path), dev)
    sensors = [(cs, cp)] + ([(ds, dp)] if ds is not None else [])
    for s, p in sensors:
        s.open(p)
        s.start(lambda f: None)
    for n, color in enumerate(colors):
        ts = n * 1000.0 / fps
        f = rs.software_video_frame()
        f.pixels = np.ascontiguousarray(color, dtype=np.uint8)
        f.bpp, f.stride, f.timestamp, f.frame_number = 3, 3 * w, ts, n
        f.domain, f.profile = rs.timestamp_domain.hardware_clock, cp.as_video_stream_profile()
        cs.on_video_frame(f)
        if ds is not None:
            d = np.ascontiguousarray(depths[n], dtype=np.uint16)
            fd = rs.software_video_frame()
            fd.pixels = d
            fd.bpp, fd.stride, fd.timestamp, fd.frame_number = 2, 2 * d.shape[1], ts, n
            fd.domain, fd.profile, fd.depth_units = rs.timestamp_domain.hardware_clock, dp.as_video_stream_profile(), float(depth_scale)
            ds.on_video_frame(fd)
    for s, _ in sensors:
        s.stop()
        s.close()
    del recorder, sensors, cs, ds, cp, dp, dev  # the file is finalised when the recorder is destroyed
    gc.collect()
    if str(path).endswith(".db3"):  # the recorder writes asynchronously: return only once every frame is in the file
        expected = {"color": len(colors), **({"depth": len(colors)} if depths is not None else {})}
        wait_for_db3_frames(str(path), expected)
    return str(path)


def db3_frame_counts(path: str) -> dict:
    """Frames per stream type stored in a .db3 (ROS 2 bag, SQLite) recording, from its message table."""
    import re
    import sqlite3

    counts: dict = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT t.name, COUNT(m.id) FROM topics t LEFT JOIN messages m ON m.topic_id = t.id "
                          "GROUP BY t.name").fetchall()
    for name, n in rows:
        m = re.search(r"/([A-Za-z]+)_\d+/image/data", name)
        if m:
            kind = m.group(1).lower()
            counts[kind] = counts.get(kind, 0) + int(n)
    return counts


def wait_for_db3_frames(path: str, expected: dict, timeout_s: float = 10.0) -> None:
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            counts = db3_frame_counts(path)
        except sqlite3.Error:
            counts = {}
        if all(counts.get(k, 0) >= n for k, n in expected.items()):
            return
        if time.monotonic() > deadline:
            raise CameraError(f"recording {path}: only {counts} frames were written of {expected} after "
                              f"{timeout_s:.0f} s; the disk may be full or slow")
        time.sleep(0.02)


def record_live(out: str, seconds: float, configs: Iterable[RealSenseConfig],
                progress: Optional[Callable[[float], None]] = None) -> list[str]:
    """Record live cameras for `seconds` to `out` (one camera) or `out` with `_<serial>` before the suffix (several).
    Returns the files written."""
    rs = import_rs()
    configs = list(configs)
    if not str(out).endswith(".db3"):
        raise ConfigError(f"--out must end with .db3 (librealsense 2.59 records ROS2 bags), got {out!r}")
    if not seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    devices = list_devices()
    if not devices:
        raise CameraNotFoundError(
            "no RealSense camera is connected, nothing to record. Plug the camera into a USB3 port and check "
            "`lsusb | grep 8086`; to inspect an existing recording use `imagewam-edge camera info FILE`.")
    serials = [d["serial"] for d in devices]
    if not configs:
        configs = [RealSenseConfig(serial=s) for s in serials]
    for c in configs:
        if c.serial is not None and c.serial not in serials:
            raise CameraNotFoundError(f"no RealSense camera with serial {c.serial!r}; connected: {serials}")
    if len(configs) > 1 and any(c.serial is None for c in configs):
        raise ConfigError("several cameras requested: give each a --serial")
    outs, pipelines = [], []
    try:
        for c in configs:
            serial = c.serial or serials[0]
            path = out if len(configs) == 1 else f"{os.path.splitext(out)[0]}_{serial}.db3"
            cfg = rs.config()
            cfg.enable_device(serial)
            cfg.enable_stream(rs.stream.color, c.width, c.height, getattr(rs.format, c.color_format), c.fps)
            if c.depth:
                cfg.enable_stream(rs.stream.depth, c.depth_width or c.width, c.depth_height or c.height, rs.format.z16, c.fps)
            cfg.enable_record_to_file(path)
            pipe = rs.pipeline()
            try:
                pipe.start(cfg)
            except RuntimeError as exc:
                raise CameraError(f"camera {serial}: cannot start recording {c.width}x{c.height}@{c.fps}: {exc}; "
                                  "check the mode with `rs-enumerate-devices`") from exc
            pipelines.append(pipe)
            outs.append(path)
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            for pipe in pipelines:
                pipe.poll_for_frames()
            if progress is not None:
                progress(elapsed)
            time.sleep(0.01)
    finally:
        for pipe in pipelines:
            try:
                pipe.stop()
            except RuntimeError as exc:
                log.warning("stopping a recording pipeline failed: %s", exc)
    return outs
