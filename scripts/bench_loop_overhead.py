"""Control-loop overhead outside inference and command-streaming jitter, at 200 Hz over a pty.

Runs the real loop (the embedded default: simulated camera, tiny demo model through onnxruntime in the inference
thread, a simulated controller in its own process on a pty) per protocol and prints:
  overhead      the tick's own work outside serial I/O (scheduler, blending, safety check, bookkeeping), ms
  write jitter  lateness of each serial write after its deadline (command streaming jitter), ms
  tick          the whole tick (state read + command write + overhead), ms; overruns per ticks
DESIGN §7 targets: overhead p99 < 1 ms, streaming jitter p99 < 0.5 ms at 200 Hz.
Usage: python scripts/bench_loop_overhead.py [--seconds 10] [--rate 200] [--protocols framed,dynamixel,feetech]
       [--state-every 1] [--json]"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edge.config import from_yaml  # noqa: E402
from edge.default import DEFAULT_CONFIG  # noqa: E402
from edge.runtime import run_config  # noqa: E402


def bench(protocol: str, rate: float, seconds: float, state_every: int, realtime_priority: int = 50) -> dict:
    cfg = from_yaml(DEFAULT_CONFIG)
    arm = dataclasses.replace(cfg.arms[0], protocol=protocol, link={"watchdog_ms": 500} if protocol == "framed" else {})
    cfg = dataclasses.replace(cfg, arms=(arm,), rates=dataclasses.replace(cfg.rates, control_hz=rate, state_every=state_every,
                                                                       realtime_priority=realtime_priority))
    s = run_config(cfg, seconds=seconds)
    lat = s["latency_ms"]
    return {"protocol": protocol, "rate_hz": rate, "state_every": state_every, "steps": s["steps"],
            "overruns": s["overruns"], "chunks": s["chunks"], "overhead_ms": lat["overhead"],
            "write_jitter_ms": lat["write_lateness"], "tick_ms": lat["tick"], "read_state_ms": lat.get("read_state"),
            "serial_write_ms": lat["serial_write"], "inference_ms": lat["inference"],
            "camera_to_serial_ms": s["camera_to_serial_ms"], "load_avg": os.getloadavg(), "fault": s.get("fault"),
            "realtime": s.get("realtime")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--protocols", default="framed,dynamixel,feetech")
    p.add_argument("--state-every", type=int, default=1, help="read the arm state every N ticks (default 1)")
    p.add_argument("--realtime-priority", type=int, default=50,
                   help="SCHED_FIFO priority of the control thread (0: normal scheduling; default 50)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    results = []
    for proto in a.protocols.split(","):
        r = bench(proto, a.rate, a.seconds, a.state_every, a.realtime_priority)
        results.append(r)
        if not a.json:
            o, j, t = r["overhead_ms"], r["write_jitter_ms"], r["tick_ms"]
            print(f"{proto:<9} {a.rate:.0f} Hz {r['steps']} ticks: overhead outside inference p50 {o['p50']:.3f} "
                  f"p99 {o['p99']:.3f} ms | write jitter p50 {j['p50']:.3f} p90 {j['p90']:.3f} p99 {j['p99']:.3f} ms | "
                  f"tick p50 {t['p50']:.3f} p99 {t['p99']:.3f} ms | overruns {r['overruns']} | inference p50 "
                  f"{r['inference_ms']['p50']:.1f} ms | camera->serial p50 {r['camera_to_serial_ms']['p50']:.1f} ms | "
                  f"load {r['load_avg'][0]:.2f} | {(r.get('realtime') or {}).get('policy', '-')} | fault "
                  f"{(r['fault'] or 'none')[:60]}", flush=True)
    if a.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
