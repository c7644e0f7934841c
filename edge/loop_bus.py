"""The control loop's side of the arm bus: read every link within the time left in the tick, retry lost or corrupt
replies, carry on with the last state and its age, and fault only when a link's state is older than the staleness
budget (`fault.max_stale_s`) or its port is gone.

A command whose answer carries the state (the framed protocol) counts as this tick's read; servo buses (sync
write, no answer) are read with a sync read after the write, so the command always leaves first."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from .timing import StageTimes


def bus_fault(link, age_s: float, max_stale_s: float):
    """The fault for a link whose newest valid state is `age_s` old (imported lazily: drivers stay optional)."""
    from drivers.errors import BusFaultError

    return BusFaultError(
        f"arm bus {link.protocol} on {link.config.port}: no valid state for {age_s * 1e3:.0f} ms, over the staleness "
        f"budget fault.max_stale_s = {max_stale_s * 1e3:.0f} ms; {link.health.describe()}. A real bus loses a few "
        "replies in a thousand; this many points to wiring, grounding, power or a baud rate at its limit (or raise "
        "fault.max_stale_s if the arm tolerates it).", last_state=link.last_state, last_command=link.last_command)


class BusMonitor:
    def __init__(self, links: Sequence, max_stale_s: float, times: StageTimes, clock: Callable[[], float] = time.monotonic):
        self.links = list(links)
        self.max_stale_s = float(max_stale_s)
        self.times = times
        self.clock = clock
        self.stale_ticks = 0  # ticks that went on with a state older than this tick

    def first_read(self) -> np.ndarray:
        """The loop's first state: retried for up to the staleness budget (at least 100 ms)."""
        t = self.clock()
        for link in self.links:  # each link gets the whole budget
            state, _ = link.read_within(self.clock() + max(self.max_stale_s, 0.1), self.clock)
            if state is None:
                raise bus_fault(link, self.clock() - t, self.max_stale_s)
        return self.state()

    def read(self, t_write: float, deadline: float) -> np.ndarray:
        """Refresh every link's state (unless its command's answer already did, after `t_write`) until `deadline`;
        record the staleness; raise BusFaultError when a link is over the budget. Returns the joint vector."""
        stale = False
        todo = [l for l in self.links if l.last_state is None or l.last_state.timestamp < t_write]
        t = self.clock()
        for k, link in enumerate(todo):  # each link its share of the time (plus what the ones before left)
            state, _ = link.read_within(t + (deadline - t) * (k + 1) / len(todo), self.clock)
            stale |= state is None
        self.stale_ticks += stale
        now = time.monotonic()  # the links stamp states with time.monotonic()
        worst, worst_link = 0.0, None
        for link in self.links:
            age = now - link.last_state.timestamp
            if age >= worst:
                worst, worst_link = age, link
        self.times.add("staleness", worst * 1e3)
        if worst > self.max_stale_s:
            raise bus_fault(worst_link, worst, self.max_stale_s)
        return self.state()

    def state(self) -> np.ndarray:
        return np.concatenate([np.asarray(l.last_state.q, dtype=np.float64) for l in self.links])

    def report(self) -> list:
        """Per link: port, protocol, bus health, clipped commands, the last torque change per id."""
        return [{"port": l.config.port, "protocol": l.protocol, **l.health.as_dict(), "clipped": dict(l.clipped),
                 "torque": {str(k): v for k, v in l.torque_report.items()}} for l in self.links]
