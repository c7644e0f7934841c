"""The simulator's own log: what the simulated servos received and did, for checking safety from their side.

JSON lines, one event per line, flushed per line (a crash loses at most the line being written):
  {"t": 12.3, "ev": "start", "protocol": "dynamixel", "ids": [1, 2], "faults": {...}, "pid": 123}
  {"t": 12.4, "ev": "goal", "goals": {"1": 2048, "2": 2100}}       one line per goal write: a sync write (all its
                                                                    ids), a single write covering the goal address,
                                                                    a framed COMMAND; "ignored": [ids] is added for
                                                                    ids that did not take the goal (bus watchdog
                                                                    tripped, framed e-stop / watchdog / torque off)
  {"t": 12.5, "ev": "torque", "id": 1, "on": true}                  one line per id per torque write (repeats too)
  {"t": 13.0, "ev": "watchdog", "ids": [1, 2], "timeout_ms": 100}   a Dynamixel bus watchdog (98) or the framed
                                                                    controller watchdog tripped: holding position
  {"t": 14.0, "ev": "end", "torque": {"1": false}, "pos": {"1": 2048}, "injected": {...}}   at SIGTERM / SIGINT
`t` is time.monotonic() of the simulator process; goals and positions are raw controller units (Dynamixel:
signed 32-bit counts, Feetech: counts after sign-magnitude decoding, framed: microradians)."""
from __future__ import annotations

import json
import math
from typing import IO, Optional

import numpy as np

from drivers.errors import ConfigError


class SimLog:
    """Append events as JSON lines; one write + flush per event (one line per sync write at 200 Hz is cheap)."""

    def __init__(self, path: str):
        try:
            self._f: Optional[IO[str]] = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open the simulator log {path!r} for writing: {exc}; pass a writable --log "
                              "path") from exc
        self.path = path

    def write(self, event: dict) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_sim_log(path: str) -> dict:
    """Parse a simulator log (pure: reads the file, no process). A truncated LAST line (the simulator was killed
    mid-write) is skipped and reported; a bad line elsewhere is a ConfigError. Returns
      start:         the "start" event or None
      goals:         {id: float64 array of every goal received, in order}
      goal_times:    {id: float64 array of their `t`}
      ignored_goals: {id: number of goals that id did not take}
      torque_events: [{"t", "id", "on"}, ...] in order
      torque:        {id: bool} final torque state: from the "end" line, else the last torque event per id
                     (ids never written are absent without an "end" line)
      watchdog:      ["watchdog" events]
      end:           the "end" event or None (killed, or still running)
      pos:           {id: raw} final positions from "end" ({} without it)
      injected:      the fault counters from "end" ({} without it)
      lines, truncated: number of events read, whether a truncated last line was skipped"""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the simulator log {path!r}: {exc}; was the simulator started with "
                          "--log / SimulatedController(log=...)?") from exc
    if lines and lines[-1] == "":
        lines.pop()
    events, truncated = [], False
    for k, line in enumerate(lines):
        try:
            ev = json.loads(line)
            if not isinstance(ev, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            if k == len(lines) - 1:
                truncated = True
                break
            raise ConfigError(f"{path}:{k + 1}: not a simulator log line ({exc}): {line[:80]!r}") from None
        events.append(ev)
    goals, times, ignored = {}, {}, {}
    torque_events, watchdog, torque = [], [], {}
    start = end = None
    for ev in events:
        kind = ev.get("ev")
        if kind == "goal":
            t = float(ev.get("t", math.nan))
            for key, v in ev.get("goals", {}).items():
                i = int(key)
                goals.setdefault(i, []).append(math.nan if v is None else float(v))
                times.setdefault(i, []).append(t)
            for i in ev.get("ignored", ()):
                ignored[int(i)] = ignored.get(int(i), 0) + 1
        elif kind == "torque":
            e = {"t": ev.get("t"), "id": int(ev["id"]), "on": bool(ev["on"])}
            torque_events.append(e)
            torque[e["id"]] = e["on"]
        elif kind == "watchdog":
            watchdog.append(ev)
        elif kind == "start":
            start = ev
        elif kind == "end":
            end = ev
    if end is not None:
        torque = {int(k): bool(v) for k, v in end.get("torque", {}).items()}
    return {
        "start": start,
        "goals": {i: np.asarray(v, dtype=np.float64) for i, v in goals.items()},
        "goal_times": {i: np.asarray(v, dtype=np.float64) for i, v in times.items()},
        "ignored_goals": ignored,
        "torque_events": torque_events,
        "torque": torque,
        "watchdog": watchdog,
        "end": end,
        "pos": {int(k): v for k, v in (end or {}).get("pos", {}).items()},
        "injected": dict((end or {}).get("injected", {})),
        "lines": len(events),
        "truncated": truncated,
    }
