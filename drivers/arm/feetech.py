"""Feetech STS buses (SO-100/101 arms, STS3215) through the vendor SDK `feetech-servo-sdk` (module scservo_sdk).

Packets: FF FF id len instr params ~sum; goal position 42 (2 B), present position 56 (2 B, bit 15 = sign),
torque enable 40. Goal positions go out in one Sync Write, present positions come back with Sync Read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.arm.base import ArmLink, LinkConfig, packet_timeout_floor
from drivers.errors import ArmLinkError, ControllerError, MissingDependencyError

ADDR_MODEL_NUMBER = 3
ADDR_TORQUE_ENABLE = 40
ADDR_GOAL_POSITION = 42
ADDR_PRESENT_POSITION = 56


def import_sdk():
    try:
        import scservo_sdk
    except ImportError as exc:
        raise MissingDependencyError(f"feetech-servo-sdk is not installed ({exc}); pip install 'imagewam-edge[arms]'") from exc
    return scservo_sdk


@dataclass(frozen=True)
class FeetechConfig(LinkConfig):
    pass


def _from_sign_magnitude(v: int, bit: int = 15) -> int:
    return -(v & ~(1 << bit)) if v & (1 << bit) else v


def _to_sign_magnitude(v: int, bit: int = 15) -> int:
    return (-v) | (1 << bit) if v < 0 else v


class FeetechLink(ArmLink):
    protocol = "feetech"

    def __init__(self, config: FeetechConfig, mapping=None, limits=None):
        super().__init__(config, mapping, limits)
        self._sdk = None
        self._port = self._ph = self._reader = self._writer = None

    def _fail(self, what: str, result: Optional[int] = None, exc: Optional[BaseException] = None) -> ArmLinkError:
        detail = self._ph.getTxRxResult(result) if (result is not None and self._ph) else str(exc)
        return ArmLinkError(f"feetech bus {self.config.port}: {what} failed ({detail}) for ids {list(self.config.ids)} "
                            f"at {self.config.baudrate} baud. Check power (STS needs 7.4-12 V), cable, ids and baud "
                            "rate; the next call reopens the port.")

    def _open(self) -> None:
        sdk = self._sdk = import_sdk()
        port = sdk.PortHandler(self.config.port)
        try:
            ok = port.openPort() and port.setBaudRate(self.config.baudrate)
        except Exception as exc:
            raise ArmLinkError(f"feetech bus: cannot open {self.config.port}: {exc}. Check the device path "
                               "(ls /dev/ttyACM* /dev/ttyUSB*), the dialout group, and that the bus (or "
                               "`imagewam-edge arm sim --protocol feetech`) is running") from exc
        if not ok:
            raise ArmLinkError(f"feetech bus: cannot set {self.config.baudrate} baud on {self.config.port}")
        packet_timeout_floor(port, self.config.timeout_s)
        self._port, self._ph = port, sdk.PacketHandler(0)  # STS: little-endian words
        self._writer = sdk.GroupSyncWrite(port, self._ph, ADDR_GOAL_POSITION, 2)
        self._reader = sdk.GroupSyncRead(port, self._ph, ADDR_PRESENT_POSITION, 2)
        for i in self.config.ids:
            self._reader.addParam(i)

    def _close(self) -> None:
        if self._port is not None:
            try:
                self._port.closePort()
            finally:
                self._port = None

    def _call(self, what, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            raise self._fail(what, exc=exc) from exc

    def _ping(self, id_: int) -> Optional[int]:
        model, result, error = self._call("ping", self._ph.ping, self._port, id_)
        return model if result == self._sdk.COMM_SUCCESS else None

    def _read_raw(self) -> np.ndarray:
        result = self._call("sync read of present position", self._reader.txRxPacket)
        if result != self._sdk.COMM_SUCCESS:
            self._port.ser.reset_input_buffer()  # the SDK's clearPort only flushes output
            raise self._fail("sync read of present position", result)
        out = np.empty(len(self.config.ids), dtype=np.int64)
        for k, i in enumerate(self.config.ids):
            if not self._reader.isAvailable(i, ADDR_PRESENT_POSITION, 2):
                raise self._fail(f"present position of id {i}", self._sdk.COMM_RX_CORRUPT)
            out[k] = _from_sign_magnitude(self._reader.getData(i, ADDR_PRESENT_POSITION, 2))
        return out

    def _write_raw(self, raw: np.ndarray) -> None:
        w = self._writer
        w.clearParam()
        for i, v in zip(self.config.ids, raw):
            sm = _to_sign_magnitude(int(v))
            w.addParam(i, [sm & 0xFF, (sm >> 8) & 0xFF])
        result = self._call("sync write of goal position", w.txPacket)
        if result != self._sdk.COMM_SUCCESS:
            raise self._fail("sync write of goal position", result)

    def _torque(self, on: bool) -> None:
        for i in self.config.ids:
            result, error = self._call("torque", self._ph.write1ByteTxRx, self._port, i, ADDR_TORQUE_ENABLE, 1 if on else 0)
            if result != self._sdk.COMM_SUCCESS:
                raise self._fail(f"torque {'on' if on else 'off'} on id {i}", result)
            if error:
                raise ControllerError(f"feetech id {i} on {self.config.port}: torque write answered "
                                      f"{self._ph.getRxPacketError(error)}")
