"""Controller simulators speaking the real byte protocols (run by drivers.arm.sim in their own process).

Each server keeps a motor model (present position follows the goal at a limited speed while torque is on),
parses incoming bytes with resync (bytes before a header are skipped, a bad checksum drops one byte), and
returns the reply PACKETS as a list (`feed_packets` / `tick_packets`; `feed` / `tick` join them), so the byte
pump (drivers.arm.sim.serve) can drop, corrupt or delay each packet (drivers.arm.sim_faults). With `events` set
to a list, the servers append what the simulator log records (goal writes, torque writes, watchdog trips; see
drivers.arm.sim_log). Pure logic: no I/O here, so it is testable byte by byte."""
from __future__ import annotations

import struct
import time
from typing import Optional, Sequence

from drivers.arm import framed as fp

# --- motor model -----------------------------------------------------------------------------------------------


class Motors:
    def __init__(self, ids: Sequence[int], start: float, speed: float):
        self.ids = list(ids)
        self.pos = {i: float(start) for i in self.ids}
        self.goal = dict(self.pos)
        self.torque = {i: False for i in self.ids}
        self.speed = float(speed)  # raw units per second
        self.vel = {i: 0.0 for i in self.ids}
        self._t = time.monotonic()

    def update(self, now: float) -> None:
        dt, self._t = max(0.0, now - self._t), now
        step = self.speed * dt
        for i in self.ids:
            if not self.torque[i]:
                self.vel[i] = 0.0
                continue
            err = self.goal[i] - self.pos[i]
            move = max(-step, min(step, err))
            self.pos[i] += move
            self.vel[i] = move / dt if dt > 0 else 0.0

    def hold(self, ids: Optional[Sequence[int]] = None) -> None:
        for i in self.ids if ids is None else ids:
            self.goal[i] = self.pos[i]


class SimServer:
    """Common part of the three servers: the packet-list API, the event list, the end state."""

    motors: Motors

    def __init__(self):
        self.events: Optional[list] = None  # set to [] to record events (the pump drains it)
        self._now = time.monotonic()

    def _emit(self, ev: str, **fields) -> None:
        if self.events is not None:
            self.events.append({"t": round(self._now, 6), "ev": ev, **fields})

    def _emit_goals(self, goals: dict, ignored: Sequence[int] = ()) -> None:
        if goals and self.events is not None:
            ev = {"goals": {str(i): int(v) for i, v in goals.items()}}
            if ignored:
                ev["ignored"] = list(ignored)
            self._emit("goal", **ev)

    def _emit_torque(self, id_: int, on: bool) -> None:
        self._emit("torque", id=id_, on=bool(on))

    def tick_packets(self, now: float) -> list:
        raise NotImplementedError

    def feed_packets(self, data: bytes, now: float) -> list:
        raise NotImplementedError

    def tick(self, now: float) -> bytes:
        return b"".join(self.tick_packets(now))

    def feed(self, data: bytes, now: float) -> bytes:
        return b"".join(self.feed_packets(data, now))

    def end_state(self) -> dict:
        """Final torque state and positions (raw) per id, for the log's "end" line."""
        m = self.motors
        return {"torque": {str(i): bool(m.torque[i]) for i in m.ids},
                "pos": {str(i): int(round(m.pos[i])) for i in m.ids}}


# --- Dynamixel Protocol 2.0 ------------------------------------------------------------------------------------
_CRC_TABLE = []
for _i in range(256):
    _c = _i << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x8005) if _c & 0x8000 else (_c << 1)
    _CRC_TABLE.append(_c & 0xFFFF)


def dxl_crc(data: bytes) -> int:
    """CRC-16 poly 0x8005, init 0, no reflection (Protocol 2.0)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def dxl_stuff(body: bytes) -> bytes:
    return body.replace(b"\xFF\xFF\xFD", b"\xFF\xFF\xFD\xFD")


def dxl_unstuff(body: bytes) -> bytes:
    return body.replace(b"\xFF\xFF\xFD\xFD", b"\xFF\xFF\xFD")


def dxl_packet(id_: int, inst: int, params: bytes) -> bytes:
    body = dxl_stuff(bytes([inst]) + params)
    pkt = b"\xFF\xFF\xFD\x00" + bytes([id_]) + struct.pack("<H", len(body) + 2) + body
    return pkt + struct.pack("<H", dxl_crc(pkt))


DXL_HEADER = b"\xFF\xFF\xFD\x00"
X_MODEL = 1060  # XL430-W250
X_TABLE_SIZE = 700


class DynamixelServer(SimServer):
    """X-series servos (XL430 control table) on one Protocol 2.0 bus.

    Bus watchdog (address 98, ROBOTIS X-series e-manual "Bus Watchdog(98)"): 0 disables it and clears its error,
    1..127 arms it in units of 20 ms, -1 (0xFF) is the error state. While Torque Enable(64) is 1, a servo whose
    bus saw no valid instruction packet (any id, any instruction) for longer than the set time stops (holds its
    present position) and reads -1; the goal values (Goal PWM 100 .. Goal Position 116) are then read-only:
    writing them answers a Data Range Error (and a sync write is ignored for that id) until 98 is written 0.
    Here, writing another non-zero value while tripped is refused too (Data Range Error): write 0 first."""

    PRESENT, GOAL, TORQUE, WATCHDOG, VELOCITY = 132, 116, 64, 98, 128
    GOAL_VALUES = (100, 120)  # Goal PWM(100), Goal Current(102), Goal Velocity(104) .. Goal Position(116, 4 B)
    WD_TRIPPED = 0xFF
    ERR_DATA_RANGE, ERR_ACCESS = 0x04, 0x07  # Protocol 2.0 status packet error numbers

    def __init__(self, ids: Sequence[int], speed: float = 2000.0, start: int = 2048):
        super().__init__()
        self.motors = Motors(ids, start, speed)
        self.tables = {i: bytearray(X_TABLE_SIZE) for i in ids}
        for i, t in self.tables.items():
            t[0:2] = struct.pack("<H", X_MODEL)
            t[6], t[7], t[8], t[9] = 45, i, 3, 0  # firmware, id, baud 1M, return delay 0
        self.buf = bytearray()
        self.bad_crc = self.garbage = self.packets = 0
        self._last_rx = time.monotonic()

    def tick_packets(self, now: float) -> list:
        self._now = now
        m = self.motors
        tripped = []
        for i, t in self.tables.items():  # bus watchdog (units of 20 ms): stop when the host is silent
            wd = t[self.WATCHDOG]
            if 0 < wd < 128 and m.torque[i] and now - self._last_rx > wd * 0.02:
                m.goal[i] = m.pos[i]
                t[self.WATCHDOG] = self.WD_TRIPPED
                tripped.append((i, wd * 20))
        if tripped:
            for ms in sorted({ms for _, ms in tripped}):
                self._emit("watchdog", ids=[i for i, v in tripped if v == ms], timeout_ms=ms,
                           silent_ms=round((now - self._last_rx) * 1000.0, 1))
        m.update(now)
        for i, t in self.tables.items():
            t[self.PRESENT:self.PRESENT + 4] = struct.pack("<i", int(round(m.pos[i])))
            t[self.VELOCITY:self.VELOCITY + 4] = struct.pack("<i", int(m.vel[i] / 0.229 / 4096 * 60))
        return []

    def _status(self, id_: int, params: bytes = b"", error: int = 0) -> bytes:
        return dxl_packet(id_, 0x55, bytes([error]) + params)

    def _write(self, id_: int, addr: int, data: bytes) -> int:
        """Write one servo's control table; returns the status packet's error number (0: done)."""
        t, m = self.tables[id_], self.motors
        end = addr + len(data)
        if end > X_TABLE_SIZE:
            return self.ERR_ACCESS
        tripped = t[self.WATCHDOG] == self.WD_TRIPPED
        if tripped and addr < self.GOAL_VALUES[1] and end > self.GOAL_VALUES[0]:
            return self.ERR_DATA_RANGE  # goal values are read-only while the bus watchdog is tripped
        if addr <= self.WATCHDOG < end:
            wd = data[self.WATCHDOG - addr]
            if wd > 127 or (tripped and wd != 0):
                return self.ERR_DATA_RANGE
        t[addr:end] = data
        if addr <= self.TORQUE < end:
            m.torque[id_] = bool(t[self.TORQUE])
            self._emit_torque(id_, m.torque[id_])
            if not m.torque[id_]:
                m.hold([id_])
        if addr <= self.GOAL and end >= self.GOAL + 4:
            m.goal[id_] = float(struct.unpack_from("<i", t, self.GOAL)[0])
        return 0

    def _write_goal(self, id_: int, addr: int, data: bytes, goals: dict, ignored: list) -> int:
        err = self._write(id_, addr, data)
        if addr <= self.GOAL and addr + len(data) >= self.GOAL + 4:
            goals[id_] = struct.unpack_from("<i", data, self.GOAL - addr)[0]
            if err:
                ignored.append(id_)
        return err

    def handle(self, id_: int, inst: int, p: bytes) -> list:
        out = []
        ids = self.tables
        if inst == 0x01:  # ping
            targets = list(ids) if id_ == 0xFE else ([id_] if id_ in ids else [])
            for i in targets:
                out.append(self._status(i, self.tables[i][0:2] + bytes([45])))
        elif inst == 0x02 and id_ in ids:  # read
            addr, n = struct.unpack_from("<HH", p)
            out.append(self._status(id_, bytes(self.tables[id_][addr:addr + n])))
        elif inst == 0x03 and id_ in ids:  # write
            (addr,) = struct.unpack_from("<H", p)
            goals, ignored = {}, []
            err = self._write_goal(id_, addr, p[2:], goals, ignored)
            self._emit_goals(goals, ignored)
            out.append(self._status(id_, error=err))
        elif inst == 0x82:  # sync read: addr, len, ids...
            addr, n = struct.unpack_from("<HH", p)
            for i in p[4:]:
                if i in ids:
                    out.append(self._status(i, bytes(self.tables[i][addr:addr + n])))
        elif inst == 0x83:  # sync write: addr, len, (id, data[len])...
            addr, n = struct.unpack_from("<HH", p)
            goals, ignored = {}, []
            for k in range(4, len(p) - n + 1, n + 1):
                if p[k] in ids:
                    self._write_goal(p[k], addr, p[k + 1:k + 1 + n], goals, ignored)
            self._emit_goals(goals, ignored)
        elif inst == 0x92:  # bulk read: (id, addr, len)...
            for k in range(0, len(p) - 4, 5):
                i, addr, n = p[k], *struct.unpack_from("<HH", p, k + 1)
                if i in ids:
                    out.append(self._status(i, bytes(self.tables[i][addr:addr + n])))
        return out

    def feed_packets(self, data: bytes, now: float) -> list:
        self.buf += data
        buf, out = self.buf, []
        while True:
            k = buf.find(DXL_HEADER)
            if k < 0:
                keep = len(buf) - max(0, len(buf) - 3)
                self.garbage += len(buf) - keep
                del buf[:len(buf) - keep]
                return out
            self.garbage += k
            del buf[:k]
            if len(buf) < 7:
                return out
            length = buf[5] | (buf[6] << 8)
            if length < 3 or length > 1024:
                del buf[:1]
                continue
            total = 7 + length
            if len(buf) < total:
                return out
            pkt = bytes(buf[:total])
            if struct.unpack_from("<H", pkt, total - 2)[0] != dxl_crc(pkt[:total - 2]):
                self.bad_crc += 1
                del buf[:1]
                continue
            del buf[:total]
            self.packets += 1
            self.tick_packets(now)  # the watchdog judges the silence BEFORE this packet, as the servo would
            self._last_rx = now
            body = dxl_unstuff(pkt[7:total - 2])
            out += self.handle(pkt[4], body[0], body[1:])


# --- Feetech STS -----------------------------------------------------------------------------------------------
STS_MODEL = 777  # STS3215


def sts_packet(id_: int, code: int, params: bytes) -> bytes:
    body = bytes([id_, len(params) + 2, code]) + params
    return b"\xFF\xFF" + body + bytes([~sum(body) & 0xFF])


class FeetechServer(SimServer):
    """STS3215 servos (SO-100/101) on one bus. The STS control table has no host-silence watchdog: a servo keeps
    its last goal (and torque) until the host writes otherwise, so the host must switch torque off itself."""

    PRESENT, GOAL, TORQUE = 56, 42, 40
    TABLE_SIZE = 128

    def __init__(self, ids: Sequence[int], speed: float = 2000.0, start: int = 2048):
        super().__init__()
        self.motors = Motors(ids, start, speed)
        self.tables = {i: bytearray(self.TABLE_SIZE) for i in ids}
        for i, t in self.tables.items():
            t[3:5] = struct.pack("<H", STS_MODEL)
            t[5] = i
        self.buf = bytearray()
        self.bad_crc = self.garbage = self.packets = 0

    def tick_packets(self, now: float) -> list:
        self._now = now
        self.motors.update(now)
        for i, t in self.tables.items():
            v = int(round(self.motors.pos[i]))
            t[self.PRESENT:self.PRESENT + 2] = struct.pack("<H", (-v | 0x8000) if v < 0 else v)
        return []

    def _write(self, id_: int, addr: int, data: bytes, goals: dict) -> None:
        t, m = self.tables[id_], self.motors
        if addr + len(data) > self.TABLE_SIZE:
            return
        t[addr:addr + len(data)] = data
        if addr <= self.TORQUE < addr + len(data):
            m.torque[id_] = bool(t[self.TORQUE])
            self._emit_torque(id_, m.torque[id_])
            if not m.torque[id_]:
                m.hold([id_])
        if addr <= self.GOAL and addr + len(data) >= self.GOAL + 2:
            v = struct.unpack_from("<H", t, self.GOAL)[0]
            m.goal[id_] = float(-(v & 0x7FFF) if v & 0x8000 else v)
            goals[id_] = int(m.goal[id_])

    def handle(self, id_: int, inst: int, p: bytes) -> list:
        ids, out, goals = self.tables, [], {}
        if inst == 0x01 and id_ in ids:
            out.append(sts_packet(id_, 0, b""))
        elif inst == 0x02 and id_ in ids:
            out.append(sts_packet(id_, 0, bytes(self.tables[id_][p[0]:p[0] + p[1]])))
        elif inst == 0x03 and id_ in ids:
            self._write(id_, p[0], p[1:], goals)
            out.append(sts_packet(id_, 0, b""))
        elif inst == 0x82:  # sync read: addr, len, ids...
            for i in p[2:]:
                if i in ids:
                    out.append(sts_packet(i, 0, bytes(self.tables[i][p[0]:p[0] + p[1]])))
        elif inst == 0x83:  # sync write: addr, len, (id, data)...
            addr, n = p[0], p[1]
            for k in range(2, len(p) - n + 1, n + 1):
                if p[k] in ids:
                    self._write(p[k], addr, p[k + 1:k + 1 + n], goals)
        self._emit_goals(goals)
        return out

    def feed_packets(self, data: bytes, now: float) -> list:
        self.buf += data
        buf, out = self.buf, []
        while True:
            k = buf.find(b"\xFF\xFF")
            if k < 0:
                keep = 1 if buf.endswith(b"\xFF") else 0
                self.garbage += len(buf) - keep
                del buf[:len(buf) - keep]
                return out
            self.garbage += k
            del buf[:k]
            if len(buf) < 4:
                return out
            if buf[2] == 0xFF or buf[3] < 2:  # FF FF FF: skip one; length must cover instr + checksum
                del buf[:1]
                continue
            total = 4 + buf[3]
            if len(buf) < total:
                return out
            pkt = bytes(buf[:total])
            if pkt[-1] != (~sum(pkt[2:-1]) & 0xFF):
                self.bad_crc += 1
                del buf[:1]
                continue
            del buf[:total]
            self.packets += 1
            self.tick_packets(now)
            out += self.handle(pkt[2], pkt[4], pkt[5:-1])


# --- framed protocol controller -------------------------------------------------------------------------------


class FramedServer(SimServer):
    """Controller side of docs/framed_protocol.md: watchdog, latched e-stop, acked control frames, errors."""

    def __init__(self, ids: Sequence[int], speed: float = 2.0e6, start: int = 0, watchdog_ms: int = 200,
                 garbage_every: int = 0, corrupt_every: int = 0):
        super().__init__()
        self.ids = list(ids)
        self.motors = Motors(self.ids, start, speed)  # positions in microradians
        self.watchdog_ms = watchdog_ms
        self.estop = self.tripped = False
        self.parser = fp.FrameParser()
        self._last_rx = time.monotonic()
        self._seq = 0
        self._last_control: Optional[tuple] = None  # (seq, type, ack bytes) for retransmissions
        self.garbage_every, self.corrupt_every = garbage_every, corrupt_every  # fault injection on replies
        self._replies = 0

    def _frame(self, ftype: int, ref: int, payload: bytes = b"") -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        data = fp.encode_frame(ftype, self._seq, struct.pack("<H", ref) + payload)
        self._replies += 1
        if self.corrupt_every and self._replies % self.corrupt_every == 0:  # a bad-CRC copy first, then the good one
            bad = bytearray(data)
            bad[-1] ^= 0xFF
            data = bytes(bad) + data
        if self.garbage_every and self._replies % self.garbage_every == 0:
            data = b"\xA5\x00\x13\xA5\x5A\xFF\xFF" + data[:7] + b"\x00garbage" + data  # incl. a truncated frame
        return data

    def _error(self, ref: int, code: int, msg: str) -> bytes:
        return self._frame(fp.ERROR, ref, bytes([code]) + msg.encode())

    def status(self) -> int:
        m = self.motors
        moving = any(abs(m.goal[i] - m.pos[i]) > 0.5 for i in self.ids)
        return ((fp.ST_TORQUE if m.torque[self.ids[0]] else 0) | (fp.ST_ESTOP if self.estop else 0)
                | (fp.ST_WATCHDOG if self.tripped else 0) | (fp.ST_MOVING if moving else 0))

    def _state(self, ref: int) -> bytes:
        m = self.motors
        pos = fp.pack_positions([int(round(m.pos[i])) for i in self.ids])
        vel = fp.pack_positions([int(round(m.vel[i])) for i in self.ids])
        return self._frame(fp.STATE, ref, bytes([self.status()]) + pos + vel)

    def tick_packets(self, now: float) -> list:
        self._now = now
        out = []
        m = self.motors
        if (self.watchdog_ms and not self.tripped and m.torque[self.ids[0]]
                and now - self._last_rx > self.watchdog_ms / 1000.0):
            self.tripped = True
            m.hold()
            self._emit("watchdog", ids=list(self.ids), timeout_ms=self.watchdog_ms,
                       silent_ms=round((now - self._last_rx) * 1000.0, 1))
            out.append(self._error(fp.NO_REF, fp.E_WATCHDOG, f"no host frame for {self.watchdog_ms} ms: holding "
                                                             "position"))
        m.update(now)
        return out

    def _set_torque(self, on: bool) -> None:
        for i in self.ids:
            self.motors.torque[i] = on
            self._emit_torque(i, on)
        self.motors.hold()

    def handle(self, f: fp.Frame, now: float) -> bytes:
        if f.version != fp.VERSION:
            return self._error(f.seq, fp.E_BAD_VERSION, f"controller speaks version {fp.VERSION}")
        t = f.type
        if t == fp.HELLO:
            return self._frame(fp.INFO, f.seq, struct.pack("<BB", fp.VERSION, len(self.ids)) + bytes(self.ids)
                               + struct.pack("<H", self.watchdog_ms))
        if t == fp.HEARTBEAT:
            return self._frame(fp.HEARTBEAT_REPLY, f.seq, bytes([self.status()]))
        if t == fp.READ_STATE:
            return self._state(f.seq)
        if t == fp.COMMAND:
            try:
                goal, _ = fp.unpack_positions(f.payload)
            except (IndexError, fp.ProtocolError) as exc:
                return self._error(f.seq, fp.E_BAD_PAYLOAD, str(exc))
            if goal.size != len(self.ids):
                return self._error(f.seq, fp.E_BAD_PAYLOAD, f"{goal.size} joints, controller has {len(self.ids)}")
            goals = dict(zip(self.ids, goal.tolist()))
            refused = self.estop or self.tripped or not self.motors.torque[self.ids[0]]
            self._emit_goals(goals, list(self.ids) if refused else ())
            if self.estop:
                return self._error(f.seq, fp.E_ESTOP, "e-stop latched: send CLEAR_ESTOP then TORQUE on")
            if self.tripped:
                return self._error(f.seq, fp.E_WATCHDOG, "watchdog tripped: send TORQUE on to re-arm")
            if not self.motors.torque[self.ids[0]]:
                return self._error(f.seq, fp.E_TORQUE_OFF, "torque is off")
            for i, g in zip(self.ids, goal):
                self.motors.goal[i] = float(g)
            return self._state(f.seq)
        if t in fp.CONTROL_TYPES:
            if self._last_control and self._last_control[:2] == (f.seq, t):
                return self._last_control[2]  # retransmission: ack again, do not execute twice
            code = fp.E_OK
            if t == fp.TORQUE:
                on = bool(f.payload[:1] == b"\x01")
                if on and self.estop:
                    code = fp.E_ESTOP
                else:
                    self._set_torque(on)
                    self.tripped = False
            elif t == fp.ESTOP:
                self.estop = True
                self._emit("estop")
                self._set_torque(False)
            elif t == fp.CLEAR_ESTOP:
                self.estop = False
            elif t == fp.SET_WATCHDOG:
                self.watchdog_ms = struct.unpack_from("<H", f.payload)[0]
            ack = self._frame(fp.ACK, f.seq, bytes([code]))
            self._last_control = (f.seq, t, ack)
            return ack
        return self._error(f.seq, fp.E_UNKNOWN_TYPE, f"unknown frame type 0x{t:02x}")

    def feed_packets(self, data: bytes, now: float) -> list:
        out = []
        for f in self.parser.feed(data):
            self._last_rx = now
            out += self.tick_packets(now)
            reply = self.handle(f, now)
            if reply:
                out.append(reply)
        return out


def make_server(protocol: str, ids: Sequence[int], **kw):
    if protocol == "dynamixel":
        return DynamixelServer(ids, **{k: v for k, v in kw.items() if k in ("speed", "start")})
    if protocol == "feetech":
        return FeetechServer(ids, **{k: v for k, v in kw.items() if k in ("speed", "start")})
    if protocol == "framed":
        return FramedServer(ids, **kw)
    raise ValueError(f"unknown protocol {protocol!r}; use dynamixel, feetech or framed")
