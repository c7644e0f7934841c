"""Dynamixel Protocol 2.0 buses (X-series control table) through the vendor SDK `dynamixel-sdk`.

Goal positions go out in one Sync Write (0x83); present positions come back with Sync Read (0x82) or Bulk Read
(0x92); torque goes to every id in one Sync Write, read back per id (the shared wire work: drivers.arm.servo_bus).
While the control loop runs, the servos' bus watchdog (register 98, units of 20 ms) is armed: if the host goes
silent longer than `watchdog_ms`, every servo stops where it is (goal := present) and ignores goal writes until the
watchdog is cleared (written 0), which `set_watchdog(0)` does at a clean stop. Works on USB-serial adapters (U2D2)
and on a pty (the simulator). X-series servos add a 500 us return delay by default (register 9; set it to 0)."""
from __future__ import annotations

from dataclasses import dataclass

from drivers.arm.base import LinkConfig
from drivers.arm.servo_bus import Register, ServoBus, ServoBusLink, TwosComplement
from drivers.errors import ConfigError

# X-series control table
RETURN_DELAY = Register(9, 1)
TORQUE_ENABLE = Register(64, 1)
BUS_WATCHDOG = Register(98, 1)
GOAL_POSITION = Register(116, 4)
PRESENT_POSITION = Register(132, 4)
WATCHDOG_UNIT_MS = 20
WATCHDOG_MAX_UNITS = 127

BUS = ServoBus("dynamixel", sdk_module="dynamixel_sdk", sdk_package="dynamixel-sdk", packet_protocol=2.0,
               torque=TORQUE_ENABLE, goal=GOAL_POSITION, present=PRESENT_POSITION,
               position=TwosComplement(32))


def watchdog_units(ms: int) -> int:
    """Register 98 value for a watchdog of `ms` milliseconds: whole 20 ms units, rounded up, 1..127 (0 = off)."""
    if ms <= 0:
        return 0
    return max(1, min(WATCHDOG_MAX_UNITS, -(-int(ms) // WATCHDOG_UNIT_MS)))


@dataclass(frozen=True)
class DynamixelConfig(LinkConfig):
    read_mode: str = "sync"  # "sync" (0x82) or "bulk" (0x92)
    watchdog_ms: int = 100  # bus watchdog armed while the loop runs (20 ms units, up to 2540; 0 = off)

    def __post_init__(self):
        super().__post_init__()
        if self.read_mode not in ("sync", "bulk"):
            raise ConfigError(f"DynamixelConfig.read_mode must be 'sync' or 'bulk', got {self.read_mode!r}")
        top = WATCHDOG_MAX_UNITS * WATCHDOG_UNIT_MS
        if not isinstance(self.watchdog_ms, int) or isinstance(self.watchdog_ms, bool) \
                or not 0 <= self.watchdog_ms <= top:
            raise ConfigError(f"DynamixelConfig.watchdog_ms must be an integer 0..{top} (0 = off), "
                              f"got {self.watchdog_ms!r}")


class DynamixelLink(ServoBusLink):
    BUS = BUS
    CONFIG = DynamixelConfig

    def _make_reader(self, sdk, port, ph):
        if self.config.read_mode != "bulk":
            return super()._make_reader(sdk, port, ph)
        reader = sdk.GroupBulkRead(port, ph)
        for i in self.config.ids:
            reader.addParam(i, PRESENT_POSITION.addr, PRESENT_POSITION.size)
        return reader

    def _watchdog(self, ms: int) -> dict:
        return self._set_all(BUS_WATCHDOG.addr, watchdog_units(ms), "bus watchdog")

    @property
    def watchdog_ms(self) -> int:
        return self.config.watchdog_ms
