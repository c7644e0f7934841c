"""Each link through its vendor SDK / our framing, against its simulator in a separate process on a pty."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

serial = pytest.importorskip("serial")

from drivers.arm import framed as fp  # noqa: E402
from drivers.arm.base import MultiArm  # noqa: E402
from drivers.arm.dynamixel import DynamixelConfig, DynamixelLink  # noqa: E402
from drivers.arm.feetech import FeetechConfig, FeetechLink  # noqa: E402
from drivers.arm.framed import FramedConfig, FramedLink  # noqa: E402
from drivers.arm.safety import SafetyLimits  # noqa: E402
from drivers.arm.sim import SimulatedController  # noqa: E402
from drivers.arm.sim_servers import DynamixelServer, FeetechServer, dxl_crc, dxl_packet, sts_packet  # noqa: E402
from drivers.errors import (ArmLinkError, ControllerError, EStopError, SafetyError,  # noqa: E402
                            WatchdogTrippedError)

LINKS = {"dynamixel": (DynamixelLink, DynamixelConfig), "feetech": (FeetechLink, FeetechConfig),
         "framed": (FramedLink, FramedConfig)}
IDS = (1, 2, 3)
# Test-only tolerance: the simulators are Python processes on a pty. On a loaded 2-core CI machine a reply can
# wait tens of ms for the scheduler, far beyond a real bus (< 1 ms), so every link here waits up to 0.5 s for a
# reply instead of the 50 ms default. No assertion depends on this value.
SIM_TIMEOUT_S = 0.5


def make(protocol, port, **kw):
    link_cls, cfg_cls = LINKS[protocol]
    return link_cls(cfg_cls(port=port, ids=IDS, **{"timeout_s": SIM_TIMEOUT_S, **kw}))


def wait_until(fn, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.01)
    return False


# --- bytes on the wire, no process ----------------------------------------------------------------------------
def test_dynamixel_crc_matches_the_sdk_and_stuffing():
    from dynamixel_sdk.protocol2_packet_handler import Protocol2PacketHandler

    data = bytes(range(256)) * 2
    assert dxl_crc(data) == Protocol2PacketHandler().updateCRC(0, list(data), len(data))
    pkt = dxl_packet(1, 0x03, b"\x74\x00\xFF\xFF\xFD\x00")  # a goal value containing the header pattern
    assert b"\xFF\xFF\xFD\xFD" in pkt[7:]
    srv = DynamixelServer([1])
    srv.feed(dxl_packet(1, 0x03, bytes([64, 0, 1])), time.monotonic())  # torque on
    assert srv.motors.torque[1]


def test_servers_resync_after_garbage_and_bad_checksum():
    now = time.monotonic()
    srv = DynamixelServer([1, 2])
    good = dxl_packet(2, 0x02, bytes([132, 0, 4, 0]))  # read present position of id 2
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    reply = srv.feed(b"\x00\xFF\xFF\xFD" + bytes(bad) + good[:5], now) + srv.feed(good[5:], now)
    assert srv.bad_crc == 1 and srv.packets == 1
    assert reply[:5] == b"\xFF\xFF\xFD\x00\x02" and reply[8] == 0 and int.from_bytes(reply[9:13], "little") == 2048
    st = FeetechServer([5])
    good = sts_packet(5, 0x02, bytes([56, 2]))
    bad = bytearray(good)
    bad[-1] ^= 1
    reply = st.feed(b"\xFF\x00\x13" + bytes(bad) + b"\xFF\xFF\xFF" + good, now)
    assert st.bad_crc == 1 and reply == sts_packet(5, 0, (2048).to_bytes(2, "little"))


# --- each protocol with its simulator process -----------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["dynamixel", "feetech", "framed"])
def test_round_trip_positions_follow_goals(protocol):
    with SimulatedController(protocol, ids=IDS) as port:
        assert os.path.exists(port)
        with make(protocol, port) as link:
            assert set(link.ping()) == set(IDS) and None not in link.ping().values()
            start = link.read_state().q.copy()
            np.testing.assert_allclose(start, 0.0, atol=1e-3)
            link.torque(True)
            target = np.array([0.3, -0.2, 0.1])
            sent = None
            for _ in range(60):
                link.read_state()
                sent = link.write(target, dt=0.01)
                assert np.all(np.abs(sent - link.last_state.q) <= 0.02 + 1e-9)  # 2 rad/s * 10 ms
                time.sleep(0.01)
            assert wait_until(lambda: np.allclose(link.read_state().q, target, atol=0.003), 3.0), link.last_state.q
            assert link.last_command is not None and np.allclose(sent, target, atol=0.003)
        # disconnect switched torque off: a new connection sees the motors stopped where they were


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_servo_links_recover_from_garbage_on_the_wire(protocol):
    with SimulatedController(protocol, ids=IDS) as port:
        with make(protocol, port) as link:
            raw = serial.Serial(port, 1_000_000, timeout=0)
            raw.write(b"\xFF\xFF\xFD\x00\x01\x07\x00garbage\xFF\xFF\x01\x09")  # truncated headers of both protocols
            raw.close()
            time.sleep(0.05)
            for _ in range(5):
                try:
                    link.read_state()
                    break
                except ArmLinkError:
                    pass  # the first read may be eaten by the garbage; the bus resyncs
            assert link.read_state().raw.tolist() == [2048, 2048, 2048]


def test_dynamixel_bulk_read():
    with SimulatedController("dynamixel", ids=IDS) as port:
        with DynamixelLink(DynamixelConfig(port=port, ids=IDS, read_mode="bulk", timeout_s=SIM_TIMEOUT_S)) as link:
            link.torque(True)
            link.write([0.05, 0.0, -0.05])
            assert wait_until(lambda: link.read_state().raw.tolist() == [2081, 2048, 2015])


def test_framed_client_resyncs_on_garbage_truncated_and_bad_crc_replies():
    with SimulatedController("framed", ids=IDS, garbage_every=3, corrupt_every=2) as port:
        with make("framed", port) as link:
            link.torque(True)
            for _ in range(30):
                link.read_state()
                link.write([0.1, 0.1, 0.1], dt=0.01)
            p = link._parser
            assert p.bad_crc > 5 and p.garbage_bytes > 50


def test_killed_simulator_gives_clear_error_then_link_recovers(tmp_path):
    link_path = str(tmp_path / "arm0")
    for protocol in ("dynamixel", "framed"):
        sim = SimulatedController(protocol, ids=IDS, link=link_path)
        sim.start()
        link = make(protocol, link_path)
        try:
            link.connect()
            link.torque(True)
            link.write([0.01, 0.0, 0.0])
            sim.kill()
            with pytest.raises(ArmLinkError) as err:
                for _ in range(3):
                    link.read_state()
            msg = str(err.value)
            assert link_path in msg or "pts" in msg
            assert err.value.last_state is not None and err.value.last_command is not None
            sim.start()  # back on the same path
            assert wait_until(lambda: _reads(link), 5.0)
        finally:
            link.disconnect()
            sim.stop()


def _reads(link):
    try:
        link.read_state()
        return True
    except ArmLinkError:
        return False


def test_framed_watchdog_stops_motion_when_heartbeats_stop():
    with SimulatedController("framed", ids=IDS, speed=0.5e6) as port:  # 0.5 rad/s
        link = make("framed", port, watchdog_ms=100)
        link.limits = SafetyLimits.create(3, max_step=1.0, max_velocity=20.0)
        with link:
            link.torque(True)
            link.read_state()
            link.write([1.0, 1.0, 1.0])  # far away: takes 2 s at 0.5 rad/s
            for _ in range(10):  # heartbeats keep it alive and moving
                time.sleep(0.03)
                status = link.heartbeat()
                assert not status & fp.ST_WATCHDOG
            time.sleep(0.3)  # host goes silent > 100 ms
            stopped = link.read_state().q.copy()
            assert link.status & fp.ST_WATCHDOG
            assert 0.05 < stopped[0] < 0.5
            time.sleep(0.2)
            np.testing.assert_allclose(link.read_state().q, stopped)  # not moving any more
            with pytest.raises(WatchdogTrippedError, match="torque\\(True\\) to re-arm"):
                link.write([1.0, 1.0, 1.0])
            link.torque(True)  # re-arm
            link.read_state()
            link.write([1.0, 1.0, 1.0])
            time.sleep(0.05)
            assert link.read_state().q[0] > stopped[0]


def test_framed_latched_estop():
    with SimulatedController("framed", ids=IDS) as port:
        with make("framed", port) as link:
            link.torque(True)
            link.estop("test")
            assert link.read_state() and link.status & fp.ST_ESTOP
            with pytest.raises(EStopError):
                link.write([0.0, 0.0, 0.0])
            link.estop_latch.clear()  # host side cleared but the controller still latched
            with pytest.raises(EStopError, match="latched"):
                link.write([0.0, 0.0, 0.0])
            with pytest.raises(EStopError):
                link.torque(True)
            link.clear_estop()
            with pytest.raises(ControllerError, match="torque is off"):
                link.write([0.0, 0.0, 0.0])
            link.torque(True)
            link.write([0.0, 0.0, 0.0])


def test_nan_command_is_rejected_before_the_wire_and_dual_arm_steps_together():
    with SimulatedController("dynamixel", ids=IDS) as p1, SimulatedController("feetech", ids=IDS) as p2:
        with MultiArm([make("dynamixel", p1), make("feetech", p2)]) as arms:
            arms.torque(True)
            q = arms.read_state()
            assert q.shape == (6,)
            with pytest.raises(SafetyError, match=r"joint index\(es\) \[2\]"):
                arms.links[0].write([0.0, 0.0, float("nan")])
            sent = arms.write([0.01, 0, 0, 0, 0, -0.01], dt=0.1)
            assert sent.shape == (6,) and sent[0] > 0 and sent[5] < 0
            assert wait_until(lambda: arms.read_state()[0] > 0.005 and arms.read_state()[5] < -0.005)
            arms.links[1].estop("test")
            with pytest.raises(EStopError):
                arms.write(np.zeros(6))
