"""Intel RealSense cameras through pyrealsense2: live devices and recordings (.db3 from librealsense >= 2.57,
.bag from older versions) through the same code path.

- select a device by serial number; colour resolution / fps / format; optional depth aligned to colour (rs.align);
- intrinsics, depth-to-colour extrinsics and depth scale from the stream profiles;
- a capture thread keeps the newest frame (live) or queues every frame (recordings played as fast as possible);
- a live camera that stops delivering is restarted (reconnect) while readers get CameraStalledError;
- playback: `as_playback().set_real_time(False)` is set BEFORE pipeline.start, otherwise frames drop. Playback
  does no format conversion: request exactly what was recorded (see `recording_streams`).
pyrealsense2 is imported lazily; it needs libusb-1.0-0 (`apt-get install libusb-1.0-0`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.camera.base import Camera, Extrinsics, Frame, Intrinsics
from drivers.camera.rs_files import _check_file, _intrinsics, import_rs, recording_streams
from drivers.errors import CameraError, CameraNotFoundError, ConfigError, RecordingEndedError
from edge.strict import StrictConfig, setting

log = logging.getLogger(__name__)
# re-exported: callers import these from here
__all__ = ["import_rs", "recording_streams", "list_devices", "RealSenseConfig", "RealSenseCamera"]

COLOR_FORMATS = ("rgb8", "bgr8")
RECORDING_SUFFIXES = (".db3", ".bag")


@dataclass(frozen=True)
class RealSenseConfig(StrictConfig):
    # None: the only connected camera (or the device in playback_file); YAML reads 123456789 as a number: taken as text
    serial: Optional[str] = setting(None, number_as_text=True)
    width: int = 640
    height: int = 480
    fps: int = 30
    color_format: str = "rgb8"  # frames are always delivered RGB; bgr8 is converted
    depth: bool = True
    depth_width: Optional[int] = None  # default: same as colour
    depth_height: Optional[int] = None
    align: bool = True  # depth resampled into the colour camera (same H, W as colour)
    playback_file: Optional[str] = None  # a .db3/.bag recording instead of a live camera
    real_time: bool = False  # playback only: True plays at recorded speed (drops frames if slow)
    stall_timeout_s: float = 1.0
    auto_reconnect: bool = True  # live only: restart the pipeline when the camera stalls

    def __post_init__(self):
        for name in ("width", "height", "fps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"RealSenseConfig.{name} must be a positive integer, got {v!r}")
        for name in ("depth_width", "depth_height"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"RealSenseConfig.{name} must be a positive integer or null, got {v!r}")
        if self.color_format not in COLOR_FORMATS:
            raise ConfigError(f"RealSenseConfig.color_format must be one of {COLOR_FORMATS}, got {self.color_format!r}")
        if self.serial is not None and not isinstance(self.serial, str):
            raise ConfigError(f"RealSenseConfig.serial must be a string (quote it in YAML), got {self.serial!r}")
        if not (isinstance(self.stall_timeout_s, (int, float)) and self.stall_timeout_s > 0):
            raise ConfigError(f"RealSenseConfig.stall_timeout_s must be > 0, got {self.stall_timeout_s!r}")
        if self.playback_file is not None:
            if not str(self.playback_file).endswith(RECORDING_SUFFIXES):
                raise ConfigError(f"RealSenseConfig.playback_file must end with .db3 or .bag, got {self.playback_file!r}")



def list_devices() -> list[dict]:
    """Connected RealSense devices: serial, name, firmware, USB type."""
    rs = import_rs()
    out = []
    for dev in rs.context().query_devices():
        info = {}
        for key, field in (("serial", "serial_number"), ("name", "name"), ("firmware", "firmware_version"),
                           ("usb", "usb_type_descriptor")):
            cinfo = getattr(rs.camera_info, field)
            info[key] = dev.get_info(cinfo) if dev.supports(cinfo) else None
        out.append(info)
    return out


# A playback has ended when the device raised its "stopped" event (end of file: every frame has then been handed
# to the pipeline) and the pipeline queue is empty. Polling current_status() alone is not enough: it also says
# "stopped" before the reader thread runs, which on a loaded machine can last longer than any fixed quiet time.
# The poll is kept only as a fallback should the event never come, after this much silence.
END_FALLBACK_QUIET_S = 5.0  # before the first frame of a playback: silence this long while stopped = no frames
END_QUIET_S = 1.0  # after frames have flowed: stopped and silent this long = the recording ended


class RealSenseCamera(Camera):
    """One RealSense camera (live, by serial) or one recording, behind the `Camera` interface."""

    def __init__(self, config: Optional[RealSenseConfig] = None):
        self.config = config or RealSenseConfig()
        super().__init__(stall_timeout_s=self.config.stall_timeout_s)
        self.is_playback = self.config.playback_file is not None
        self.keep_all = self.is_playback and not self.config.real_time
        self.serial = self.config.serial or (os.path.basename(self.config.playback_file) if self.is_playback else "")
        self.intrinsics: Optional[Intrinsics] = None  # colour stream
        self.depth_intrinsics: Optional[Intrinsics] = None
        self.depth_to_color: Optional[Extrinsics] = None
        self.depth_scale: Optional[float] = None  # metres per depth unit
        self.restarts = 0
        self._rs = None
        self._pipeline = None
        self._align = None
        self._playback = None
        self._frames_since_start = 0
        self._subscription = None  # keeps the status-changed subscription alive
        self._silent_since: Optional[float] = None
        self._last_restart = 0.0
        self._last_number = -1
        # streams played: live always what the config asks; a recording what it holds (see _plan_playback)
        self._streams: set = {"color", "depth"} if self.config.depth else {"color"}
        self._planned = False
        self.playback_warning: Optional[str] = None
        self._sensor_playback = None  # recordings played as fast as possible (keep-all)
        self._warned_unpaired = False

    # --- open / close -----------------------------------------------------------------------------------------
    def _rs_config(self):
        rs, c = self._rs, self.config
        cfg = rs.config()
        if self.is_playback:
            if not self._planned:
                self._plan_playback()
                self._planned = True
            cfg.enable_device_from_file(str(c.playback_file), repeat_playback=False)
        else:
            devices = list_devices()
            if not devices:
                raise CameraNotFoundError(
                    "no RealSense camera is connected (pyrealsense2 sees no device). Plug it into a USB3 port, check "
                    "`lsusb | grep 8086` and the udev rules (librealsense scripts/setup_udev_rules.sh); to use a "
                    "recording instead set playback_file.")
            serials = [d["serial"] for d in devices]
            if c.serial is not None and c.serial not in serials:
                raise CameraNotFoundError(f"no RealSense camera with serial {c.serial!r}; connected: {serials}. "
                                          "Fix `serial` in the camera config (see `imagewam-edge camera info`).")
            if c.serial is None and len(serials) > 1:
                raise ConfigError(f"{len(serials)} RealSense cameras are connected ({serials}); set `serial` in "
                                  "each camera config to choose one")
            self.serial = c.serial or serials[0]
            cfg.enable_device(self.serial)
        fmt = getattr(rs.format, c.color_format)
        if "color" in self._streams:
            cfg.enable_stream(rs.stream.color, c.width, c.height, fmt, c.fps)
        if "depth" in self._streams:
            cfg.enable_stream(rs.stream.depth, c.depth_width or c.width, c.depth_height or c.height, rs.format.z16, c.fps)
        return cfg

    def _plan_playback(self) -> None:
        """Recordings: play depth + colour as framesets only when the file has both and they pair; otherwise the
        stream that is there, with a warning (a pipeline waiting for framesets that never come only sees silence)."""
        from drivers.camera.recording_scan import plan_playback

        _check_file(self.config.playback_file)
        self._streams, warning = plan_playback(str(self.config.playback_file), True, self.config.depth)
        self.playback_warning = warning
        if warning:
            log.warning("%s", warning)

    def _start_pipeline(self) -> None:
        rs = self._rs
        cfg = self._rs_config()
        pipeline = rs.pipeline()
        try:
            if self.is_playback:
                # resolve first so real-time can be switched off BEFORE start (otherwise frames drop)
                # keep the resolved profile alive until start: start() must reuse this very device object
                resolved = cfg.resolve(pipeline)
                playback = resolved.get_device().as_playback()
                playback.set_real_time(bool(self.config.real_time))
                # no status-changed callback: a Python callback fired by librealsense while pipeline.stop() runs
                # crashed the process (segfault in CI); the end is decided by polling in _grab instead
                self._subscription = (resolved, playback)
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            c = self.config
            what = f"recording {c.playback_file!r}" if self.is_playback else f"camera {self.serial!r}"
            hint = ("playback does no conversion: request exactly the recorded streams (see `imagewam-edge camera info "
                    f"{c.playback_file}`)" if self.is_playback else "check the mode with `rs-enumerate-devices`")
            asked = " + ".join(([f"color {c.width}x{c.height} {c.color_format}"] if "color" in self._streams else [])
                               + ([f"depth {c.depth_width or c.width}x{c.depth_height or c.height} z16"]
                                  if "depth" in self._streams else []))
            raise CameraError(f"{what}: cannot start {asked} @ {c.fps} fps: {exc}; {hint}") from exc
        dev = profile.get_device()
        self._take_profiles(dev, profile.get_stream(rs.stream.color) if "color" in self._streams else None,
                            profile.get_stream(rs.stream.depth) if "depth" in self._streams else None)
        self._playback = dev.as_playback() if self.is_playback else None
        if self._playback is not None:
            self._playback.set_real_time(bool(self.config.real_time))  # again on the started device (idempotent)
        self._last_number = -1
        self._pipeline = pipeline
        self._silent_since = None
        self._frames_since_start = 0

    def _take_profiles(self, dev, color, depth) -> None:
        """Serial, intrinsics, depth-to-colour extrinsics, depth scale and the aligner from the started profiles."""
        rs = self._rs
        if dev.supports(rs.camera_info.serial_number):
            self.serial = self.config.serial or dev.get_info(rs.camera_info.serial_number)
        if color is not None:
            self.intrinsics = _intrinsics(color)
        if depth is not None:
            self.depth_intrinsics = _intrinsics(depth)
            if color is not None:
                try:
                    e = depth.get_extrinsics_to(color)
                    self.depth_to_color = Extrinsics(np.array(e.rotation, dtype=np.float64).reshape(3, 3).T,
                                                     np.array(e.translation, dtype=np.float64))
                except RuntimeError:
                    log.warning("camera %s: no depth-to-color extrinsics in the device/recording", self.serial)
            self.depth_scale = float(dev.first_depth_sensor().get_depth_scale())
        self._align = rs.align(rs.stream.color) if self.config.align and color is not None and depth is not None \
            else None

    def _start_sensor_playback(self) -> None:
        """A recording played as fast as possible: sensor by sensor, pairs made by timestamp (drivers/camera/playback.py)."""
        from drivers.camera.playback import SensorPlayback

        c = self.config
        _check_file(c.playback_file)
        if not self._planned:
            self._plan_playback()
            self._planned = True
        want = {}
        if "color" in self._streams:
            want["color"] = (c.width, c.height, c.color_format, c.fps)
        if "depth" in self._streams:
            want["depth"] = (c.depth_width or c.width, c.depth_height or c.height, "z16", c.fps)
        player = SensorPlayback(self._rs, str(c.playback_file), want)
        player.open()
        self._take_profiles(player.device, player.profiles.get("color"), player.profiles.get("depth"))
        self._last_number = -1
        self._sensor_playback = player

    def _open(self) -> None:
        self._rs = import_rs()
        if self.keep_all:
            self._start_sensor_playback()
        else:
            self._start_pipeline()

    def _close(self) -> None:
        if self._sensor_playback is not None:
            player, self._sensor_playback = self._sensor_playback, None
            player.close()
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            finally:
                self._pipeline = None
                self._playback = None
                self._subscription = None

    # --- capture ----------------------------------------------------------------------------------------------
    def _convert(self, frames) -> Optional[Frame]:
        arrival = time.monotonic()
        if self._align is not None:
            frames = self._align.process(frames.as_frameset())
        else:
            frames = frames.as_frameset()
        color = frames.get_color_frame() if "color" in self._streams else None
        d = frames.get_depth_frame() if "depth" in self._streams else None
        if ("color" in self._streams and not color) or ("depth" in self._streams and not d):
            return None
        return self._to_frame(color, d, arrival)

    def _to_frame(self, color, d, arrival: float) -> Optional[Frame]:
        img = depth = None
        if color:
            img = np.asanyarray(color.get_data()).copy()  # (H, W, 3) uint8; copy: librealsense reuses its buffers
            if self.config.color_format == "bgr8":
                img = img[:, :, ::-1].copy()
        if d:
            depth = np.asanyarray(d.get_data()).copy()  # (H, W) uint16
        main = color if color else d  # frame number and clock: colour's, or depth's in a depth-only recording
        number = int(main.get_frame_number())
        if self.is_playback and number <= self._last_number:
            return None
        self._last_number = number
        return Frame(color=img, depth=depth, timestamp=arrival, frame_number=number, serial=self.serial,
                     device_timestamp_ms=float(main.get_timestamp()))

    def _grab_recording(self, timeout_s: float) -> Optional[Frame]:
        got = self._sensor_playback.next(timeout_s)  # RecordingEndedError at the end
        if got is None:
            return None
        arrival = time.monotonic()
        color, depth, frameset = got
        if frameset is not None and self._align is not None:
            aligned = self._align.process(frameset)
            color, depth = aligned.get_color_frame(), aligned.get_depth_frame()
        if "depth" in self._streams and "color" in self._streams and depth is None and not self._warned_unpaired:
            self._warned_unpaired = True
            log.warning("recording %s: colour frame %d has no depth frame within half a frame period; it is "
                        "delivered with depth None (and so are later ones like it)", self.config.playback_file,
                        color.get_frame_number())
        return self._to_frame(color, depth, arrival)

    def _grab(self, timeout_s: float) -> Optional[Frame]:
        if self._sensor_playback is not None:
            return self._grab_recording(timeout_s)
        rs = self._rs
        if self._pipeline is None:
            self._try_restart()
            return None
        ok, frames = self._pipeline.try_wait_for_frames(int(timeout_s * 1000))
        frame = self._convert(frames) if ok else None
        if ok and frame is None:
            return None
        if frame is None:
            now = time.monotonic()
            self._silent_since = self._silent_since or now
            quiet = now - self._silent_since
            # "stopped" is also reported before a playback starts delivering: once frames have flowed, stopped +
            # END_QUIET_S of silence is the end; before the first frame, only END_FALLBACK_QUIET_S of it
            if self._playback is not None and (quiet >= END_FALLBACK_QUIET_S or (self._frames_since_start
                                                                                and quiet >= END_QUIET_S)) \
                    and self._playback.current_status() == rs.playback_status.stopped:
                raise RecordingEndedError(f"recording {self.config.playback_file!r} ended (or has no frames of the "
                                          "requested streams); call reconnect() to play it again")
            if not self.is_playback and self.config.auto_reconnect and now - self._silent_since > self.stall_timeout_s:
                self._try_restart()
            return None
        self._silent_since = None
        self._frames_since_start += 1
        return frame

    def _try_restart(self) -> None:
        """Live camera stalled/unplugged: restart the pipeline at most once a second until it is back."""
        now = time.monotonic()
        if now - self._last_restart < 1.0:
            time.sleep(0.05)
            return
        self._last_restart = now
        log.warning("camera %s: no frame for %.1f s, restarting the pipeline", self.serial,
                    now - (self._silent_since or now))
        try:
            self._close()
        except RuntimeError as exc:
            log.warning("camera %s: stop failed: %s", self.serial, exc)
        try:
            self._start_pipeline()
            self.restarts += 1
            log.warning("camera %s: restarted", self.serial)
        except Exception as exc:  # device absent: keep trying; readers see CameraStalledError meanwhile
            log.warning("camera %s: restart failed (%s); retrying", self.serial, exc)

    def info(self) -> dict:
        """Intrinsics, extrinsics and depth scale (after connect)."""
        return {"serial": self.serial, "color_intrinsics": self.intrinsics.to_dict() if self.intrinsics else None,
                "depth_intrinsics": self.depth_intrinsics.to_dict() if self.depth_intrinsics else None,
                "depth_to_color": self.depth_to_color.to_dict() if self.depth_to_color else None,
                "depth_scale": self.depth_scale}
