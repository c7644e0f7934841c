"""Recordings played sensor by sensor, depth paired with colour here by device timestamp.

librealsense's pipeline syncer pairs the frames of a recording played as fast as possible by the recorder's arrival
stamps and its own timing: a short file, or frames recorded back to back, can come out with a colour frame paired
with the previous depth frame, and now and then with nothing at all. Here each stream's frames are queued as the
file delivers them (a full queue holds the file back: nothing drops), and a colour frame takes the depth frame whose
device timestamp is nearest, within half a frame period. The pair becomes a frameset (so `rs.align` works as on a
live camera). Used for recordings played not in real time (keep-all delivery).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Optional

from drivers.errors import CameraError, RecordingEndedError

log = logging.getLogger(__name__)

QUEUE = 8  # frames held per stream before the file is held back
DEPTH_WAIT_S = 2.0  # a colour frame waits this long at most for its depth (then it is delivered alone)
QUIET_S = 0.3  # stopped and silent this long: the file has ended
START_QUIET_S = 5.0  # before the first frame


def _kind(profile) -> str:
    return str(profile.stream_type()).split(".")[-1]


class SensorPlayback:
    """`want`: {"color"/"depth": (width, height, format name, fps)} exactly as recorded."""

    def __init__(self, rs, path: str, want: dict):
        self.rs, self.path, self.want = rs, str(path), dict(want)
        self.profiles: dict = {}
        self.device = None
        self._ctx = self._playback = None
        self._sensors: list = []
        self._cond = threading.Condition()
        self._queues = {k: collections.deque() for k in self.want}
        self._closing = False
        self._last = time.monotonic()
        self._started = time.monotonic()
        self._seen = 0
        self._block = self._out = None

    # --- open / close ---------------------------------------------------------------------------------------------
    def open(self) -> None:
        rs = self.rs
        self._ctx = rs.context()
        self.device = self._ctx.load_device(self.path)
        self._playback = self.device.as_playback()
        self._playback.set_real_time(False)
        self._playback.pause()  # nothing plays before every stream is subscribed
        available = []
        for sensor in self.device.query_sensors():
            chosen = []
            for p in sensor.get_stream_profiles():
                if not p.is_video_stream_profile():
                    continue
                v = p.as_video_stream_profile()
                key = (_kind(p), (v.width(), v.height(), str(p.format()).split(".")[-1], p.fps()))
                available.append(f"{key[0]} {key[1][0]}x{key[1][1]} {key[1][2]} @ {key[1][3]}")
                if key[0] in self.want and key[0] not in self.profiles and self.want[key[0]] == key[1]:
                    chosen.append(p)
                    self.profiles[key[0]] = p
            if chosen:
                sensor.open(chosen)
                sensor.start(self._on_frame)
                self._sensors.append(sensor)
        missing = sorted(set(self.want) - set(self.profiles))
        if missing:
            self.close()
            asked = ", ".join(f"{k} {w}x{h} {f} @ {fps}" for k, (w, h, f, fps) in sorted(self.want.items()))
            raise CameraError(f"recording {self.path!r}: no recorded stream matches {asked} (recorded: "
                              f"{'; '.join(available) or 'none'}). Playback does no conversion: request exactly the "
                              f"recorded streams (see `imagewam-edge camera info {self.path}`)")
        self._out = rs.frame_queue(4, keep_frames=True)
        self._block = rs.processing_block(self._compose)
        self._block.start(self._out)
        self._started = self._last = time.monotonic()
        self._playback.resume()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._playback is not None:
            try:  # no callback may run while the sensors stop
                self._playback.pause()
            except RuntimeError as exc:
                log.debug("recording %s: pause: %s", self.path, exc)
            time.sleep(0.05)
        for sensor in self._sensors:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError as exc:
                    log.debug("recording %s: %s", self.path, exc)
        self._sensors = []
        with self._cond:
            for q in self._queues.values():
                q.clear()
        if self._ctx is not None:
            try:
                self._ctx.unload_device(self.path)
            except RuntimeError as exc:
                log.debug("recording %s: unload: %s", self.path, exc)
        self._ctx = self._playback = self.device = None

    # --- frames ---------------------------------------------------------------------------------------------------
    def _on_frame(self, frame) -> None:  # librealsense's thread
        kind = _kind(frame.get_profile())
        frame.keep()
        with self._cond:
            q = self._queues.get(kind)
            if q is None:
                return
            while len(q) >= QUEUE and not self._closing:  # hold the file back rather than drop
                self._cond.wait(0.05)
            q.append(frame)
            self._seen += 1
            self._last = time.monotonic()
            self._cond.notify_all()

    def _compose(self, frame, source) -> None:
        source.frame_ready(source.allocate_composite_frame(self._pending))

    def _ended(self) -> bool:
        quiet = time.monotonic() - self._last
        stopped = self._playback.current_status() == self.rs.playback_status.stopped
        return stopped and (quiet >= QUIET_S if self._seen else time.monotonic() - self._started >= START_QUIET_S)

    def _take(self) -> Optional[list]:
        """The next frames to deliver (colour + its depth, colour alone, or depth alone) or None for now; under
        the lock."""
        color, depth = self._queues.get("color"), self._queues.get("depth")
        if color is None:
            return [depth.popleft()] if depth else None
        if not color:
            if depth is not None and depth and self._ended():
                depth.clear()  # depth after the last colour frame: nothing to pair with
            return None
        c = color[0]
        if depth is None:
            return [color.popleft()]
        t = c.get_timestamp()
        tol = 0.5 * 1000.0 / max(1, self.want["color"][3])
        while depth and depth[0].get_timestamp() < t - tol:
            depth.popleft()  # a depth frame with no colour frame of its own
        if depth and abs(depth[0].get_timestamp() - t) <= tol:
            return [color.popleft(), depth.popleft()]
        waited = time.monotonic() - self._last
        if (depth and depth[0].get_timestamp() > t + tol) or self._ended() or \
                (len(color) >= QUEUE and waited >= DEPTH_WAIT_S):
            return [color.popleft()]  # this colour frame has no depth frame
        return None

    def next(self, timeout_s: float):
        """(colour frame or None, depth frame or None, frameset to process or None), or None if nothing came
        within `timeout_s`; RecordingEndedError at the end of the file."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = self._take()
                if got is not None:
                    self._cond.notify_all()
                    break
                if not any(self._queues.values()) and self._ended():
                    raise RecordingEndedError(f"recording {self.path!r} ended (or has no frames of the requested "
                                              "streams); call reconnect() to play it again")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.02))
        color = next((f for f in got if _kind(f.get_profile()) == "color"), None)
        depth = next((f for f in got if _kind(f.get_profile()) == "depth"), None)
        frameset = None
        if color is not None and depth is not None:
            self._pending = [color, depth]
            self._block.invoke(color)
            frameset = self._out.wait_for_frame(2000).as_frameset()
        return color, depth, frameset
