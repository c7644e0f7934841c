"""Dynamixel Protocol 2.0 buses (X-series control table) through the vendor SDK `dynamixel-sdk`.

Goal positions go out in one Sync Write (0x83); present positions come back with Sync Read (0x82) or Bulk Read
(0x92); torque goes to every id in one Sync Write, read back per id (drivers.arm.servo_bus). While the control
loop runs, the servos' bus watchdog (register 98, units of 20 ms) is armed: if the host goes silent longer than
`watchdog_ms`, every servo stops where it is (goal := present) and ignores goal writes until the watchdog is
cleared (written 0), which `set_watchdog(0)` does at a clean stop. Works on USB-serial adapters (U2D2) and on a
pty (the simulator). X-series servos add a 500 us return delay by default (register 9; set it to 0)."""
from __future__ import annotations

from dataclasses import dataclass

from drivers.arm.servo_bus import ServoBusLink
from drivers.arm.base import LinkConfig
from drivers.errors import ConfigError, MissingDependencyError

# X-series control table (address, size)
ADDR_RETURN_DELAY = 9
ADDR_TORQUE_ENABLE = 64
ADDR_BUS_WATCHDOG = 98
ADDR_GOAL_POSITION = 116
ADDR_PRESENT_POSITION = 132
WATCHDOG_UNIT_MS = 20


def import_sdk():
    try:
        import dynamixel_sdk
    except ImportError as exc:
        raise MissingDependencyError(f"dynamixel-sdk is not installed ({exc}); pip install 'imagewam-edge[arms]'") from exc
    return dynamixel_sdk


def watchdog_units(ms: int) -> int:
    """Register 98 value for a watchdog of `ms` milliseconds: whole 20 ms units, rounded up, 1..127 (0 = off)."""
    if ms <= 0:
        return 0
    return max(1, min(127, -(-int(ms) // WATCHDOG_UNIT_MS)))


@dataclass(frozen=True)
class DynamixelConfig(LinkConfig):
    read_mode: str = "sync"  # "sync" (0x82) or "bulk" (0x92)
    watchdog_ms: int = 100  # bus watchdog armed while the loop runs (20 ms units, up to 2540; 0 = off)

    def __post_init__(self):
        super().__post_init__()
        if self.read_mode not in ("sync", "bulk"):
            raise ConfigError(f"DynamixelConfig.read_mode must be 'sync' or 'bulk', got {self.read_mode!r}")
        if not isinstance(self.watchdog_ms, int) or isinstance(self.watchdog_ms, bool) \
                or not 0 <= self.watchdog_ms <= 127 * WATCHDOG_UNIT_MS:
            raise ConfigError(f"DynamixelConfig.watchdog_ms must be an integer 0..{127 * WATCHDOG_UNIT_MS} (0 = off), "
                              f"got {self.watchdog_ms!r}")


def _signed32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class DynamixelLink(ServoBusLink):
    protocol = "dynamixel"
    ADDR_TORQUE, ADDR_GOAL, GOAL_SIZE = ADDR_TORQUE_ENABLE, ADDR_GOAL_POSITION, 4
    ADDR_PRESENT, PRESENT_SIZE = ADDR_PRESENT_POSITION, 4

    def _import_sdk(self):
        return import_sdk()

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(2.0)

    def _make_reader(self, sdk, port, ph):
        if self.config.read_mode != "bulk":
            return super()._make_reader(sdk, port, ph)
        reader = sdk.GroupBulkRead(port, ph)
        for i in self.config.ids:
            reader.addParam(i, ADDR_PRESENT_POSITION, 4)
        return reader

    def _decode_present(self, v: int) -> int:
        return _signed32(v)

    def _encode_goal(self, v: int) -> list:
        return list(int(v & 0xFFFFFFFF).to_bytes(4, "little"))

    def _watchdog(self, ms: int) -> dict:
        return self._set_all(ADDR_BUS_WATCHDOG, watchdog_units(ms), "bus watchdog")

    @property
    def watchdog_ms(self) -> int:
        return self.config.watchdog_ms
