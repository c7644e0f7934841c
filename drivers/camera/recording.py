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


def _software_stream(rs, dev, sensor_name: str, kind: str, intr: Intrinsics, fps: int, uid: int):
    sensor = dev.add_sensor(sensor_name)
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps = getattr(rs.stream, kind), 0, uid, intr.width, intr.height, fps
    vs.bpp, vs.fmt = (3, rs.format.rgb8) if kind == "color" else (2, rs.format.z16)
    vs.intrinsics = _rs_intrinsics(rs, intr)
    return sensor, sensor.add_video_stream(vs)


def write_synthetic_recording(path: str, colors: Optional[Sequence[np.ndarray]],
                              depths: Optional[Sequence[np.ndarray]] = None, *,
                              color_intrinsics: Optional[Intrinsics] = None, depth_intrinsics: Optional[Intrinsics] = None,
                              depth_scale: float = 0.001, fps: int = 30, serial: str = "000000000000",
                              depth_to_color_translation: tuple = (0.015, 0.0, 0.0), name: str = "Synthetic RealSense",
                              color_times_ms: Optional[Sequence[float]] = None,
                              depth_times_ms: Optional[Sequence[float]] = None,
                              color_numbers: Optional[Sequence[int]] = None,
                              depth_numbers: Optional[Sequence[int]] = None, paced: bool = False) -> str:
    """Record `colors` (N x (H, W, 3) uint8 RGB) and/or `depths` (M x (H, W) uint16) as a .db3 recording of a
    software device with the given intrinsics, depth scale, serial and device name. Either stream may be None (a
    colour-only or depth-only file) and the two may differ in length. Frame times default to n * 1000 / fps ms and
    frame numbers to 0..N-1; give `*_times_ms` / `*_numbers` to shift them (t0 > 0), leave gaps (dropped frames) or
    make the streams not overlap. Frames are injected in time order, colour first at equal times.
    `paced`: inject each frame at its timestamp (relative to the first) in real time, as a camera delivers them: the
    recorder stamps messages on arrival, and librealsense's playback syncer pairs depth with colour by those stamps
    (injected back to back, a short file can come back with a colour frame paired with the previous depth frame)."""
    rs = import_rs()
    if not str(path).endswith(".db3"):
        raise ConfigError(f"synthetic recording path must end with .db3 (librealsense 2.59 writes ROS2 bags), got {path!r}")
    if not colors and not depths:
        raise ConfigError("a synthetic recording needs colour frames, depth frames or both")
    color_intrinsics = color_intrinsics or depth_intrinsics
    if color_intrinsics is None:
        raise ConfigError("give color_intrinsics (or depth_intrinsics for a depth-only recording)")
    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, name)
    streams = {}  # kind -> (sensor, profile, frames, times, numbers)
    for kind, frames, times, numbers, intr, sensor_name in (
            ("color", colors, color_times_ms, color_numbers, color_intrinsics, "RGB Camera"),
            ("depth", depths, depth_times_ms, depth_numbers, depth_intrinsics or color_intrinsics, "Stereo Module")):
        if not frames:
            continue
        n = len(frames)
        times = list(times) if times is not None else [k * 1000.0 / fps for k in range(n)]
        numbers = list(numbers) if numbers is not None else list(range(n))
        if len(times) != n or len(numbers) != n:
            raise ConfigError(f"{kind}: {n} frames but {len(times)} times and {len(numbers)} frame numbers")
        sensor, profile = _software_stream(rs, dev, sensor_name, kind, intr, fps, uid=len(streams))
        streams[kind] = (sensor, profile, frames, times, numbers)
    if "depth" in streams:
        streams["depth"][0].add_read_only_option(rs.option.depth_units, float(depth_scale))
        if "color" in streams:
            e = rs.extrinsics()
            e.rotation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
            e.translation = list(depth_to_color_translation)
            streams["depth"][1].register_extrinsics_to(streams["color"][1], e)
    recorder = rs.recorder(str(path), dev)
    for sensor, profile, *_ in streams.values():
        sensor.open(profile)
        sensor.start(lambda f: None)
    events = sorted((t, 0 if kind == "color" else 1, k, kind) for kind, (_, _, _, times, _) in streams.items()
                    for k, t in enumerate(times))
    start = time.monotonic()
    for t, _, k, kind in events:
        if paced:
            time.sleep(max(0.0, (t - events[0][0]) / 1000.0 - (time.monotonic() - start)))
        sensor, profile, frames, _, numbers = streams[kind]
        pixels = np.ascontiguousarray(frames[k], dtype=np.uint8 if kind == "color" else np.uint16)
        bpp = 3 if kind == "color" else 2
        f = rs.software_video_frame()
        f.pixels = pixels
        f.bpp, f.stride, f.timestamp, f.frame_number = bpp, bpp * pixels.shape[1], float(t), int(numbers[k])
        f.domain, f.profile = rs.timestamp_domain.hardware_clock, profile.as_video_stream_profile()
        if kind == "depth":
            f.depth_units = float(depth_scale)
        sensor.on_video_frame(f)
    for sensor, *_ in streams.values():
        sensor.stop()
        sensor.close()
    expected = {kind: len(v[2]) for kind, v in streams.items()}
    del recorder, streams, dev  # the file is finalised when the recorder is destroyed
    gc.collect()
    wait_for_db3_frames(str(path), expected)  # the recorder writes asynchronously: return once every frame is in
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
