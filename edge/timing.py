"""Timing for the control loop and the benchmarks: monotonic deadlines that advance by whole periods (overruns are
counted, never caught up with a burst), stage timers in bounded buffers, and percentile summaries.

Pure helpers (`next_deadline`, `percentiles`, `summarize`) carry the arithmetic; `Ticker` and `StageTimes` hold the
little state there is. Everything uses `time.monotonic()` (or an injected clock) so wall-clock jumps never matter."""
from __future__ import annotations

import collections
import math
import threading
import time
from typing import Callable, Iterable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
SPIN_S = 0.0005  # the last half millisecond before a deadline is spun, not slept (sleep wakes up late)


def next_deadline(deadline: float, period: float, now: float) -> tuple[float, int]:
    """(new deadline, missed periods). The deadline after `deadline` that is still in the future of `now`,
    reached by adding whole periods; `missed` counts the deadlines skipped because `now` had passed them.
    On time (now < deadline + period): (deadline + period, 0)."""
    if not (period > 0 and math.isfinite(period)):
        raise ValueError(f"period must be a positive finite number of seconds, got {period!r}")
    nxt = deadline + period
    if now < nxt:
        return nxt, 0
    missed = int((now - nxt) // period) + 1
    return nxt + missed * period, missed


def percentiles(samples: Iterable[float], ps: Sequence[int] = PERCENTILES) -> dict:
    """{"p50": .., "p90": .., "p99": ..} (numpy's linear interpolation); NaN for no samples."""
    a = np.asarray(list(samples) if not isinstance(samples, np.ndarray) else samples, dtype=np.float64)
    if a.size == 0:
        return {f"p{p}": float("nan") for p in ps}
    return {f"p{p}": float(np.percentile(a, p)) for p in ps}


def summarize(samples: Iterable[float], digits: int = 4) -> dict:
    """p50/p90/p99, mean, std, max and n of a sample list (rounded)."""
    a = np.asarray(list(samples) if not isinstance(samples, np.ndarray) else samples, dtype=np.float64)
    out = percentiles(a)
    out.update(mean=float(a.mean()) if a.size else float("nan"), std=float(a.std()) if a.size else float("nan"),
               max=float(a.max()) if a.size else float("nan"))
    out = {k: (round(v, digits) if math.isfinite(v) else None) for k, v in out.items()}
    out["n"] = int(a.size)
    return out


def jitter(samples: Iterable[float]) -> dict:
    """Spread of a latency distribution: std and p99 - p50 (same unit as the samples)."""
    a = np.asarray(list(samples), dtype=np.float64)
    if a.size == 0:
        return {"std": None, "p99_minus_p50": None}
    p = percentiles(a)
    return {"std": round(float(a.std()), 4), "p99_minus_p50": round(p["p99"] - p["p50"], 4)}


class StageTimes:
    """Thread-safe per-stage sample buffers (the newest `maxlen` samples per stage, in ms)."""

    def __init__(self, maxlen: int = 100_000):
        self.maxlen = int(maxlen)
        self._data: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            buf = self._data.get(stage)
            if buf is None:
                buf = self._data[stage] = collections.deque(maxlen=self.maxlen)
            buf.append(float(ms))

    def add_many(self, values: dict) -> None:
        for k, v in values.items():
            self.add(k, v)

    def samples(self, stage: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._data.get(stage, ()), dtype=np.float64)

    def stages(self) -> list[str]:
        with self._lock:
            return list(self._data)

    def summary(self, full: bool = False) -> dict:
        """stage -> {p50, p90, p99} (and mean/std/max/n with full=True), in ms."""
        out = {}
        for stage in self.stages():
            s = summarize(self.samples(stage))
            out[stage] = s if full else {k: s[k] for k in ("p50", "p90", "p99")}
        return out


class Ticker:
    """Periodic pacing on monotonic deadlines. `wait()` sleeps (then spins the last SPIN_S) until the current
    deadline and returns how late it woke (s); `done()` after the tick's work advances the deadline by whole
    periods, counting an overrun when the work ran past the next deadline."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic, spin_s: float = SPIN_S,
                 sleep: Callable[[float], None] = time.sleep):
        if not (period > 0 and math.isfinite(period)):
            raise ValueError(f"period must be a positive finite number of seconds, got {period!r}")
        self.period, self.clock, self.spin_s, self.sleep = float(period), clock, float(spin_s), sleep
        self.deadline = clock()
        self.ticks = 0
        self.overruns = 0  # ticks whose work ran past the next deadline
        self.missed = 0  # deadlines skipped in total

    def start(self) -> None:
        self.deadline = self.clock()

    def wait(self) -> float:
        """Block until the current deadline; returns the lateness in seconds (>= 0 when woken after it)."""
        while True:
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                break
            if remaining > self.spin_s:
                self.sleep(remaining - self.spin_s)
        return self.clock() - self.deadline

    def done(self) -> int:
        """Advance to the next deadline after this tick's work; returns the number of missed periods."""
        self.ticks += 1
        self.deadline, missed = next_deadline(self.deadline, self.period, self.clock())
        if missed:
            self.overruns += 1
            self.missed += missed
        return missed
