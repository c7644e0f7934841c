"""Reply fault injection for the simulated controllers: lost, corrupted and late reply packets.

One place for the three protocols: the servers return their reply PACKETS as a list (a sync read of 7 servos is
7 status packets), and `ReplyInjector` decides each packet's fate independently with a seeded generator:
  - drop    (probability `drop`): the packet is never sent;
  - corrupt (probability `corrupt`): one uniformly chosen bit of the packet is flipped, so the checksum/CRC fails
    (or, for a flipped header/length bit, the packet is not recognised at all);
  - delay   (probability `delay_p`): the packet leaves `delay_ms` late.
The three draws are made for every packet in that order (same number of draws whatever the outcome, so a seed
gives the same fault sequence for the same packet stream); a dropped packet is only counted as dropped.

Sending is a FIFO with release times, like a half-duplex bus: a late packet holds back every packet queued after
it, and nothing blocks the serve loop or the motor model (the pump asks `next_due()` how long it may sleep).
Pure logic: no I/O, no clock; the caller passes the times."""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

from drivers.errors import ConfigError


def check_probability(name: str, value) -> float:
    """`value` as a float in [0, 1], or a ConfigError naming the option."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if not (0.0 <= p <= 1.0):  # also rejects NaN
        raise ConfigError(f"{name} must be a probability between 0 and 1 (e.g. 0.05 for 5% of reply packets), "
                          f"got {value!r}")
    return p


@dataclass(frozen=True)
class FaultConfig:
    """Reply fault probabilities (per reply packet) and the seed of their generator."""

    drop: float = 0.0
    corrupt: float = 0.0
    delay_p: float = 0.0
    delay_ms: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("drop", "corrupt", "delay_p"):
            object.__setattr__(self, name, check_probability(name, getattr(self, name)))
        try:
            delay_ms = float(self.delay_ms)
        except (TypeError, ValueError):
            delay_ms = math.nan
        if not (0.0 <= delay_ms <= 60_000.0):
            raise ConfigError(f"delay_ms must be a number of milliseconds in [0, 60000], got {self.delay_ms!r}")
        object.__setattr__(self, "delay_ms", delay_ms)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    @property
    def active(self) -> bool:
        return bool(self.drop or self.corrupt or (self.delay_p and self.delay_ms))

    def as_dict(self) -> dict:
        return {"drop": self.drop, "corrupt": self.corrupt, "delay_p": self.delay_p, "delay_ms": self.delay_ms,
                "seed": self.seed}


class Decision(NamedTuple):
    data: Optional[bytes]  # None: dropped
    delay_s: float
    corrupted: bool
    bit: int = -1  # the flipped bit (byte * 8 + bit), -1 if none


class ReplyInjector:
    """Decide each reply packet's fate and queue it for sending (see module docstring)."""

    def __init__(self, faults: Optional[FaultConfig] = None):
        self.faults = faults or FaultConfig()
        self.rng = random.Random(self.faults.seed)
        self._queue: deque = deque()  # (release time, bytes), release times non-decreasing
        self._last_release = -math.inf
        self.counters = {"replies": 0, "sent": 0, "dropped": 0, "corrupted": 0, "delayed": 0}

    def decide(self, packet: bytes) -> Decision:
        f, rng = self.faults, self.rng
        self.counters["replies"] += 1
        if not f.active:
            return Decision(packet, 0.0, False)
        drop, corrupt, delay = rng.random() < f.drop, rng.random() < f.corrupt, rng.random() < f.delay_p
        if drop:
            self.counters["dropped"] += 1
            return Decision(None, 0.0, False)
        bit = -1
        if corrupt and packet:
            bit = rng.randrange(len(packet) * 8)
            bad = bytearray(packet)
            bad[bit >> 3] ^= 1 << (bit & 7)
            packet = bytes(bad)
            self.counters["corrupted"] += 1
        delay_s = f.delay_ms / 1000.0 if delay and f.delay_ms > 0 else 0.0
        if delay_s:
            self.counters["delayed"] += 1
        return Decision(packet, delay_s, bit >= 0, bit)

    def push(self, packets: Sequence[bytes], ready_t: float) -> list:
        """Queue reply packets that are ready at `ready_t` (reply time + return delay); returns their Decisions."""
        decisions = []
        for pkt in packets:
            d = self.decide(pkt)
            decisions.append(d)
            if d.data is None:
                continue
            release = max(ready_t + d.delay_s, self._last_release)  # behind whatever is still queued
            self._last_release = release
            self._queue.append((release, d.data))
        return decisions

    def next_due(self) -> Optional[float]:
        """Release time of the next queued packet (None when the queue is empty)."""
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> bytes:
        """The bytes of every packet whose release time has come, in queue order."""
        q, out = self._queue, []
        while q and q[0][0] <= now:
            out.append(q.popleft()[1])
        self.counters["sent"] += len(out)
        return b"".join(out)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def summary(self) -> dict:
        """Counters plus the packets still queued (not yet sent)."""
        return {**self.counters, "pending": self.pending}
