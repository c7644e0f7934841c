"""Feetech STS buses (SO-100/101 arms, STS3215) through the vendor SDK `feetech-servo-sdk` (module scservo_sdk).

Packets: FF FF id len instr params ~sum; goal position 42 (2 B), present position 56 (2 B, bit 15 = sign),
torque enable 40. Goal positions go out in one Sync Write, present positions come back with Sync Read, torque
goes to every id in one Sync Write, read back per id (drivers.arm.servo_bus).

No host watchdog: the STS control table has no bus/communication watchdog (its protections are over-load,
over-temperature, voltage and angle limits), so a servo keeps its last goal with torque on when the host dies.
The host must switch torque off itself on every stop path (the control loop does: SIGINT, SIGTERM, SIGHUP, a
fault), and a power switch within reach stays the only protection against a dead host."""
from __future__ import annotations

from dataclasses import dataclass

from drivers.arm.base import LinkConfig
from drivers.arm.servo_bus import ServoBusLink
from drivers.errors import MissingDependencyError

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


class FeetechLink(ServoBusLink):
    protocol = "feetech"
    hint = "Check power (STS needs 7.4-12 V), cable, ids and baud rate"
    ADDR_TORQUE, ADDR_GOAL, GOAL_SIZE = ADDR_TORQUE_ENABLE, ADDR_GOAL_POSITION, 2
    ADDR_PRESENT, PRESENT_SIZE = ADDR_PRESENT_POSITION, 2

    def _import_sdk(self):
        return import_sdk()

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(0)  # STS: little-endian words

    def _decode_present(self, v: int) -> int:
        return _from_sign_magnitude(v)

    def _encode_goal(self, v: int) -> list:
        sm = _to_sign_magnitude(int(v))
        return [sm & 0xFF, (sm >> 8) & 0xFF]
