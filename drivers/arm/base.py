"""Arm link interface: `connect / read_state / write(q) -> q_sent / torque(on) / disconnect`, context manager.

Subclasses only move raw integers over the wire (`_open`, `_close`, `_ping`, `_read_raw`, `_write_raw`,
`_torque`); this base converts units through the `JointMapping`, applies the pure safety checks, keeps the
latched e-stop, attaches the last state and command to every fault, and reopens the port after a link failure
(a replugged adapter, a restarted simulator)."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np

from drivers.arm.mapping import JointMapping
from drivers.arm.safety import EStopLatch, SafetyLimits, clip_command
from drivers.errors import ArmError, ArmLinkError, ConfigError, ProtocolError

log = logging.getLogger(__name__)

BAUDRATES = (9600, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 2000000, 3000000, 4000000)


@dataclass(frozen=True)
class LinkConfig:
    port: str
    ids: tuple = (1,)
    baudrate: int = 1_000_000
    timeout_s: float = 0.05  # one transaction (servo links: a floor under the SDK's own packet timeout)
    connect_timeout_s: float = 2.0  # connect() retries opening + pinging this long (a controller still booting)
    torque_off_on_disconnect: bool = True
    low_latency: bool = True  # set the FTDI latency timer to 1 ms when the port is a USB-serial adapter

    def __post_init__(self):
        name = type(self).__name__
        if not isinstance(self.port, str) or not self.port:
            raise ConfigError(f"{name}.port must be a device path such as /dev/ttyUSB0, got {self.port!r}")
        ids = tuple(self.ids) if isinstance(self.ids, (list, tuple)) else None
        if not ids or not all(isinstance(i, int) and 0 <= i <= 252 for i in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"{name}.ids must be a non-empty list of distinct integers 0..252, got {self.ids!r}")
        object.__setattr__(self, "ids", ids)
        if self.baudrate not in BAUDRATES:
            raise ConfigError(f"{name}.baudrate {self.baudrate!r} is not supported; use one of {BAUDRATES}")
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 5):
            raise ConfigError(f"{name}.timeout_s must be in (0, 5] seconds, got {self.timeout_s!r}")
        if not (isinstance(self.connect_timeout_s, (int, float)) and 0 <= self.connect_timeout_s <= 60):
            raise ConfigError(f"{name}.connect_timeout_s must be in [0, 60] seconds, got {self.connect_timeout_s!r}")

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__} must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        missing = [f.name for f in fields(cls) if f.name == "port" and "port" not in d]
        if missing:
            raise ConfigError(f"{cls.__name__}: missing field `port` (e.g. /dev/ttyUSB0)")
        return cls(**d)


@dataclass(frozen=True)
class ArmState:
    q: np.ndarray  # joint units (rad, gripper 0..1), in mapping order
    raw: np.ndarray  # raw controller units
    timestamp: float  # time.monotonic() after the reply arrived


def set_low_latency(port: str) -> bool:
    """FTDI adapters buffer 16 ms by default; set the latency timer to 1 ms through sysfs when possible."""
    dev = os.path.basename(os.path.realpath(port))
    path = f"/sys/bus/usb-serial/devices/{dev}/latency_timer"
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return True
        with open(path, "w") as f:
            f.write("1")
        return True
    except OSError as exc:
        log.warning("%s: cannot set the USB latency timer to 1 ms (%s); reads may take 16 ms. Fix: "
                    "`echo 1 | sudo tee %s` or a udev rule", port, exc, path)
        return False


def packet_timeout_floor(port, timeout_s: float) -> None:
    """Make a vendor SDK PortHandler (dynamixel_sdk / scservo_sdk) wait at least `timeout_s` for a reply.
    The SDKs compute ~34 ms at 1 Mbaud (2 x 16 ms USB latency + 2 ms): right for an idle host on a real bus, too
    tight when the reply depends on a scheduler (a busy machine, a simulator process). `LinkConfig.timeout_s`
    is the floor; the SDK's value wins when larger (long packets at low baud rates)."""
    floor_ms = float(timeout_s) * 1000.0
    sdk_set, sdk_set_ms = port.setPacketTimeout, port.setPacketTimeoutMillis

    def set_packet_timeout(packet_length):
        sdk_set(packet_length)
        port.packet_timeout = max(port.packet_timeout, floor_ms)

    def set_packet_timeout_ms(msec):
        sdk_set_ms(msec)
        port.packet_timeout = max(port.packet_timeout, floor_ms)

    port.setPacketTimeout, port.setPacketTimeoutMillis = set_packet_timeout, set_packet_timeout_ms


class ArmLink:
    """Base class; see module docstring. Not thread-safe: one control thread owns a link."""

    protocol = "base"

    def __init__(self, config: LinkConfig, mapping: Optional[JointMapping] = None,
                 limits: Optional[SafetyLimits] = None):
        self.config = config
        self.mapping = mapping or JointMapping.default(config.ids)
        if self.mapping.ids != list(config.ids):
            raise ConfigError(f"{self.protocol} link on {config.port}: mapping ids {self.mapping.ids} != config ids "
                              f"{list(config.ids)}; list the same ids in the same order")
        lo, hi = self.mapping.limits_in_units()
        self.limits = limits or SafetyLimits.create(self.mapping.n, lower=lo, upper=hi)
        if self.limits.n != self.mapping.n:
            raise ConfigError(f"safety limits for {self.limits.n} joints, mapping has {self.mapping.n}")
        self.estop_latch = EStopLatch()
        self.last_state: Optional[ArmState] = None
        self.last_command: Optional[np.ndarray] = None
        self._last_write_t: Optional[float] = None
        self._connected = False
        self._broken = False

    # --- wire-level hooks -------------------------------------------------------------------------------------
    def _open(self) -> None: raise NotImplementedError
    def _close(self) -> None: raise NotImplementedError
    def _ping(self, id_: int) -> Optional[int]: raise NotImplementedError  # model number or None
    def _read_raw(self) -> np.ndarray: raise NotImplementedError
    def _write_raw(self, raw: np.ndarray) -> None: raise NotImplementedError
    def _torque(self, on: bool) -> None: raise NotImplementedError

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, check_ids: bool = True) -> "ArmLink":
        """Open the port, ping every id and read the state. A controller that does not answer yet (powering up,
        a simulator process still starting) is retried for `connect_timeout_s`; a missing port is not."""
        if self._connected:
            return self
        if self.config.low_latency:
            set_low_latency(self.config.port)
        deadline = time.monotonic() + self.config.connect_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self._connect_once(check_ids)
                return self
            except ArmLinkError as exc:
                self.disconnect(torque_off=False)
                if (not os.path.exists(self.config.port) or isinstance(exc, ProtocolError)
                        or time.monotonic() >= deadline):
                    raise
                log.info("%s link on %s: connect attempt %d failed (%s); retrying", self.protocol,
                         self.config.port, attempt, exc)
                time.sleep(0.05)
            except BaseException:
                self.disconnect(torque_off=False)
                raise

    def _connect_once(self, check_ids: bool) -> None:
        self._open()
        self._connected, self._broken = True, False
        if check_ids:
            missing = [i for i in self.config.ids if self._ping(i) is None]
            if missing:
                raise ArmLinkError(f"{self.protocol} link on {self.config.port}: no answer from id(s) {missing} "
                                   f"of {list(self.config.ids)} at {self.config.baudrate} baud within "
                                   f"{self.config.connect_timeout_s:g} s. Check power, wiring, ids and baud rate "
                                   "(`imagewam-edge arm check`).")
        self.read_state()

    def disconnect(self, torque_off: Optional[bool] = None) -> None:
        """Torque off (by default) and close; never raises for a link that is already gone."""
        if not self._connected:
            return
        torque_off = self.config.torque_off_on_disconnect if torque_off is None else torque_off
        try:
            if torque_off and not self._broken:
                self._torque(False)
        except ArmError as exc:
            log.warning("%s link on %s: torque off at disconnect failed: %s", self.protocol, self.config.port, exc)
        finally:
            self._connected = False
            try:
                self._close()
            except Exception as exc:
                log.warning("%s link on %s: close failed: %s", self.protocol, self.config.port, exc)

    def __enter__(self) -> "ArmLink":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def _guard(self, fn, *args):
        """Run a wire operation: reopen first after a failure, attach last state/command to faults."""
        if not self._connected:
            raise ArmLinkError(f"{self.protocol} link on {self.config.port} is not connected; call connect() first",
                               last_state=self.last_state, last_command=self.last_command)
        if self._broken:
            try:
                self._close()
            except Exception:
                pass
            try:
                self._open()
            except ArmError as exc:
                exc.last_state, exc.last_command = self.last_state, self.last_command
                raise
            self._broken = False
            log.warning("%s link on %s: reopened after a failure", self.protocol, self.config.port)
        try:
            return fn(*args)
        except ArmLinkError as exc:
            self._broken = True
            exc.last_state, exc.last_command = self.last_state, self.last_command
            raise
        except ArmError as exc:
            exc.last_state, exc.last_command = self.last_state, self.last_command
            raise

    # --- public API -------------------------------------------------------------------------------------------
    def read_state(self) -> ArmState:
        raw = self._guard(self._read_raw)
        self.last_state = ArmState(q=self.mapping.to_units(raw), raw=np.asarray(raw), timestamp=time.monotonic())
        return self.last_state

    def write(self, q: Sequence[float], dt: Optional[float] = None) -> np.ndarray:
        """Send a joint command; returns the command actually sent (clipped, quantised to raw units).
        `dt`: seconds since the previous command, for the velocity limit (default: measured)."""
        self.estop_latch.check()
        now = time.monotonic()
        if dt is None and self._last_write_t is not None:
            dt = max(now - self._last_write_t, 1e-3)
        present = self.last_state.q if self.last_state is not None else None
        q_safe, notes = clip_command(q, present, self.limits, dt)
        if notes:
            log.debug("%s: command clipped: %s", self.protocol, "; ".join(notes))
        raw = self.mapping.to_raw(q_safe)
        q_sent = self.mapping.to_units(raw)
        self._guard(self._write_raw, raw)
        self.last_command, self._last_write_t = q_sent, now
        return q_sent

    def torque(self, on: bool) -> None:
        if on:
            self.estop_latch.check()
        self._guard(self._torque, bool(on))

    def estop(self, reason: str = "estop() called") -> None:
        """Latch the e-stop and switch torque off (best effort: the latch holds even if the link is down)."""
        self.estop_latch.trip(reason)
        try:
            self._guard(self._torque, False)
        except ArmError as exc:
            log.error("%s link on %s: torque off during e-stop failed: %s", self.protocol, self.config.port, exc)

    def clear_estop(self) -> None:
        self.estop_latch.clear()

    def ping(self) -> dict:
        """{id: model number or None}."""
        return {i: self._guard(self._ping, i) for i in self.config.ids}


class MultiArm:
    """Several links stepped together (e.g. a dual-arm robot): one joint vector, concatenated in link order."""

    def __init__(self, links: Sequence[ArmLink]):
        if not links:
            raise ConfigError("MultiArm needs at least one link")
        self.links = list(links)
        self.sizes = [l.mapping.n for l in self.links]

    def connect(self) -> "MultiArm":
        done = []
        try:
            for link in self.links:
                link.connect()
                done.append(link)
        except BaseException:
            for link in reversed(done):
                link.disconnect()
            raise
        return self

    def disconnect(self) -> None:
        errors = []
        for link in self.links:
            try:
                link.disconnect()
            except Exception as exc:  # every link gets its chance to switch torque off
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> "MultiArm":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def read_state(self) -> np.ndarray:
        return np.concatenate([l.read_state().q for l in self.links])

    def write(self, q: Sequence[float], dt: Optional[float] = None) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (sum(self.sizes),):
            raise ConfigError(f"MultiArm.write expects {sum(self.sizes)} values ({self.sizes} per link), got {q.shape}")
        for link in self.links:  # every link checks its e-stop before any link moves
            link.estop_latch.check()
        parts = np.split(q, np.cumsum(self.sizes)[:-1])
        sent = []
        try:
            for link, part in zip(self.links, parts):
                sent.append(link.write(part, dt))
        except ArmError as exc:
            for link in self.links:  # one arm failed: stop the others too
                link.estop(f"MultiArm: {type(exc).__name__} on {link.config.port}")
            raise
        return np.concatenate(sent)

    def torque(self, on: bool) -> None:
        for link in self.links:
            link.torque(on)
