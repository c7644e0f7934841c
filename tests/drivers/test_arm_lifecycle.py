"""The arm link lifecycle (disconnected -> connected: reading -> active: commands) and MultiArm as an ArmLink, on an
in-memory wire (no process, no SDK): what is allowed in each state, the typed refusal, and that nothing reaches the
wire when a command is refused. Plus the vendor bus records (control table, position encodings, SDK hint)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drivers.arm.base import LinkConfig, SerialLink
from drivers.arm.link import ArmLink, ArmState, LinkState
from drivers.arm.multi import MultiArm
from drivers.arm.servo_bus import Register, SignMagnitude, TwosComplement
from drivers.errors import (ArmLinkError, ConfigError, EStopError, MissingDependencyError, NotActiveError,
                            NotConnectedError)


class MemoryLink(SerialLink):
    """A controller in memory: goals become positions at once; `silent` ids never confirm torque."""

    protocol = "memory"

    def __init__(self, port="mem0", ids=(1, 2, 3), silent=()):
        super().__init__(LinkConfig(port=port, ids=ids, low_latency=False, connect_timeout_s=0))
        self.raw = np.full(len(ids), 2048, dtype=np.int64)
        self.torque_on = {i: False for i in ids}
        self.silent = set(silent)
        self.writes = []

    def _open(self): pass
    def _close(self): pass
    def _ping(self, id_): return 1020
    def _read_raw(self, budget_s): return self.raw.copy()

    def _write_raw(self, raw, budget_s):
        self.writes.append(np.asarray(raw).copy())
        self.raw = np.asarray(raw).copy()

    def _torque_ids(self, on):
        for i in self.torque_on:
            if i not in self.silent:
                self.torque_on[i] = on
        return {i: i not in self.silent for i in self.torque_on}


def test_each_state_allows_what_it_says_and_refuses_the_rest_with_a_typed_error():
    link = MemoryLink()
    assert isinstance(link, ArmLink) and link.state is LinkState.DISCONNECTED
    with pytest.raises(NotConnectedError, match="connect"):
        link.read_state()
    with pytest.raises(NotActiveError, match=r"connect\(\), then torque\(True\)"):
        link.write([0.0, 0.0, 0.0])
    link.connect()
    assert link.state is LinkState.CONNECTED and link.is_connected and not link.is_active
    assert isinstance(link.read_state(), ArmState)  # reading is allowed
    with pytest.raises(NotActiveError, match=r"memory link on mem0 is connected, not active.*torque\(True\)"):
        link.write([0.1, 0.0, 0.0])
    assert link.writes == []  # the refused command never reached the wire
    link.torque(True)  # goal := present first (hold_present is a no-op here), then torque on
    assert link.state is LinkState.ACTIVE
    sent = link.write([0.05, 0.0, 0.0], dt=0.1)
    assert sent[0] > 0 and len(link.writes) == 1
    link.torque(False)
    assert link.state is LinkState.CONNECTED
    with pytest.raises(NotActiveError):
        link.write([0.05, 0.0, 0.0])
    link.disconnect()
    assert link.state is LinkState.DISCONNECTED and not link.is_connected


def test_estop_ends_active_and_is_the_reason_reported_first():
    link = MemoryLink().connect()
    link.torque(True)
    link.estop("test")
    assert link.state is LinkState.CONNECTED and not any(link.torque_on.values())
    with pytest.raises(EStopError):  # the latch, not the lifecycle, is what the caller must fix first
        link.write([0.0, 0.0, 0.0])
    with pytest.raises(EStopError):
        link.torque(True)
    link.clear_estop()
    link.torque(True)
    link.write([0.0, 0.0, 0.0])


def test_unconfirmed_torque_on_does_not_make_a_link_active_and_torque_off_always_ends_it():
    link = MemoryLink(silent=(2,)).connect()
    with pytest.raises(ArmLinkError, match=r"id\(s\) \[2\]"):
        link.torque(True)
    assert link.state is LinkState.CONNECTED
    link.silent.clear()
    link.torque(True)
    link.silent.add(3)
    with pytest.raises(ArmLinkError):
        link.torque(False)
    assert link.state is LinkState.CONNECTED  # a stop is never undone by a lost reply
    assert link.set_torque_all(False)[3].startswith("unconfirmed")


def test_multiarm_is_an_armlink_with_the_same_interface():
    a, b = MemoryLink("mem0", (1, 2, 3)), MemoryLink("mem1", (1, 2))
    arms = MultiArm([a, b])
    assert isinstance(arms, ArmLink) and arms.links == [a, b] and arms.state is LinkState.DISCONNECTED
    with arms:
        assert arms.state is LinkState.CONNECTED
        state = arms.read_state()
        assert isinstance(state, ArmState) and state.q.shape == (5,) and state.raw.tolist() == [2048] * 5
        np.testing.assert_array_equal(np.asarray(state), state.q)  # reads as its joint vector
        assert state.shape == (5,) and len(state) == 5 and state[4] == state.q[4]
        st, err = arms.read_within(1e9)
        assert err is None and st.q.shape == (5,)
        with pytest.raises(NotActiveError):
            arms.write(np.zeros(5))
        arms.torque(True)
        assert arms.is_active and set(arms.torque_report) == {"mem0", "mem1"}
        sent = arms.write([0.01, 0, 0, 0, -0.01], dt=0.1)
        assert sent.shape == (5,) and len(a.writes) == len(b.writes) == 1
        b.torque(False)  # one link inactive: the whole arm is, and no link moves
        assert arms.state is LinkState.CONNECTED
        with pytest.raises(NotActiveError, match="mem1"):
            arms.write(np.zeros(5))
        assert len(a.writes) == 1
        with pytest.raises(ConfigError, match="expects 5 values"):
            arms.check_command(np.zeros(4))
    assert arms.state is LinkState.DISCONNECTED and not any(a.torque_on.values())
    assert MultiArm([MultiArm([a]), b]).links == [a, b]  # nested arms are flattened
    with pytest.raises(ConfigError, match="same port"):
        MultiArm([a, MemoryLink("mem0")])


@pytest.mark.parametrize("enc,size", [(TwosComplement(32), 4), (SignMagnitude(15), 2)])
def test_position_encodings_round_trip(enc, size):
    for v in (-4095, -1, 0, 1, 2048, 4095):
        stored = enc.encode(v)
        assert 0 <= stored < 1 << (8 * size) and enc.decode(stored) == v
    assert TwosComplement(32).encode(-1) == 0xFFFFFFFF and SignMagnitude(15).encode(-5) == 0x8005


def test_vendor_records_hold_the_control_tables_and_the_missing_sdk_says_what_to_install():
    from drivers.arm import dynamixel, feetech

    assert (dynamixel.BUS.torque, dynamixel.BUS.goal, dynamixel.BUS.present) == (Register(64, 1), Register(116, 4),
                                                                                 Register(132, 4))
    assert (feetech.BUS.torque, feetech.BUS.goal, feetech.BUS.present) == (Register(40, 1), Register(42, 2),
                                                                           Register(56, 2))
    assert dynamixel.DynamixelLink.protocol == "dynamixel" and feetech.FeetechLink.protocol == "feetech"
    assert dynamixel.watchdog_units(100) == 5 and dynamixel.watchdog_units(1) == 1 and dynamixel.watchdog_units(0) == 0
    missing = dataclasses.replace(dynamixel.BUS, sdk_module="no_such_sdk_module", sdk_package="no-such-sdk")
    with pytest.raises(MissingDependencyError, match="no-such-sdk is not installed.*pip install"):
        missing.import_sdk()
    with pytest.raises(ConfigError, match="DynamixelConfig"):
        dynamixel.DynamixelLink(feetech.FeetechConfig(port="/dev/null"))
