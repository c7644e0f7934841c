"""The simulator side of the bus-fault suite: reply fault injection (rates, seed, late packets that do not block the
pump), the simulator log (goals, torque, end state) and the Dynamixel bus watchdog (register 98)."""
from __future__ import annotations

import json
import math
import struct
import time

import numpy as np
import pytest

from drivers.arm import framed as fp
from drivers.arm.sim import SimulatedController, main as sim_main
from drivers.arm.sim_faults import FaultConfig, ReplyInjector
from drivers.arm.sim_log import read_sim_log
from drivers.arm.sim_servers import (DynamixelServer, FeetechServer, FramedServer, dxl_crc, dxl_packet,
                                     sts_packet)
from drivers.errors import ArmError, ConfigError

IDS7 = (1, 2, 3, 4, 5, 6, 7)
SIM_TIMEOUT_S = 0.5  # a simulator process on a loaded CI machine; no assertion depends on it


def dxl_sync_read(ids, addr=132, n=4) -> bytes:
    return dxl_packet(0xFE, 0x82, struct.pack("<HH", addr, n) + bytes(ids))


def dxl_sync_write(addr, n, values: dict) -> bytes:
    body = b"".join(bytes([i]) + int(v).to_bytes(n, "little", signed=v < 0) for i, v in values.items())
    return dxl_packet(0xFE, 0x83, struct.pack("<HH", addr, n) + body)


def dxl_write(id_, addr, data: bytes) -> bytes:
    return dxl_packet(id_, 0x03, struct.pack("<H", addr) + data)


def dxl_status_error(pkt: bytes) -> int:
    return pkt[8]


# --- fault injection, pure ------------------------------------------------------------------------------------
def test_servers_return_one_packet_per_servo():
    now = time.monotonic()
    srv = DynamixelServer(IDS7)
    pkts = srv.feed_packets(dxl_sync_read(IDS7), now)
    assert len(pkts) == 7 and [p[4] for p in pkts] == list(IDS7)
    assert srv.feed(dxl_sync_read(IDS7), now) == b"".join(pkts)  # the byte API is the joined packet list
    st = FeetechServer(IDS7)
    pkts = st.feed_packets(sts_packet(0xFE, 0x82, bytes([56, 2]) + bytes(IDS7)), now)
    assert len(pkts) == 7 and all(p == sts_packet(i, 0, (2048).to_bytes(2, "little")) for i, p in zip(IDS7, pkts))


def test_injection_rates_match_the_probabilities():
    now = time.monotonic()
    srv = DynamixelServer(IDS7)
    packets = [p for _ in range(400) for p in srv.feed_packets(dxl_sync_read(IDS7), now)]  # 2800 status packets
    inj = ReplyInjector(FaultConfig(drop=0.1, corrupt=0.2, delay_p=0.3, delay_ms=5.0, seed=7))
    decisions = inj.push(packets, ready_t=now)
    n = len(packets)
    c = inj.counters
    kept = n - c["dropped"]

    def close(measured, p, count):  # 4 standard deviations of a binomial proportion
        return abs(measured - p) <= 4 * math.sqrt(p * (1 - p) / count)

    assert c["replies"] == n == 2800
    assert close(c["dropped"] / n, 0.1, n)
    assert close(c["corrupted"] / kept, 0.2, kept)  # drawn for every packet; a dropped one counts as dropped only
    assert close(c["delayed"] / kept, 0.3, kept)
    for pkt, d in zip(packets, decisions):
        if d.data is None:
            continue
        diff = int.from_bytes(bytes(a ^ b for a, b in zip(pkt, d.data)), "little")
        assert (bin(diff).count("1") == 1) == d.corrupted  # exactly one bit flipped, or none
        if d.corrupted:  # the CRC catches every single-bit error
            assert struct.unpack_from("<H", d.data, len(d.data) - 2)[0] != dxl_crc(d.data[:-2])
        assert d.delay_s in (0.0, 0.005)
    assert inj.pop_due(now) + inj.pop_due(now + 1.0)  # everything left the queue, in order
    assert inj.counters["sent"] == kept and inj.pending == 0


def test_no_faults_by_default_and_feetech_checksum_catches_a_flipped_bit():
    inj = ReplyInjector()
    pkts = [sts_packet(i, 0, b"\x00\x08") for i in range(1, 8)]
    assert [d.data for d in inj.push(pkts, 0.0)] == pkts and inj.pop_due(0.0) == b"".join(pkts)
    inj = ReplyInjector(FaultConfig(corrupt=1.0, seed=3))
    for pkt, d in zip(pkts, inj.push(pkts, 0.0)):
        byte = d.bit >> 3
        assert d.corrupted and d.data != pkt
        if byte >= 2:  # not the FF FF header: the checksum no longer matches
            assert d.data[-1] != (~sum(d.data[2:-1]) & 0xFF)


def test_seeded_fault_sequence_is_reproducible():
    pkts = [dxl_packet(i % 7 + 1, 0x55, bytes(5 + i % 3)) for i in range(500)]

    def run(seed):
        inj = ReplyInjector(FaultConfig(drop=0.2, corrupt=0.2, delay_p=0.2, delay_ms=3.0, seed=seed))
        return inj.push(pkts, 0.0), inj.counters

    assert run(11) == run(11)
    assert run(11)[0] != run(12)[0]


def test_late_packet_holds_back_later_packets_in_order():
    inj = ReplyInjector(FaultConfig(delay_p=0.3, delay_ms=20.0, seed=5))
    pkts = [bytes([k]) * 4 for k in range(200)]
    pushed = {}
    for k, p in enumerate(pkts):  # one reply per ms
        (d,) = inj.push([p], ready_t=k * 0.001)
        pushed[p] = (k * 0.001, d.delay_s)
    assert 30 < sum(1 for _, d in pushed.values() if d) < 90
    out, t = [], 0.0
    while inj.pending:  # the pump polling every 0.1 ms
        data = inj.pop_due(t)
        out += [(data[i:i + 4], t) for i in range(0, len(data), 4)]
        t += 0.0001
    assert [p for p, _ in out] == pkts  # FIFO: nothing overtakes a late packet
    for p, t_out in out:
        ready, delay = pushed[p]
        assert t_out >= ready + delay - 1e-9
    first_late = next(k for k, p in enumerate(pkts) if pushed[p][1])
    assert out[first_late + 1][1] >= pushed[pkts[first_late]][0] + 0.020 - 1e-9  # the next one waited behind it


def test_fault_options_are_validated():
    for kw in ({"drop": 1.5}, {"corrupt": -0.1}, {"delay_p": float("nan")}, {"delay_ms": -1}, {"seed": 1.5}):
        with pytest.raises(ConfigError):
            FaultConfig(**kw)
    with pytest.raises(ConfigError, match="drop must be a probability between 0 and 1"):
        SimulatedController("dynamixel", drop=2)
    with pytest.raises(SystemExit) as exc:
        sim_main(["--protocol", "feetech", "--corrupt", "1.01"])
    assert exc.value.code == 2


# --- the pump with a real process: a late reply does not stall the simulator ----------------------------------
def test_late_reply_does_not_block_the_serve_loop_or_the_motors():
    serial = pytest.importorskip("serial")
    with SimulatedController("dynamixel", ids=(1,), delay_p=1.0, delay_ms=200.0) as port:
        ser = serial.Serial(port, 1_000_000, timeout=0)
        try:
            t0 = time.monotonic()
            ser.write(dxl_packet(1, 0x02, struct.pack("<HH", 132, 4)))  # read A: its reply is 200 ms late
            time.sleep(0.01)
            ser.write(dxl_write(1, 64, b"\x01") + dxl_write(1, 116, (3048).to_bytes(4, "little")))  # torque, goal
            time.sleep(0.04)
            t_b = time.monotonic()
            ser.write(dxl_packet(1, 0x02, struct.pack("<HH", 132, 4)))  # read B, 50 ms later
            buf, arrivals = b"", []
            while len(arrivals) < 4 and time.monotonic() - t0 < 3.0:
                chunk = ser.read(256)
                if chunk:
                    buf += chunk
                    while len(buf) >= 11 and len(buf) >= 7 + buf[5]:
                        n = 7 + buf[5]
                        arrivals.append((buf[:n], time.monotonic()))
                        buf = buf[n:]
                time.sleep(0.0005)
        finally:
            ser.close()
    assert len(arrivals) == 4, arrivals  # status of read A, write, write, read B: all in order
    (a, t_a), (b, t_bb) = arrivals[0], arrivals[3]
    assert t_a - t0 >= 0.195  # late as asked
    pos_a, pos_b = int.from_bytes(a[9:13], "little"), int.from_bytes(b[9:13], "little")
    assert pos_a == 2048 and pos_b > 2048  # the motor model ran while read A's reply waited
    assert t_bb - t_b < 0.2 + 0.25  # B waited 200 ms of its own, not behind a blocked loop (that would be ~350 ms)


# --- the simulator log through real links ---------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_log_records_goals_torque_and_end_state(protocol, tmp_path):
    pytest.importorskip("serial")
    from drivers.arm.dynamixel import DynamixelConfig, DynamixelLink
    from drivers.arm.feetech import FeetechConfig, FeetechLink

    links = {"dynamixel": (DynamixelLink, DynamixelConfig), "feetech": (FeetechLink, FeetechConfig)}
    link_cls, cfg_cls = links[protocol]
    path = str(tmp_path / "sim.jsonl")
    ids = (1, 2, 3)
    sim = SimulatedController(protocol, ids=ids, log=path)
    sim.start()
    writes = 0
    try:
        with link_cls(cfg_cls(port=sim.port, ids=ids, timeout_s=SIM_TIMEOUT_S)) as link:
            link.torque(True)
            for k in range(20):
                link.read_state()
                link.write([0.01 * k, -0.01 * k, 0.005 * k], dt=0.01)
                writes += 1
                time.sleep(0.005)
            lo, hi = link.mapping.to_raw(link.limits.lower), link.mapping.to_raw(link.limits.upper)
        # leaving the block switched torque off
    finally:
        sim.stop()
    log = read_sim_log(path)
    assert log["start"]["protocol"] == protocol and log["start"]["ids"] == list(ids)
    assert log["end"] is not None and log["end"]["reason"] == "SIGTERM" and not log["truncated"]
    for k, i in enumerate(ids):
        g = log["goals"][i]
        assert g.size >= writes and np.isfinite(g).all()
        assert np.all((g >= lo[k]) & (g <= hi[k])), (i, g, lo[k], hi[k])
        assert [e["on"] for e in log["torque_events"] if e["id"] == i][:1] == [True]
        assert [e["on"] for e in log["torque_events"] if e["id"] == i][-1] is False
    assert log["torque"] == {1: False, 2: False, 3: False}  # the final state, from the end line
    assert set(log["pos"]) == set(ids) and log["pos"][1] > 2048 and log["pos"][2] < 2048
    assert log["injected"]["dropped"] == 0 and log["injected"]["sent"] > 0
    with open(path) as f:  # one line per sync write, not one per servo
        goal_lines = [json.loads(line) for line in f if '"ev":"goal"' in line]
    assert all(len(e["goals"]) == 3 for e in goal_lines)


def test_log_counts_injected_faults_and_survives_a_kill(tmp_path):
    pytest.importorskip("serial")
    from drivers.arm.dynamixel import DynamixelConfig, DynamixelLink

    path = str(tmp_path / "sim.jsonl")
    with SimulatedController("dynamixel", ids=(1, 2), drop=0.3, corrupt=0.2, seed=1, log=path) as port:
        link = DynamixelLink(DynamixelConfig(port=port, ids=(1, 2), timeout_s=0.05, connect_timeout_s=5.0))
        link.connect()
        try:
            for _ in range(20):
                try:
                    link.read_state()
                except ArmError:
                    pass  # lost / corrupt replies: the point of this simulator
        finally:
            link.disconnect(torque_off=False)
    inj = read_sim_log(path)["injected"]
    assert inj["dropped"] > 0 and inj["corrupted"] > 0 and inj["replies"] >= 40
    assert inj["sent"] + inj["dropped"] + inj["pending"] == inj["replies"]

    killed = str(tmp_path / "killed.jsonl")
    sim = SimulatedController("feetech", ids=(1,), log=killed)
    sim.start()
    sim.kill()
    with open(killed, "a") as f:
        f.write('{"t": 1.0, "ev": "goal", "goals": {"1": 20')  # a line cut short by the kill
    log = read_sim_log(killed)
    assert log["end"] is None and log["truncated"] and log["start"]["protocol"] == "feetech" and log["goals"] == {}
    with open(killed, "a") as f:
        f.write("\n" + json.dumps({"t": 2.0, "ev": "torque", "id": 1, "on": True}) + "\n")
    with pytest.raises(ConfigError, match="not a simulator log line"):
        read_sim_log(killed)  # a bad line in the middle is not a truncation


def test_framed_server_logs_commands_torque_and_watchdog():
    now = time.monotonic()
    srv = FramedServer([1, 2], watchdog_ms=100)
    srv.events = []
    srv.feed_packets(fp.encode_frame(fp.COMMAND, 1, fp.pack_positions([5, 6])), now)  # torque off: refused
    srv.feed_packets(fp.encode_frame(fp.TORQUE, 2, b"\x01"), now)
    srv.feed_packets(fp.encode_frame(fp.COMMAND, 3, fp.pack_positions([1000, -1000])), now)
    assert srv.tick_packets(now + 0.05) == []
    (err,) = srv.tick_packets(now + 0.15)  # silent > 100 ms: the watchdog error frame
    assert fp.decode_frame(err).type == fp.ERROR
    evs = [(e["ev"], e.get("goals"), e.get("ignored"), e.get("id"), e.get("on")) for e in srv.events]
    assert evs == [("goal", {"1": 5, "2": 6}, [1, 2], None, None), ("torque", None, None, 1, True),
                   ("torque", None, None, 2, True), ("goal", {"1": 1000, "2": -1000}, None, None, None),
                   ("watchdog", None, None, None, None)]
    assert srv.events[-1]["ids"] == [1, 2] and srv.events[-1]["timeout_ms"] == 100


# --- Dynamixel bus watchdog (register 98) and torque by sync write --------------------------------------------
def test_dynamixel_bus_watchdog_trips_holds_and_clears():
    t0 = time.monotonic()
    srv = DynamixelServer([1, 2, 3], speed=1000.0)
    srv.events = []
    assert dxl_status_error(srv.feed(dxl_write(1, 98, b"\x05"), t0)) == 0  # single write arms id 1 (100 ms)
    srv.feed(dxl_sync_write(98, 1, {2: 5, 3: 5}), t0)  # sync write arms ids 2 and 3
    srv.feed(dxl_sync_write(64, 1, {1: 1, 2: 1, 3: 1}), t0)  # torque on for all ids in one packet
    srv.feed(dxl_sync_write(116, 4, {1: 4048, 2: 4048, 3: 4048}), t0)
    assert all(srv.motors.torque.values()) and all(t[98] == 5 for t in srv.tables.values())
    for k in range(1, 10):  # any packet on the bus (here pings to id 1 only) keeps every servo's watchdog fed
        srv.tick(t0 + 0.05 * k)
        srv.feed(dxl_packet(1, 0x01, b""), t0 + 0.05 * k)
    srv.tick(t0 + 0.5)
    assert all(t[98] == 5 for t in srv.tables.values()) and srv.motors.pos[1] > 2400
    srv.tick(t0 + 0.56)  # 110 ms of silence: tripped, every servo stops where it is
    held = dict(srv.motors.pos)
    assert all(t[98] == 0xFF for t in srv.tables.values())
    assert all(srv.motors.goal[i] == held[i] < 4048 for i in (1, 2, 3))
    srv.tick(t0 + 1.0)
    assert srv.motors.pos == held and all(srv.motors.torque.values())  # holding, torque stays on
    reply = srv.feed(dxl_write(1, 116, (4048).to_bytes(4, "little")), t0 + 1.0)
    assert dxl_status_error(reply) == DynamixelServer.ERR_DATA_RANGE  # goal is read-only while tripped
    srv.feed(dxl_sync_write(116, 4, {1: 4048, 2: 4048, 3: 4048}), t0 + 1.0)
    srv.tick(t0 + 1.2)
    assert srv.motors.goal[2] == held[2] and srv.motors.pos == held  # sync write ignored too
    assert dxl_status_error(srv.feed(dxl_write(1, 98, b"\x05"), t0 + 1.2)) == DynamixelServer.ERR_DATA_RANGE
    assert srv.tables[1][98] == 0xFF  # re-arming needs a 0 first
    assert dxl_status_error(srv.feed(dxl_write(1, 98, b"\x00"), t0 + 1.2)) == 0
    assert dxl_status_error(srv.feed(dxl_write(1, 116, (4048).to_bytes(4, "little")), t0 + 1.2)) == 0
    srv.tick(t0 + 1.3)
    assert srv.motors.pos[1] > held[1] and srv.motors.pos[2] == held[2]  # id 1 moves again, id 2 still tripped
    assert dxl_status_error(srv.feed(dxl_write(1, 98, b"\x80"), t0 + 1.3)) == DynamixelServer.ERR_DATA_RANGE
    kinds = [e["ev"] for e in srv.events]
    assert kinds.count("watchdog") == 1 and srv.events[kinds.index("watchdog")]["ids"] == [1, 2, 3]
    goal_evs = [e for e in srv.events if e["ev"] == "goal"]
    assert goal_evs[-3].get("ignored") == [1] and goal_evs[-2].get("ignored") == [1, 2, 3]
    assert "ignored" not in goal_evs[-1]


def test_dynamixel_watchdog_does_not_trip_with_torque_off():
    t0 = time.monotonic()
    srv = DynamixelServer([1])
    srv.feed(dxl_write(1, 98, b"\x01"), t0)
    srv.tick(t0 + 1.0)
    assert srv.tables[1][98] == 1
    srv.feed(dxl_write(1, 64, b"\x01"), t0 + 1.0)
    srv.tick(t0 + 1.01)
    assert srv.tables[1][98] == 1
    srv.tick(t0 + 1.03)
    assert srv.tables[1][98] == 0xFF


def test_torque_off_on_one_servo_leaves_the_others_moving():
    t0 = time.monotonic()
    for srv, goal in ((DynamixelServer([1, 2]), dxl_sync_write(116, 4, {1: 3048, 2: 3048})),
                      (FeetechServer([1, 2]), sts_packet(0xFE, 0x83, bytes([42, 2, 1, 0xE8, 0x0B, 2, 0xE8, 0x0B])))):
        torque = srv.TORQUE
        if isinstance(srv, DynamixelServer):
            on, off1 = dxl_sync_write(torque, 1, {1: 1, 2: 1}), dxl_write(1, torque, b"\x00")
        else:
            on, off1 = sts_packet(0xFE, 0x83, bytes([torque, 1, 1, 1, 2, 1])), sts_packet(1, 0x03, bytes([torque, 0]))
        srv.feed(on + goal, t0)
        srv.tick(t0 + 0.1)
        srv.feed(off1, t0 + 0.1)
        srv.tick(t0 + 0.3)
        assert srv.motors.goal[2] == 3048 and srv.motors.pos[2] > srv.motors.pos[1], type(srv).__name__


def _sdk_port(sdk, port):
    ph = sdk.PortHandler(port)
    assert ph.openPort() and ph.setBaudRate(1_000_000)
    ph.setPacketTimeout = lambda n: ph.setPacketTimeoutMillis(SIM_TIMEOUT_S * 1000)  # a simulator, a busy machine
    return ph


def test_dynamixel_watchdog_in_the_simulator_process_with_the_sdk(tmp_path):
    sdk = pytest.importorskip("dynamixel_sdk")
    path = str(tmp_path / "sim.jsonl")
    ids = (1, 2, 3)
    with SimulatedController("dynamixel", ids=ids, log=path) as port:
        ph, pk = _sdk_port(sdk, port), sdk.PacketHandler(2.0)
        try:
            def sync_write(addr, n, value):
                w = sdk.GroupSyncWrite(ph, pk, addr, n)
                for i in ids:
                    w.addParam(i, list(int(value).to_bytes(n, "little")))
                assert w.txPacket() == sdk.COMM_SUCCESS

            def read(i, addr, n):
                fn = pk.read4ByteTxRx if n == 4 else pk.read1ByteTxRx
                value, result, error = fn(ph, i, addr)
                assert result == sdk.COMM_SUCCESS, pk.getTxRxResult(result)
                return value

            sync_write(98, 1, 5)  # 100 ms
            sync_write(64, 1, 1)  # torque on, all ids in one packet
            assert [read(i, 64, 1) for i in ids] == [1, 1, 1] and [read(i, 98, 1) for i in ids] == [5, 5, 5]
            sync_write(116, 4, 4048)  # 1 s away at 2000 counts/s
            time.sleep(0.4)  # the host goes silent
            assert [read(i, 98, 1) for i in ids] == [0xFF] * 3
            p1 = [read(i, 132, 4) for i in ids]
            assert all(2048 < p < 3800 for p in p1), p1
            time.sleep(0.2)
            assert [read(i, 132, 4) for i in ids] == p1  # holding
            result, error = pk.write4ByteTxRx(ph, 1, 116, 4048)
            assert result == sdk.COMM_SUCCESS and error == DynamixelServer.ERR_DATA_RANGE
            result, error = pk.write1ByteTxRx(ph, 1, 98, 0)  # clear id 1 only
            assert result == sdk.COMM_SUCCESS and error == 0
            sync_write(116, 4, 4048)
            time.sleep(0.05)
            p2 = [read(i, 132, 4) for i in ids]
            assert p2[0] > p1[0] and p2[1:] == p1[1:]
            sync_write(64, 1, 0)  # torque off for all ids in one packet
            assert [read(i, 64, 1) for i in ids] == [0, 0, 0]
        finally:
            ph.closePort()
    log = read_sim_log(path)
    assert len(log["watchdog"]) == 1 and log["watchdog"][0]["ids"] == [1, 2, 3]
    assert log["watchdog"][0]["timeout_ms"] == 100
    assert log["torque"] == {1: False, 2: False, 3: False}
    assert log["ignored_goals"] == {1: 1, 2: 1, 3: 1}  # the single write to id 1, the sync write to ids 2, 3


def test_feetech_torque_by_sync_write_in_the_simulator_process(tmp_path):
    sdk = pytest.importorskip("scservo_sdk")
    path = str(tmp_path / "sim.jsonl")
    ids = (1, 2, 3, 4, 5, 6)
    with SimulatedController("feetech", ids=ids, log=path) as port:
        ph, pk = _sdk_port(sdk, port), sdk.PacketHandler(0)
        try:
            for on in (1, 0):
                w = sdk.GroupSyncWrite(ph, pk, 40, 1)
                for i in ids:
                    w.addParam(i, [on])
                assert w.txPacket() == sdk.COMM_SUCCESS
                for i in ids:
                    value, result, _ = pk.read1ByteTxRx(ph, i, 40)
                    assert result == sdk.COMM_SUCCESS and value == on
        finally:
            ph.closePort()
    log = read_sim_log(path)
    assert [(e["id"], e["on"]) for e in log["torque_events"]] == [(i, True) for i in ids] + [(i, False) for i in ids]
    assert log["torque"] == {i: False for i in ids}
