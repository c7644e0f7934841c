"""What a RealSense recording (.db3 or an older ROS1 .bag) really holds, stream by stream, without a pipeline.

A pipeline asked for colour and depth waits for framesets; a file whose streams never pair (e.g. 6 depth frames,
then 5 colour frames, as some older recordings hold) yields none, and the reader only sees silence. Here every
sensor of the file is played on its own (sensor-level playback, not real time, paused until every stream is
subscribed so no first frame is lost), and each frame's stream, number and device timestamp is noted. From that:
frame count, first timestamp, time span, gaps (dropped frames) per stream, and whether depth and colour pair.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from drivers.camera.rs_files import _check_file, import_rs, recording_streams
from drivers.errors import CameraError

log = logging.getLogger(__name__)

GAP_FACTOR = 1.5  # an interval longer than this many frame periods is a gap (frames dropped)
MIN_PAIRED_SHARE = 0.5  # below this share of colour frames with a depth partner, the streams are played apart
EARLY_PAIRS = 3  # `until_paired`: stop scanning once this many pairs are found
START_TIMEOUT_S = 5.0  # no frame at all this long after start: the file holds none of these streams
QUIET_S = 0.25  # stopped and silent this long after frames flowed: the end of the file


@dataclass
class StreamScan:
    """One stream of a recording: its profile and the frames seen (numbers, device timestamps in ms)."""

    type: str
    index: int
    fps: int
    format: str
    width: Optional[int] = None
    height: Optional[int] = None
    numbers: list = field(default_factory=list)
    times_ms: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.times_ms)

    def gaps(self) -> tuple[int, int]:
        """-> (number of gaps, frames missing in them), from timestamps (and frame-number jumps)."""
        if self.frames < 2 or not self.fps:
            return 0, 0
        period = 1000.0 / self.fps
        gaps = missing = 0
        for k in range(1, self.frames):
            dt = self.times_ms[k] - self.times_ms[k - 1]
            dn = self.numbers[k] - self.numbers[k - 1]
            lost_t = int(round(dt / period)) - 1 if dt > GAP_FACTOR * period else 0
            lost_n = dn - 1 if dn > 1 else 0
            lost = max(lost_t, lost_n)
            if lost > 0:
                gaps += 1
                missing += lost
        return gaps, missing

    def summary(self) -> dict:
        gaps, missing = self.gaps()
        out = {"type": self.type, "index": self.index, "width": self.width, "height": self.height, "fps": self.fps,
               "format": self.format, "frames": self.frames, "gaps": gaps, "dropped_frames": missing}
        if self.frames:
            out.update(first_timestamp_ms=round(self.times_ms[0], 3), last_timestamp_ms=round(self.times_ms[-1], 3),
                       span_s=round((self.times_ms[-1] - self.times_ms[0]) / 1000.0, 4),
                       first_frame_number=int(self.numbers[0]), last_frame_number=int(self.numbers[-1]))
        return out


def pairing(color: Optional[StreamScan], depth: Optional[StreamScan]) -> dict:
    """Can depth and colour be played as framesets? -> {"pairable", "pairs", "reason"}: a colour frame pairs with a
    depth frame whose timestamp lies within half the longer frame period."""
    if color is None or depth is None or not color.frames or not depth.frames:
        absent = [n for n, s in (("colour", color), ("depth", depth)) if s is None or not s.frames]
        return {"pairable": False, "pairs": 0, "reason": f"no {' and no '.join(absent)} frames in the file"}
    tol = 0.5 * max(1000.0 / max(color.fps, 1), 1000.0 / max(depth.fps, 1))
    d = sorted(depth.times_ms)
    pairs, j = 0, 0
    for t in sorted(color.times_ms):
        while j + 1 < len(d) and d[j + 1] <= t:
            j += 1
        if min(abs(t - d[j]), abs(t - d[min(j + 1, len(d) - 1)])) <= tol:
            pairs += 1
    need = MIN_PAIRED_SHARE * min(color.frames, depth.frames)
    spans = (f"depth {depth.times_ms[0] / 1000:.3f}-{depth.times_ms[-1] / 1000:.3f} s, colour "
             f"{color.times_ms[0] / 1000:.3f}-{color.times_ms[-1] / 1000:.3f} s")
    if pairs >= max(1.0, need):
        return {"pairable": True, "pairs": pairs, "reason": f"{pairs} colour frames have a depth frame within "
                                                           f"{tol:.1f} ms"}
    overlap = min(color.times_ms[-1], depth.times_ms[-1]) >= max(color.times_ms[0], depth.times_ms[0])
    why = "do not overlap in time" if not overlap else f"pair only {pairs} of {color.frames} colour frames"
    return {"pairable": False, "pairs": pairs, "reason": f"depth and colour {why} ({spans})"}


def scan_recording(path: str, until_paired: bool = False, timeout_s: float = 120.0) -> dict:
    """{stream type: StreamScan} for every video stream in the recording at `path` (played as fast as possible).
    `until_paired`: stop as soon as EARLY_PAIRS colour frames have a depth partner (a cheap check before playback)."""
    rs = import_rs()
    _check_file(path)
    ctx = rs.context()
    dev = ctx.load_device(str(path))
    lock = threading.Lock()
    scans: dict = {}
    started: list = []
    last = [time.monotonic()]

    def on_frame(frame) -> None:  # librealsense's thread: note and return at once
        p = frame.get_profile()
        kind = str(p.stream_type()).split(".")[-1]
        with lock:
            s = scans.get(kind)
            if s is not None:
                s.numbers.append(int(frame.get_frame_number()))
                s.times_ms.append(float(frame.get_timestamp()))
            last[0] = time.monotonic()

    try:
        playback = dev.as_playback()
        playback.set_real_time(False)
        playback.pause()  # nothing plays until every sensor listens (the first frames would be lost otherwise)
        for sensor in dev.query_sensors():
            profiles = [p for p in sensor.get_stream_profiles() if p.is_video_stream_profile()]
            if not profiles:
                continue
            for p in profiles:
                v = p.as_video_stream_profile()
                kind = str(p.stream_type()).split(".")[-1]
                scans.setdefault(kind, StreamScan(kind, p.stream_index(), p.fps(), str(p.format()).split(".")[-1],
                                                  v.width(), v.height()))
            sensor.open(profiles)
            sensor.start(on_frame)
            started.append(sensor)
        playback.resume()
        t0 = time.monotonic()
        while True:
            time.sleep(0.01)
            now = time.monotonic()
            with lock:
                seen = sum(s.frames for s in scans.values())
                if until_paired and pairing(scans.get("color"), scans.get("depth"))["pairs"] >= EARLY_PAIRS:
                    break
                quiet = now - last[0]
            stopped = playback.current_status() == rs.playback_status.stopped
            if stopped and ((seen and quiet >= QUIET_S) or (not seen and now - t0 >= START_TIMEOUT_S)):
                break
            if now - t0 > timeout_s:
                raise CameraError(f"recording {path}: reading it took longer than {timeout_s:.0f} s; the file may be "
                                  "damaged or on a slow disk")
    except RuntimeError as exc:
        raise CameraError(f"recording {path}: librealsense cannot play it ({exc}). Check the file with "
                          "`rs-enumerate-devices`-era tools (realsense-viewer) or record it again") from exc
    finally:
        try:  # no callback may be running while the sensors stop (a Python callback during stop can crash)
            dev.as_playback().pause()
            time.sleep(0.05)
        except RuntimeError as exc:
            log.debug("recording %s: pause: %s", path, exc)
        for sensor in started:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError as exc:
                    log.debug("recording %s: %s", path, exc)
        ctx.unload_device(str(path))
    with lock:
        return {k: StreamScan(s.type, s.index, s.fps, s.format, s.width, s.height, list(s.numbers), list(s.times_ms))
                for k, s in scans.items()}


def plan_playback(path: str, want_color: bool, want_depth: bool) -> tuple[set, Optional[str]]:
    """Which streams to play from `path` -> ({"color", "depth"} subset, warning or None). Both when both are wanted,
    present and pair; otherwise the one that is there (colour first), with a warning saying why."""
    profiles = {s["type"] for s in recording_streams(path)} & {"color", "depth"}
    if not (want_color and want_depth and profiles == {"color", "depth"}):
        # one stream wanted or present: the profiles decide, no need to read the frames
        color = depth = None
        have = profiles
    else:  # both: do they pair? (stops reading at the first few pairs)
        scans = scan_recording(path, until_paired=True)
        color, depth = scans.get("color"), scans.get("depth")
        have = {k for k, s in (("color", color), ("depth", depth)) if s is not None and s.frames}
    if not have:
        raise CameraError(f"recording {path} holds no colour or depth frames (streams: {sorted(profiles) or 'none'}); "
                          "record it again with `imagewam-edge camera record`")
    if want_color and want_depth and have == {"color", "depth"}:
        p = pairing(color, depth)
        if p["pairable"]:
            return {"color", "depth"}, None
        return {"color"}, (f"recording {path}: {p['reason']}: they cannot be paired into framesets, so colour is "
                           "played alone (frame.depth is None). Set depth: false in the camera config to silence this")
    if want_color and "color" in have:
        if want_depth:
            return {"color"}, (f"recording {path} holds no depth frames: colour is played alone (frame.depth is "
                               "None). Set depth: false in the camera config to silence this")
        return {"color"}, None
    # only depth is there: play it, wanted or not (a depth-only file has nothing else to give)
    return {"depth"}, f"recording {path} holds no colour frames: depth is played alone (frame.color is None)"
