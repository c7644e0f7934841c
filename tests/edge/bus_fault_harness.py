"""Run the REAL control loop (edge.runtime.run_config: the embedded default's policy, task camera, loop, links)
against a simulated controller process that drops, corrupts or delays replies on purpose, and check the run from
the simulator's own log: every goal it received finite and inside the limits, and the torque of every servo at the
end as configured. Used by tests/edge/test_bus_faults.py and scripts/bus_fault_campaign.py."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

IDS = tuple(range(1, 8))
LIMIT = 1.5  # rad, the embedded default's safety limits (lower -1.5, upper 1.5)


def hog(n: int = 1) -> list:
    """CPU hogs in their own processes (a busy machine); terminate() them after."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _arm(protocol: str, port: str, ids=IDS, link: Optional[dict] = None):
    from edge.config import ArmConfig

    return ArmConfig(protocol, port, tuple(ids), safety={"lower": -LIMIT, "upper": LIMIT, "max_velocity": 1.5,
                                                          "max_step": 0.1}, link=dict(link or {}))


def raw_limits(protocol: str, ids) -> tuple[np.ndarray, np.ndarray]:
    """The safety limits in the controller's raw units (what the simulator log holds)."""
    from drivers.arm.dynamixel import DynamixelLink
    from drivers.arm.feetech import FeetechLink
    from drivers.arm.framed import FramedLink

    cls = {"dynamixel": DynamixelLink, "feetech": FeetechLink, "framed": FramedLink}[protocol]
    m = cls.default_mapping(list(ids))
    a, b = m.to_raw(np.full(len(ids), -LIMIT)), m.to_raw(np.full(len(ids), LIMIT))
    return np.minimum(a, b), np.maximum(a, b)


class SharedPolicy:
    """A loaded policy shared by many runs: run_config closes its policy's backend at the end of a run; this
    wrapper has no backend to close (the wrapped policy is the real one)."""

    def __init__(self, policy):
        self._p = policy
        self.spec, self.canvas, self.embodiment = policy.spec, policy.canvas, policy.embodiment

    def infer(self, obs, **kw):
        return self._p.infer(obs, **kw)

    def text(self, instruction):
        return self._p.text(instruction)


def run_with_faults(tmp: Path, protocols=("dynamixel",), seconds: float = 4.0, drop: float = 0.0,
                    corrupt: float = 0.0, delay_p: float = 0.0, delay_ms: float = 0.0, seed: int = 0,
                    torque_on_stop: str = "hold", control_hz: float = 100.0, max_stale_s: Optional[float] = None,
                    policy=None, sim_realtime: bool = False) -> dict:
    """One run; returns {"summary", "logs": [read_sim_log per arm], "checks": {...}}. Two protocols = a dual-arm
    robot (the 7 joints split 4 + 3 over two controllers, each with its own faults). `sim_realtime`: run the
    simulators under SCHED_FIFO (when allowed) so that, like servo hardware, they answer whatever load the host
    carries; the faults they inject are then the only faults on the bus."""
    from drivers.arm.sim import SimulatedController
    from drivers.arm.sim_log import read_sim_log
    from edge.config import from_yaml
    from edge.default import DEFAULT_CONFIG
    from edge.runtime import run_config

    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    splits = [IDS] if len(protocols) == 1 else [IDS[:4], IDS[4:]]
    sims, arms, logs = [], [], []
    try:
        # the simulators' logs live in memory (/dev/shm): hardware does not wait for the host's disk, and a log
        # flush stuck behind writeback throttling would look like lost replies
        logdir = Path(tempfile.mkdtemp(prefix="simlog-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        for k, (protocol, ids) in enumerate(zip(protocols, splits)):
            log = logdir / f"sim{k}-{protocol}.jsonl"
            if log.exists():
                log.unlink()
            sim = SimulatedController(protocol, ids=list(ids), drop=drop, corrupt=corrupt, delay_p=delay_p,
                                      delay_ms=delay_ms, seed=seed * 10 + k, log=str(log),
                                      watchdog_ms=500 if protocol == "framed" else 200)
            port = sim.start()
            sims.append(sim)
            if sim_realtime:
                try:
                    os.sched_setscheduler(sim.proc.pid, os.SCHED_FIFO, os.sched_param(60))
                except (AttributeError, OSError):
                    pass
            logs.append(log)
            arms.append(_arm(protocol, port, ids, {"watchdog_ms": 500} if protocol == "framed" else {}))
        cfg = from_yaml(DEFAULT_CONFIG)
        cfg = dataclasses.replace(cfg, arms=tuple(arms),
                                  rates=dataclasses.replace(cfg.rates, control_hz=control_hz),
                                  fault=dataclasses.replace(cfg.fault, dump_dir=str(tmp / "faults"),
                                                            torque_on_stop=torque_on_stop, max_stale_s=max_stale_s))
        summary = run_config(cfg, seconds=seconds, policy=SharedPolicy(policy) if policy is not None else None)
    finally:
        for sim in sims:
            sim.stop()
    parsed = [read_sim_log(str(p)) for p in logs]
    for p in logs:
        shutil.copy(p, tmp / p.name)  # kept beside the run, out of memory
        p.unlink()
    shutil.rmtree(logdir, ignore_errors=True)
    return {"summary": summary, "logs": parsed, "checks": check_logs(parsed, protocols, splits, summary)}


def check_logs(parsed: list, protocols, splits, summary: dict) -> dict:
    """From the simulators' side: goals outside the limits or non-finite, servos whose final torque is not what the
    stop asked for (hold -> on, off -> off), and the faults the simulators injected."""
    bad_goals, goals, torque_wrong, injected = 0, 0, [], {}
    want_on = summary.get("torque_mode", "hold") == "hold"
    for log, protocol, ids in zip(parsed, protocols, splits):
        lo, hi = raw_limits(protocol, ids)
        for k, i in enumerate(ids):
            g = np.asarray(log["goals"].get(i, ()), dtype=np.float64)
            goals += g.size
            bad_goals += int(np.sum(~np.isfinite(g) | (g < lo[k] - 1) | (g > hi[k] + 1)))
            if bool(log["torque"].get(i)) != want_on:
                torque_wrong.append((protocol, i, log["torque"].get(i)))
        for key, v in (log.get("injected") or {}).items():
            if isinstance(v, (int, float)):
                injected[key] = injected.get(key, 0) + v
    return {"goals": goals, "bad_goals": bad_goals, "torque_wrong": torque_wrong, "injected": injected}


def spontaneous_stop(summary: dict) -> bool:
    return summary.get("fault") is not None or summary.get("stopped_by") not in ("time",)


def bus_totals(summary: dict) -> dict:
    keys = ("transactions", "lost", "corrupt", "late", "retried")
    out = {k: sum(b.get(k, 0) for b in summary.get("bus", [])) for k in keys}
    out["longest_miss_run"] = max((b.get("longest_miss_run", 0) for b in summary.get("bus", [])), default=0)
    return out


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def finite(x) -> bool:
    return x is not None and math.isfinite(x)
