"""Command round trip and jitter over a pty, per protocol, at 100 and 200 Hz.

Each protocol's simulator runs in its own process. Per tick: write(q) then read_state() (the command round trip),
paced with monotonic deadlines that advance by whole periods; overruns are counted, never caught up.
Usage: python scripts/bench_arm_links.py [--seconds 3] [--rates 100,200] [--json]"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from drivers.arm.sim import SimulatedController  # noqa: E402
from drivers.cli import make_link  # noqa: E402


def bench(protocol: str, rate: float, seconds: float, ids=(1, 2, 3, 4, 5, 6)) -> dict:
    period = 1.0 / rate
    with SimulatedController(protocol, ids=list(ids)) as port:
        link = make_link(protocol, port, ids, watchdog_ms=500) if protocol == "framed" else make_link(protocol, port, ids)
        with link:
            link.torque(True)
            for _ in range(50):  # warm-up
                link.read_state()
            rtt, lateness, sent_at, overruns = [], [], [], 0
            n = int(seconds * rate)
            deadline = time.monotonic() + period
            for k in range(n):
                now = time.monotonic()
                if now < deadline:
                    time.sleep(max(0.0, deadline - now - 0.0005))
                    while time.monotonic() < deadline:
                        pass  # last half millisecond: spin
                start = time.monotonic()
                lateness.append(start - deadline)
                q = 0.2 * math.sin(2 * math.pi * 0.5 * k * period) * np.ones(len(ids))
                link.write(q, dt=period)
                sent_at.append(time.monotonic() - deadline)
                link.read_state()
                rtt.append(time.monotonic() - start)
                deadline += period
                if time.monotonic() > deadline:  # missed the next slot: skip whole periods
                    skipped = int((time.monotonic() - deadline) / period) + 1
                    overruns += 1
                    deadline += skipped * period
    r, j = np.asarray(rtt) * 1e3, np.asarray(lateness) * 1e3

    def pct(a):
        return {f"p{p}": round(float(np.percentile(a, p)), 4) for p in (50, 90, 99)}

    return {"protocol": protocol, "rate_hz": rate, "ticks": n, "round_trip_ms": pct(r), "jitter_ms": pct(np.abs(j)), "command_out_ms": pct(np.asarray(sent_at) * 1e3),
            "overruns": overruns}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rates", default="100,200")
    p.add_argument("--protocols", default="dynamixel,feetech,framed")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    results = []
    for proto in a.protocols.split(","):
        for rate in (float(x) for x in a.rates.split(",")):
            res = bench(proto, rate, a.seconds)
            results.append(res)
            if not a.json:
                rt, jt = res["round_trip_ms"], res["jitter_ms"]
                print(f"{proto:<9} {rate:>5.0f} Hz  round trip p50 {rt['p50']:.3f} p90 {rt['p90']:.3f} p99 "
                      f"{rt['p99']:.3f} ms | start jitter p50 {jt['p50']:.3f} p90 {jt['p90']:.3f} p99 {jt['p99']:.3f} "
                      f"ms | command on the wire after deadline p50 {res['command_out_ms']['p50']:.3f} p99 "
                      f"{res['command_out_ms']['p99']:.3f} ms | overruns {res['overruns']}/{res['ticks']}", flush=True)
    if a.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
