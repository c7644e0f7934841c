"""Dynamixel Protocol 2.0 buses (X-series control table) through the vendor SDK `dynamixel-sdk`.

Goal positions go out in one Sync Write (0x83); present positions come back with Sync Read (0x82) or Bulk Read
(0x92). Works on USB-serial adapters (U2D2) and on a pty (the simulator): the SDK opens the port with
pyserial. Note X-series servos add a 500 us return delay by default (register 9; set it to 0)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.arm.base import ArmLink, LinkConfig, packet_timeout_floor
from drivers.errors import ArmLinkError, ConfigError, ControllerError, MissingDependencyError

# X-series control table (address, size)
ADDR_MODEL_NUMBER = 0
ADDR_RETURN_DELAY = 9
ADDR_TORQUE_ENABLE = 64
ADDR_HARDWARE_ERROR = 70
ADDR_BUS_WATCHDOG = 98
ADDR_GOAL_POSITION = 116
ADDR_PRESENT_POSITION = 132


def import_sdk():
    try:
        import dynamixel_sdk
    except ImportError as exc:
        raise MissingDependencyError(f"dynamixel-sdk is not installed ({exc}); pip install 'imagewam-edge[arms]'") from exc
    return dynamixel_sdk


@dataclass(frozen=True)
class DynamixelConfig(LinkConfig):
    read_mode: str = "sync"  # "sync" (0x82) or "bulk" (0x92)

    def __post_init__(self):
        super().__post_init__()
        if self.read_mode not in ("sync", "bulk"):
            raise ConfigError(f"DynamixelConfig.read_mode must be 'sync' or 'bulk', got {self.read_mode!r}")


def _signed32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class DynamixelLink(ArmLink):
    protocol = "dynamixel"

    def __init__(self, config: DynamixelConfig, mapping=None, limits=None):
        super().__init__(config, mapping, limits)
        self._sdk = None
        self._port = self._ph = self._reader = self._writer = None

    def _fail(self, what: str, result: Optional[int] = None, exc: Optional[BaseException] = None) -> ArmLinkError:
        detail = self._ph.getTxRxResult(result) if (result is not None and self._ph) else str(exc)
        return ArmLinkError(f"dynamixel bus {self.config.port}: {what} failed ({detail}) for ids "
                            f"{list(self.config.ids)} at {self.config.baudrate} baud. Check power, cable, ids and baud "
                            "rate; the next call reopens the port.")

    def _open(self) -> None:
        sdk = self._sdk = import_sdk()
        port = sdk.PortHandler(self.config.port)
        try:
            ok = port.openPort() and port.setBaudRate(self.config.baudrate)
        except Exception as exc:  # serial.SerialException: no such device / permission
            raise ArmLinkError(f"dynamixel bus: cannot open {self.config.port}: {exc}. Check the device path "
                               "(ls /dev/ttyUSB*), the dialout group, and that the bus (or `imagewam-edge arm sim "
                               "--protocol dynamixel`) is running") from exc
        if not ok:
            raise ArmLinkError(f"dynamixel bus: cannot set {self.config.baudrate} baud on {self.config.port}")
        packet_timeout_floor(port, self.config.timeout_s)
        self._port, self._ph = port, sdk.PacketHandler(2.0)
        self._writer = sdk.GroupSyncWrite(port, self._ph, ADDR_GOAL_POSITION, 4)
        if self.config.read_mode == "bulk":
            self._reader = sdk.GroupBulkRead(port, self._ph)
            for i in self.config.ids:
                self._reader.addParam(i, ADDR_PRESENT_POSITION, 4)
        else:
            self._reader = sdk.GroupSyncRead(port, self._ph, ADDR_PRESENT_POSITION, 4)
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
        except Exception as exc:  # pyserial raises when the device disappears mid-transaction
            raise self._fail(what, exc=exc) from exc

    def _ping(self, id_: int) -> Optional[int]:
        model, result, error = self._call("ping", self._ph.ping, self._port, id_)
        return model if result == self._sdk.COMM_SUCCESS else None

    def _read_raw(self) -> np.ndarray:
        result = self._call(f"{self.config.read_mode} read of present position", self._reader.txRxPacket)
        if result != self._sdk.COMM_SUCCESS:
            self._port.clearPort()
            raise self._fail(f"{self.config.read_mode} read of present position", result)
        out = np.empty(len(self.config.ids), dtype=np.int64)
        for k, i in enumerate(self.config.ids):
            if not self._reader.isAvailable(i, ADDR_PRESENT_POSITION, 4):
                raise self._fail(f"present position of id {i}", self._sdk.COMM_RX_CORRUPT)
            out[k] = _signed32(self._reader.getData(i, ADDR_PRESENT_POSITION, 4))
        return out

    def _write_raw(self, raw: np.ndarray) -> None:
        w = self._writer
        w.clearParam()
        for i, v in zip(self.config.ids, raw):
            w.addParam(i, list(int(v & 0xFFFFFFFF).to_bytes(4, "little")))
        result = self._call("sync write of goal position", w.txPacket)
        if result != self._sdk.COMM_SUCCESS:
            raise self._fail("sync write of goal position", result)

    def _write1(self, what: str, addr: int, value: int) -> None:
        for i in self.config.ids:
            result, error = self._call(what, self._ph.write1ByteTxRx, self._port, i, addr, value)
            if result != self._sdk.COMM_SUCCESS:
                raise self._fail(f"{what} on id {i}", result)
            if error:
                raise ControllerError(f"dynamixel id {i} on {self.config.port}: {what} answered with "
                                      f"{self._ph.getRxPacketError(error)}; read register {ADDR_HARDWARE_ERROR} "
                                      "(hardware error status) and reboot the servo")

    def _torque(self, on: bool) -> None:
        self._write1("torque " + ("on" if on else "off"), ADDR_TORQUE_ENABLE, 1 if on else 0)

    def set_bus_watchdog(self, ms: int) -> None:
        """Servo-side watchdog (register 98, units of 20 ms; 0 disables): stops the servo if the host goes silent."""
        self._guard(self._write1, "bus watchdog", ADDR_BUS_WATCHDOG, max(0, min(127, int(ms) // 20)))
