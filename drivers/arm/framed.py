"""The framed serial protocol for custom MCU arm controllers (spec: docs/framed_protocol.md).

Frame (little-endian):  A5 5A | len u16 | version u8 | type u8 | seq u16 | t_us u32 | payload[len] | crc u16
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over len..payload (everything but the marker and the CRC).
`encode_frame` / `decode_frame` are pure; `FrameParser` is the streaming parser that resyncs after garbage,
truncated frames and bad CRCs. `FramedLink` is the host side over pyserial."""
from __future__ import annotations

import binascii
import collections
import logging
import struct
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.arm.base import LinkConfig, SerialLink
from drivers.arm.mapping import JointMapping
from drivers.arm.safety import SafetyLimits
from drivers.errors import (ArmLinkError, ConfigError, ControllerError, EStopError, MissingDependencyError,
                            PortClosedError, ProtocolError, ReplyCorruptError, ReplyLostError, WatchdogTrippedError)

log = logging.getLogger(__name__)

MARKER = b"\xA5\x5A"
VERSION = 1
HEADER = struct.Struct("<HBBHI")  # len, version, type, seq, t_us  (after the marker)
HEADER_SIZE = 2 + HEADER.size  # 12
CRC_SIZE = 2
MAX_PAYLOAD = 1024
NO_REF = 0xFFFF

# host -> controller
HELLO, HEARTBEAT, READ_STATE, COMMAND = 0x01, 0x02, 0x03, 0x04
TORQUE, ESTOP, CLEAR_ESTOP, SET_WATCHDOG = 0x10, 0x11, 0x12, 0x13  # control frames: acked, retransmitted
CONTROL_TYPES = (TORQUE, ESTOP, CLEAR_ESTOP, SET_WATCHDOG)
# controller -> host (payload starts with u16 ref = seq of the request answered, 0xFFFF if unsolicited)
INFO, HEARTBEAT_REPLY, STATE, ACK, ERROR = 0x81, 0x82, 0x83, 0x90, 0xE0

# status bits (STATE, HEARTBEAT_REPLY)
ST_TORQUE, ST_ESTOP, ST_WATCHDOG, ST_MOVING = 0x01, 0x02, 0x04, 0x08
# error codes (ERROR frames, ACK result)
E_OK, E_BAD_VERSION, E_UNKNOWN_TYPE, E_BAD_PAYLOAD, E_ESTOP, E_WATCHDOG, E_TORQUE_OFF, E_RANGE = 0, 2, 3, 4, 5, 6, 7, 8
ERROR_NAMES = {E_OK: "ok", E_BAD_VERSION: "bad_version", E_UNKNOWN_TYPE: "unknown_type",
               E_BAD_PAYLOAD: "bad_payload", E_ESTOP: "estop_latched", E_WATCHDOG: "watchdog_tripped",
               E_TORQUE_OFF: "torque_off", E_RANGE: "out_of_range"}


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (check value of b'123456789' is 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    t_us: int = 0
    version: int = VERSION


def encode_frame(ftype: int, seq: int, payload: bytes = b"", t_us: Optional[int] = None, version: int = VERSION) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"framed payload of {len(payload)} bytes exceeds the maximum {MAX_PAYLOAD}")
    if t_us is None:
        t_us = int(time.monotonic() * 1e6)
    body = HEADER.pack(len(payload), version, ftype, seq & 0xFFFF, t_us & 0xFFFFFFFF) + payload
    return MARKER + body + struct.pack("<H", crc16(body))


def decode_frame(data: bytes) -> Frame:
    """Exactly one frame; ProtocolError says what is wrong."""
    if len(data) < HEADER_SIZE + CRC_SIZE or data[:2] != MARKER:
        raise ProtocolError(f"not a frame: {len(data)} bytes starting {data[:4].hex()}")
    length, version, ftype, seq, t_us = HEADER.unpack_from(data, 2)
    if len(data) != HEADER_SIZE + length + CRC_SIZE:
        raise ProtocolError(f"frame length field {length} does not match {len(data) - HEADER_SIZE - CRC_SIZE} payload bytes")
    (crc,) = struct.unpack_from("<H", data, HEADER_SIZE + length)
    if crc != crc16(data[2:HEADER_SIZE + length]):
        raise ProtocolError("frame CRC mismatch")
    return Frame(ftype, seq, bytes(data[HEADER_SIZE:HEADER_SIZE + length]), t_us, version)


class FrameParser:
    """Streaming parser: `feed(bytes) -> [Frame]`. Bytes before a marker are skipped; a header with an impossible
    length or a frame with a bad CRC drops one byte and the search restarts, so a good frame hidden inside a
    truncated one is still found. Counters: garbage_bytes, bad_crc, bad_length, frames."""

    def __init__(self):
        self.buf = bytearray()
        self.garbage_bytes = self.bad_crc = self.bad_length = self.frames = 0

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        buf = self.buf
        while True:
            i = buf.find(MARKER)
            if i < 0:
                keep = 1 if buf.endswith(MARKER[:1]) else 0
                self.garbage_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if i:
                self.garbage_bytes += i
                del buf[:i]
            if len(buf) < HEADER_SIZE:
                break
            length = buf[2] | (buf[3] << 8)
            if length > MAX_PAYLOAD:
                self.bad_length += 1
                del buf[:1]
                continue
            total = HEADER_SIZE + length + CRC_SIZE
            if len(buf) < total:
                break
            crc = buf[total - 2] | (buf[total - 1] << 8)
            if crc != crc16(bytes(buf[2:total - 2])):
                self.bad_crc += 1
                del buf[:1]
                continue
            _, version, ftype, seq, t_us = HEADER.unpack_from(buf, 2)
            out.append(Frame(ftype, seq, bytes(buf[HEADER_SIZE:total - 2]), t_us, version))
            self.frames += 1
            del buf[:total]
        return out


# --- payload helpers (shared with the simulator) -----------------------------------------------------------------
def pack_positions(values) -> bytes:
    v = np.asarray(values, dtype="<i4")
    return struct.pack("<B", v.size) + v.tobytes()


def unpack_positions(payload: bytes, offset: int = 0) -> tuple[np.ndarray, int]:
    n = payload[offset]
    end = offset + 1 + 4 * n
    if len(payload) < end:
        raise ProtocolError(f"positions block claims {n} joints but has {len(payload) - offset - 1} bytes")
    return np.frombuffer(payload[offset + 1:end], dtype="<i4").astype(np.int64), end


# --- host side ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FramedConfig(LinkConfig):
    watchdog_ms: int = 200  # controller stops the arm when the host is silent this long (0 = off)
    retries: int = 3  # control frames are retransmitted (same seq) this many times without an ACK

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.watchdog_ms, int) or not 0 <= self.watchdog_ms <= 60000:
            raise ConfigError(f"FramedConfig.watchdog_ms must be an integer 0..60000, got {self.watchdog_ms!r}")


class FramedLink(SerialLink):
    """Host side of the framed protocol. Positions are int32 controller units (microradians recommended: use
    `JointMapping.default(ids, units_per_rad=1e6, offset=0, raw_min=-2**31, raw_max=2**31-1)`)."""

    protocol = "framed"

    def __init__(self, config: FramedConfig, mapping: Optional[JointMapping] = None,
                 limits: Optional[SafetyLimits] = None):
        mapping = mapping or self.default_mapping(config.ids)
        super().__init__(config, mapping, limits or SafetyLimits.create(mapping.n))
        self._ser = None
        self._parser = FrameParser()
        self._seq = 0
        self._unanswered = collections.deque(maxlen=16)  # seqs given up on: a reply to one arriving later was late
        self.status = 0
        self.info: dict = {}

    @classmethod
    def default_mapping(cls, ids) -> JointMapping:
        """Framed controllers speak int32 microradians: 1e6 units per radian, 0 at q = 0."""
        return JointMapping.default(ids, units_per_rad=1e6, offset=0, raw_min=-2**31, raw_max=2**31 - 1)

    def _open(self) -> None:
        try:
            import serial
        except ImportError as exc:
            raise MissingDependencyError("pyserial is missing: pip install 'imagewam-edge[arms]'") from exc
        try:
            self._ser = serial.Serial(self.config.port, self.config.baudrate, timeout=0)
        except (serial.SerialException, OSError) as exc:
            raise ArmLinkError(f"framed link: cannot open {self.config.port}: {exc}. Check the device path "
                               "(ls /dev/ttyUSB* /dev/ttyACM*), permissions (dialout group) and that the controller "
                               "(or `imagewam-edge arm sim`) is running") from exc
        self._parser = FrameParser()
        self._ser.reset_input_buffer()
        reply = self._request(HELLO, b"", (INFO,))
        ref, version, n = struct.unpack_from("<HBB", reply.payload)
        ids = list(reply.payload[4:4 + n])
        (wd,) = struct.unpack_from("<H", reply.payload, 4 + n)
        self.info = {"version": version, "ids": ids, "watchdog_ms": wd}
        if version != VERSION:
            raise ProtocolError(f"framed controller on {self.config.port} speaks version {version}, this host {VERSION}; "
                                "update the controller firmware or the host package")
        if ids != list(self.config.ids):
            raise ConfigError(f"framed controller on {self.config.port} has joints {ids}, config says "
                              f"{list(self.config.ids)}; fix `ids`")
        if wd != self.config.watchdog_ms:
            self._control(SET_WATCHDOG, struct.pack("<H", self.config.watchdog_ms))

    def _close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            finally:
                self._ser = None

    # --- transactions -----------------------------------------------------------------------------------------
    def _send(self, ftype: int, payload: bytes, seq: Optional[int] = None) -> int:
        if seq is None:
            self._seq = (self._seq + 1) & 0xFFFF
            seq = self._seq
        try:
            self._ser.write(encode_frame(ftype, seq, payload))
        except Exception as exc:  # serial.SerialException / OSError: the device went away
            raise PortClosedError(f"framed link: write to {self.config.port} failed ({exc}); the controller or adapter "
                               "is gone. Reconnect it; the next call reopens the port.") from exc
        return seq

    def _wait(self, seq: int, expect: tuple, timeout: float) -> Optional[Frame]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._ser.timeout = remaining
                data = self._ser.read(max(1, self._ser.in_waiting))
            except Exception as exc:
                raise PortClosedError(f"framed link: read from {self.config.port} failed ({exc}); the controller or "
                                   "adapter is gone. Reconnect it; the next call reopens the port.") from exc
            for frame in self._parser.feed(data):
                ref = struct.unpack_from("<H", frame.payload)[0] if len(frame.payload) >= 2 else NO_REF
                if frame.type == ERROR and ref in (seq, NO_REF):
                    code = frame.payload[2] if len(frame.payload) > 2 else 0
                    msg = frame.payload[3:].decode("utf-8", "replace")
                    if ref == NO_REF and code == E_WATCHDOG:
                        self.status |= ST_WATCHDOG
                        continue  # unsolicited report; the answer to our request follows
                    if ref == seq:
                        raise self._controller_error(code, msg)
                elif frame.type in expect and ref == seq:
                    return frame
                elif frame.type == STATE and ref in self._unanswered:
                    self._unanswered.remove(ref)
                    self.health.record_late()  # an earlier request's reply, after it was given up

    def _controller_error(self, code: int, msg: str):
        port = self.config.port
        if code == E_ESTOP:
            self.estop_latch.trip(f"controller on {port} reports e-stop latched")
            return EStopError(f"framed controller on {port}: e-stop latched ({msg}); fix the cause, then "
                              "clear_estop() and torque(True)")
        if code == E_WATCHDOG:
            return WatchdogTrippedError(f"framed controller on {port}: watchdog tripped, the host was silent for "
                                        f"more than {self.config.watchdog_ms} ms ({msg}); the arm holds position. "
                                        "Send commands/heartbeats faster, then torque(True) to re-arm")
        if code == E_TORQUE_OFF:
            return ControllerError(f"framed controller on {port}: torque is off ({msg}); call torque(True) first")
        return ControllerError(f"framed controller on {port}: error {ERROR_NAMES.get(code, code)} ({msg})")

    def _request(self, ftype: int, payload: bytes, expect: tuple, budget_s: Optional[float] = None) -> Frame:
        """Send a request and wait `budget_s` (default config.timeout_s) for its reply; ReplyLostError when nothing
        valid came back (ReplyCorruptError when bad frames arrived meanwhile)."""
        budget = self.config.timeout_s if budget_s is None else budget_s
        bad_before = self._parser.bad_crc + self._parser.bad_length
        seq = self._send(ftype, payload)
        reply = self._wait(seq, expect, budget)
        if reply is None:
            self._unanswered.append(seq)
            corrupt = self._parser.bad_crc + self._parser.bad_length > bad_before
            cls = ReplyCorruptError if corrupt else ReplyLostError
            raise cls(f"framed link: no {'valid ' if corrupt else ''}reply from the controller on {self.config.port} "
                      f"within {budget * 1000:.1f} ms (request type 0x{ftype:02x}, seq {seq}). Check power, cable "
                      "and baud rate.")
        return reply

    def _control(self, ftype: int, payload: bytes = b"") -> None:
        """Acked control frame, retransmitted with the same seq (the controller executes a seq once)."""
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        for attempt in range(1 + self.config.retries):
            self._send(ftype, payload, seq=seq)
            ack = self._wait(seq, (ACK,), self.config.timeout_s)
            if ack is not None:
                code = ack.payload[2]
                if code != E_OK:
                    raise self._controller_error(code, f"control frame 0x{ftype:02x} refused")
                return
            log.warning("framed link %s: no ACK for control frame 0x%02x seq %d (attempt %d)", self.config.port,
                        ftype, seq, attempt + 1)
        raise ArmLinkError(f"framed link: control frame 0x{ftype:02x} not acknowledged by the controller on "
                           f"{self.config.port} after {1 + self.config.retries} attempts")

    def _state(self, frame: Frame) -> np.ndarray:
        self.status = frame.payload[2]
        raw, _ = unpack_positions(frame.payload, 3)
        if raw.size != self.mapping.n:
            raise ProtocolError(f"framed controller on {self.config.port} sent {raw.size} joints, expected {self.mapping.n}")
        return raw

    # --- SerialLink hooks ------------------------------------------------------------------------------------
    def _ping(self, id_: int) -> Optional[int]:
        return 0 if id_ in self.info.get("ids", []) else None

    def _read_raw(self, budget_s: float) -> np.ndarray:
        return self._state(self._request(READ_STATE, b"", (STATE,), budget_s))

    def _write_raw(self, raw: np.ndarray, budget_s: float) -> np.ndarray:
        """COMMAND; its reply is the controller's state, waited for at most `budget_s` (a refusal, e.g. watchdog
        tripped or torque off, raises; a lost reply raises ReplyError, which the base counts without failing the
        write: the command has left)."""
        return self._state(self._request(COMMAND, pack_positions(raw), (STATE,), budget_s))

    def _torque_ids(self, on: bool) -> dict:
        """The controller switches every joint with one acked TORQUE frame (retransmitted with the same seq)."""
        try:
            self._control(TORQUE, bytes([1 if on else 0]))
            ok = True
        except (PortClosedError, ControllerError):
            raise
        except ArmLinkError as exc:  # no ACK after the retries
            log.error("framed link %s: %s", self.config.port, exc)
            ok = False
        return {i: ok for i in self.config.ids}

    # --- framed-only ------------------------------------------------------------------------------------------
    def heartbeat(self) -> int:
        """Feed the controller watchdog when there is nothing to command; returns the status bits."""
        reply = self._guard(self._request, HEARTBEAT, b"", (HEARTBEAT_REPLY,))
        self.status = reply.payload[2]
        return self.status

    def estop(self, reason: str = "estop() called") -> None:
        """Latch the e-stop here AND on the controller (which cuts torque and latches too). The link stays active
        on this host: the controller owns its latch and refuses every command itself (EStopError, then "torque is
        off" once cleared) until clear_estop() and torque(True)."""
        self.estop_latch.trip(reason)
        try:
            self._guard(self._control, ESTOP)
        except (ArmLinkError, ControllerError) as exc:  # the host latch holds even if the controller is unreachable
            log.error("framed link %s: ESTOP frame not delivered: %s", self.config.port, exc)

    def clear_estop(self) -> None:
        self._guard(self._control, CLEAR_ESTOP)
        self.estop_latch.clear()
