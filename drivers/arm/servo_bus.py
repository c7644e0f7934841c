"""The serial-bus base for servos driven through a vendor SDK (Dynamixel Protocol 2.0 via `dynamixel-sdk`,
Feetech STS via `feetech-servo-sdk`), as LeRobot's MotorsBus: the two SDKs share one API (PortHandler,
PacketHandler, GroupSyncRead/Write, read1ByteTxRx, COMM_* codes), so `ServoBusLink` does all the wire work and a
vendor module is a `ServoBus` record: SDK module and pip name, packet protocol, the control-table registers
(torque, goal, present, optional bus watchdog) and the position encoding; a vendor class adds only what the other
vendor lacks (Dynamixel: Bulk Read, the bus watchdog).

- Goal positions: one Sync Write (no reply: it leaves on its deadline whatever happens to reads).
- Present positions: one Sync Read per transaction, its reply wait bounded by the budget the caller gives
  (`drivers.arm.sdk_port`); a lost or corrupt reply raises a transient `ReplyError` (the port stays open).
- Torque: one Sync Write to every id, then read back per id and re-sent to those that did not confirm, so every
  servo gets its chance even when one fails; the per-id outcome is returned (and kept in `torque_report`).
- A port that fails (adapter unplugged, pty gone) raises `PortClosedError`; the next call reopens it."""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.arm.base import LinkConfig, SerialLink
from drivers.arm.sdk_port import budgeted_port
from drivers.errors import (ArmLinkError, ConfigError, MissingDependencyError, PortClosedError, ReplyCorruptError,
                            ReplyLostError)

log = logging.getLogger(__name__)

TORQUE_ROUNDS = 3  # sync write + read back, repeated for the ids that did not confirm


@dataclass(frozen=True)
class Register:
    """One control-table entry: address and size in bytes (little-endian on both vendors' buses)."""

    addr: int
    size: int


@dataclass(frozen=True)
class ServoBus:
    """What one vendor's servo bus is: everything `ServoBusLink` needs to know about it."""

    protocol: str  # "dynamixel", "feetech": also the simulator's and the CLI's name
    sdk_module: str  # the vendor SDK's Python module
    sdk_package: str  # its pip name (for the install hint)
    packet_protocol: float  # PacketHandler(...) argument: Dynamixel protocol 2.0; Feetech byte order (0 = little)
    torque: Register
    goal: Register
    present: Register
    position: "TwosComplement | SignMagnitude"  # how a signed position is stored in the goal/present registers
    hint: str = "Check power, cable, ids and baud rate"

    def import_sdk(self):
        """The SDK module, or MissingDependencyError with the pip command."""
        try:
            return importlib.import_module(self.sdk_module)
        except ImportError as exc:
            raise MissingDependencyError(f"{self.sdk_package} is not installed ({exc}); pip install "
                                         "'imagewam-edge[arms]'") from exc

    def goal_bytes(self, raw: int) -> list:
        """The goal register's bytes for a signed raw position."""
        return list(self.position.encode(int(raw)).to_bytes(self.goal.size, "little"))


@dataclass(frozen=True)
class TwosComplement:
    """A signed position stored in `bits` bits as two's complement (Dynamixel)."""

    bits: int

    def decode(self, v: int) -> int:
        return v - (1 << self.bits) if v & (1 << (self.bits - 1)) else v

    def encode(self, v: int) -> int:
        return v & ((1 << self.bits) - 1)


@dataclass(frozen=True)
class SignMagnitude:
    """A signed position whose sign is bit `sign_bit` and magnitude the bits below (Feetech STS)."""

    sign_bit: int

    def decode(self, v: int) -> int:
        return -(v & ~(1 << self.sign_bit)) if v & (1 << self.sign_bit) else v

    def encode(self, v: int) -> int:
        return (-v) | (1 << self.sign_bit) if v < 0 else v


class ServoBusLink(SerialLink):
    """One vendor servo bus through its SDK. Vendor classes set `BUS` (a `ServoBus`) and `CONFIG` (their config
    class); optional: `_make_reader` (another read instruction), `_watchdog` (a bus watchdog)."""

    BUS: ServoBus
    CONFIG = LinkConfig

    def __init__(self, config: LinkConfig, mapping=None, limits=None):
        if not isinstance(config, self.CONFIG):
            raise ConfigError(f"{type(self).__name__} needs a {self.CONFIG.__name__}, got {type(config).__name__}")
        super().__init__(config, mapping, limits)
        self._sdk = None
        self._port = self._ph = self._reader = self._writer = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "BUS" in cls.__dict__:
            cls.protocol = cls.BUS.protocol

    def _make_reader(self, sdk, port, ph):
        """Present positions of every id in one Sync Read."""
        reg = self.BUS.present
        reader = sdk.GroupSyncRead(port, ph, reg.addr, reg.size)
        for i in self.config.ids:
            reader.addParam(i)
        return reader

    # --- errors -----------------------------------------------------------------------------------------------
    def _detail(self, result: int) -> str:
        try:
            return self._ph.getTxRxResult(result)
        except Exception:
            return f"result {result}"

    def _reply_error(self, what: str, result: int):
        """A transient reply failure, classified from the SDK's result code."""
        cls = ReplyLostError if result == self._sdk.COMM_RX_TIMEOUT else ReplyCorruptError
        return cls(f"{self.protocol} bus {self.config.port}: {what}: {self._detail(result)} (ids "
                   f"{list(self.config.ids)}, {self.config.baudrate} baud). {self.BUS.hint}.")

    def _port_error(self, what: str, detail: str) -> PortClosedError:
        return PortClosedError(f"{self.protocol} bus {self.config.port}: {what} failed ({detail}): the port or "
                               "adapter is gone. Reconnect it; the next call reopens the port.")

    def _call(self, what, fn, *args):
        self._port.is_using = False  # an exception inside the SDK can leave it set (then every call is PORT_BUSY)
        try:
            return fn(*args)
        except Exception as exc:  # pyserial raises when the device disappears mid-transaction
            raise self._port_error(what, f"{type(exc).__name__}: {exc}") from exc

    def _check_stale(self) -> None:
        """Bytes dropped at the start of this transaction were the tail of a reply that came after its budget."""
        if self._port is not None and self._port.stale_bytes:
            self.health.record_late()
            self._port.stale_bytes = 0

    # --- SerialLink hooks ------------------------------------------------------------------------------------
    def _open(self) -> None:
        sdk = self._sdk = self.BUS.import_sdk()
        port = budgeted_port(sdk, self.config.port, self.config.timeout_s * 1000.0)
        try:
            ok = port.openPort() and port.setBaudRate(self.config.baudrate)
        except Exception as exc:  # serial.SerialException: no such device / permission
            raise ArmLinkError(f"{self.protocol} bus: cannot open {self.config.port}: {exc}. Check the device path "
                               "(ls /dev/ttyUSB* /dev/ttyACM*), the dialout group, and that the bus (or "
                               f"`imagewam-edge arm sim --protocol {self.protocol}`) is running") from exc
        if not ok:
            raise ArmLinkError(f"{self.protocol} bus: cannot set {self.config.baudrate} baud on {self.config.port}")
        ph = sdk.PacketHandler(self.BUS.packet_protocol)
        self._port, self._ph = port, ph
        self._writer = sdk.GroupSyncWrite(port, ph, self.BUS.goal.addr, self.BUS.goal.size)
        self._reader = self._make_reader(sdk, port, ph)

    def _close(self) -> None:
        if self._port is not None:
            try:
                self._port.closePort()
            finally:
                self._port = None

    def _ping(self, id_: int) -> Optional[int]:
        self._port.reply_budget_ms = self.config.timeout_s * 1000.0
        model, result, error = self._call("ping", self._ph.ping, self._port, id_)
        return model if result == self._sdk.COMM_SUCCESS else None

    def _sync_read(self, reader, addr: int, size: int, what: str, budget_s: float) -> list:
        self._port.reply_budget_ms = max(0.1, budget_s * 1000.0)
        result = self._call(what, reader.txRxPacket)
        self._check_stale()
        if result == self._sdk.COMM_TX_FAIL:
            raise self._port_error(what, self._detail(result))
        if result != self._sdk.COMM_SUCCESS:
            raise self._reply_error(what, result)
        out = []
        for i in self.config.ids:
            if not reader.isAvailable(i, addr, size):
                raise ReplyCorruptError(f"{self.protocol} bus {self.config.port}: {what}: no data for id {i}")
            out.append(reader.getData(i, addr, size))
        return out

    def _read_raw(self, budget_s: float) -> np.ndarray:
        reg = self.BUS.present
        vals = self._sync_read(self._reader, reg.addr, reg.size, "sync read of present position", budget_s)
        return np.array([self.BUS.position.decode(v) for v in vals], dtype=np.int64)

    def _sync_write(self, writer, values: dict, what: str) -> None:
        writer.clearParam()
        for i, data in values.items():
            writer.addParam(i, data)
        result = self._call(what, writer.txPacket)
        self._check_stale()
        if result != self._sdk.COMM_SUCCESS:
            raise self._port_error(what, self._detail(result))

    def _write_raw(self, raw: np.ndarray, budget_s: float) -> None:
        self._sync_write(self._writer, {i: self.BUS.goal_bytes(v) for i, v in zip(self.config.ids, raw)},
                         "sync write of goal position")

    def hold_present(self) -> None:
        st = self.read_state()
        self._guard(self._write_raw, st.raw, self.config.timeout_s)

    def _set_all(self, addr: int, value: int, what: str) -> dict:
        """Write a 1-byte register of every servo: one Sync Write, then a read-back per id, re-sent to the ids that
        did not confirm (TORQUE_ROUNDS rounds). {id: True when confirmed}. A lost reply or a servo alarm never stops
        the others; a dead port raises PortClosedError."""
        self._port.reply_budget_ms = self.config.timeout_s * 1000.0
        writer = self._sdk.GroupSyncWrite(self._port, self._ph, addr, 1)
        pending = list(self.config.ids)
        confirmed = {i: False for i in pending}
        for _ in range(TORQUE_ROUNDS):
            self._sync_write(writer, {i: [value] for i in pending}, what)
            for i in list(pending):  # one by one: a lost reply (or an alarm) of one servo does not hide the others
                got, result, error = self._call(f"{what} read-back", self._ph.read1ByteTxRx, self._port, i, addr)
                if result == self._sdk.COMM_SUCCESS and got == value:
                    confirmed[i] = True
                    pending.remove(i)
                elif result == self._sdk.COMM_SUCCESS and error:
                    log.warning("%s id %s on %s: %s read back %s with %s", self.protocol, i, self.config.port, what,
                                got, self._ph.getRxPacketError(error))
            if not pending:
                break
        return confirmed

    def _torque_ids(self, on: bool) -> dict:
        return self._set_all(self.BUS.torque.addr, 1 if on else 0, f"torque {'on' if on else 'off'}")
