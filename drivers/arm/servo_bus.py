"""Servo buses driven through a vendor SDK (Dynamixel Protocol 2.0 via `dynamixel-sdk`, Feetech STS via
`feetech-servo-sdk`): the two SDKs share one API, so one class does the wire work and the protocol modules only
give addresses, sizes and value encodings.

- Goal positions: one Sync Write (no reply: it leaves on its deadline whatever happens to reads).
- Present positions: one Sync Read per transaction, its reply wait bounded by the budget the caller gives
  (`drivers.arm.sdk_port`); a lost or corrupt reply raises a transient `ReplyError` (the port stays open).
- Torque: one Sync Write to every id, then read back per id and re-sent to those that did not confirm, so every
  servo gets its chance even when one fails; the per-id outcome is returned (and kept in `torque_report`).
- A port that fails (adapter unplugged, pty gone) raises `PortClosedError`; the next call reopens it."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from drivers.arm.base import ArmLink, LinkConfig
from drivers.arm.sdk_port import budgeted_port
from drivers.errors import ArmLinkError, PortClosedError, ReplyCorruptError, ReplyLostError

log = logging.getLogger(__name__)

TORQUE_ROUNDS = 3  # sync write + read back, repeated for the ids that did not confirm


class ServoBusLink(ArmLink):
    """Subclasses set: protocol, hint, ADDR_TORQUE, ADDR_GOAL, GOAL_SIZE, ADDR_PRESENT, PRESENT_SIZE and implement
    `_import_sdk`, `_packet_handler(sdk)`, `_decode_present(int) -> int`, `_encode_goal(int) -> list[int]`."""

    hint = "Check power, cable, ids and baud rate"
    ADDR_TORQUE = ADDR_GOAL = GOAL_SIZE = ADDR_PRESENT = PRESENT_SIZE = 0

    def __init__(self, config: LinkConfig, mapping=None, limits=None):
        super().__init__(config, mapping, limits)
        self._sdk = None
        self._port = self._ph = self._reader = self._writer = None

    # --- protocol specifics -----------------------------------------------------------------------------------
    def _import_sdk(self): raise NotImplementedError
    def _packet_handler(self, sdk): raise NotImplementedError
    def _decode_present(self, v: int) -> int: raise NotImplementedError
    def _encode_goal(self, v: int) -> list: raise NotImplementedError

    def _make_reader(self, sdk, port, ph):
        reader = sdk.GroupSyncRead(port, ph, self.ADDR_PRESENT, self.PRESENT_SIZE)
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
                   f"{list(self.config.ids)}, {self.config.baudrate} baud). {self.hint}.")

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

    # --- ArmLink hooks ----------------------------------------------------------------------------------------
    def _open(self) -> None:
        sdk = self._sdk = self._import_sdk()
        port = budgeted_port(sdk, self.config.port, self.config.timeout_s * 1000.0)
        try:
            ok = port.openPort() and port.setBaudRate(self.config.baudrate)
        except Exception as exc:  # serial.SerialException: no such device / permission
            raise ArmLinkError(f"{self.protocol} bus: cannot open {self.config.port}: {exc}. Check the device path "
                               "(ls /dev/ttyUSB* /dev/ttyACM*), the dialout group, and that the bus (or "
                               f"`imagewam-edge arm sim --protocol {self.protocol}`) is running") from exc
        if not ok:
            raise ArmLinkError(f"{self.protocol} bus: cannot set {self.config.baudrate} baud on {self.config.port}")
        ph = self._packet_handler(sdk)
        self._port, self._ph = port, ph
        self._writer = sdk.GroupSyncWrite(port, ph, self.ADDR_GOAL, self.GOAL_SIZE)
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
        vals = self._sync_read(self._reader, self.ADDR_PRESENT, self.PRESENT_SIZE, "sync read of present position",
                               budget_s)
        return np.array([self._decode_present(v) for v in vals], dtype=np.int64)

    def _sync_write(self, writer, values: dict, what: str) -> None:
        writer.clearParam()
        for i, data in values.items():
            writer.addParam(i, data)
        result = self._call(what, writer.txPacket)
        self._check_stale()
        if result != self._sdk.COMM_SUCCESS:
            raise self._port_error(what, self._detail(result))

    def _write_raw(self, raw: np.ndarray, budget_s: float) -> None:
        self._sync_write(self._writer, {i: self._encode_goal(int(v)) for i, v in zip(self.config.ids, raw)},
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
        return self._set_all(self.ADDR_TORQUE, 1 if on else 0, f"torque {'on' if on else 'off'}")
