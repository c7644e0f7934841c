"""Feetech STS buses (SO-100/101 arms, STS3215) through the vendor SDK `feetech-servo-sdk` (module scservo_sdk).

Packets: FF FF id len instr params ~sum; goal position 42 (2 B), present position 56 (2 B, bit 15 = sign),
torque enable 40. Goal positions go out in one Sync Write, present positions come back with Sync Read, torque
goes to every id in one Sync Write, read back per id (the shared wire work: drivers.arm.servo_bus).

No host watchdog: the STS control table has no bus/communication watchdog (its protections are over-load,
over-temperature, voltage and angle limits), so a servo keeps its last goal with torque on when the host dies.
The host must switch torque off itself on every stop path (the control loop does: SIGINT, SIGTERM, SIGHUP, a
fault), and a power switch within reach stays the only protection against a dead host."""
from __future__ import annotations

from dataclasses import dataclass

from drivers.arm.base import LinkConfig
from drivers.arm.servo_bus import Register, ServoBus, ServoBusLink, SignMagnitude

# STS control table
TORQUE_ENABLE = Register(40, 1)
GOAL_POSITION = Register(42, 2)
PRESENT_POSITION = Register(56, 2)

BUS = ServoBus("feetech", sdk_module="scservo_sdk", sdk_package="feetech-servo-sdk",
               packet_protocol=0,  # STS: little-endian words
               torque=TORQUE_ENABLE, goal=GOAL_POSITION, present=PRESENT_POSITION,
               position=SignMagnitude(15),
               hint="Check power (STS needs 7.4-12 V), cable, ids and baud rate")


@dataclass(frozen=True)
class FeetechConfig(LinkConfig):
    pass


class FeetechLink(ServoBusLink):
    BUS = BUS
    CONFIG = FeetechConfig
