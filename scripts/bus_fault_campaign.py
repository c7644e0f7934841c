"""Fault-injection campaign: the real control loop (embedded default policy on onnxruntime, task camera) against
simulated controllers that drop / corrupt / delay replies, many runs per protocol, a CPU hog beside every other run.
The simulators run under SCHED_FIFO when allowed (servo hardware answers whatever the host's load; our loop's
control thread competes with inference and the hog as it would on the robot). Prints one JSON line per run and, at
the end, the table for a closing note: runs, spontaneous stops, unsafe goals
(non-finite or outside the limits, from the simulator's own log), servos left in the wrong torque state, bus health.

Usage: python scripts/bus_fault_campaign.py [--runs 20] [--seconds 30] [--protocols dynamixel,feetech,framed]
       [--faults drop=0.01,corrupt=0.01 | drop=0.01+corrupt=0.01] [--out campaign.jsonl]
Takes runs x seconds x protocols x faults (+ ~3 s set-up per run): the defaults are about an hour."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "edge"))

from bus_fault_harness import bus_totals, hog, load_avg, run_with_faults, spontaneous_stop  # noqa: E402


def parse_faults(text: str) -> list[dict]:
    """"drop=0.01,corrupt=0.01" -> two conditions; "drop=0.01+corrupt=0.01" -> one condition with both."""
    out = []
    for item in text.split(","):
        cond = {}
        for part in item.split("+"):
            k, _, v = part.partition("=")
            if k not in ("drop", "corrupt", "delay_p") or not v:
                raise SystemExit(f"--faults: {part!r}: use drop=P, corrupt=P or delay_p=P (',' separates conditions, "
                                 "'+' combines faults in one condition)")
            cond[k] = float(v)
            if k == "delay_p":
                cond["delay_ms"] = 15.0
        out.append(cond)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--protocols", default="dynamixel,feetech,framed")
    p.add_argument("--faults", default="drop=0.01,corrupt=0.01")
    p.add_argument("--hz", type=float, default=100.0)
    p.add_argument("--out", default=None, help="also append the JSON lines here")
    p.add_argument("--sim-normal-priority", action="store_true",
                   help="leave the simulators at normal priority (default: SCHED_FIFO when allowed, as servo hardware "
                        "does not slow down with the host's load; then the injected faults are the only faults)")
    p.add_argument("--tmp", default="/tmp/imagewam-bus-campaign")
    a = p.parse_args()
    from edge.default import ensure_default_engines
    from edge.engines import load_engine_policy

    policy = load_engine_policy(ensure_default_engines(progress=lambda s: print(s, file=sys.stderr)))
    rows = {}
    out = open(a.out, "a") if a.out else None
    for protocol in a.protocols.split(","):
        for fault in parse_faults(a.faults):
            key = (protocol, json.dumps(fault))
            row = rows.setdefault(key, {"protocol": protocol, "fault": fault, "runs": 0, "hog_runs": 0, "stops": 0,
                                        "unsafe_goals": 0, "goals": 0, "torque_wrong": 0, "lost": 0, "corrupt": 0,
                                        "late": 0, "retried": 0, "transactions": 0, "longest_miss_run": 0,
                                        "staleness_max_ms": 0.0, "load": []})
            for k in range(a.runs):
                hogs = hog(1) if k % 2 else []
                t0 = time.monotonic()
                try:
                    r = run_with_faults(Path(a.tmp) / f"{protocol}-{k}", (protocol,), seconds=a.seconds, seed=1000 + k,
                                        policy=policy, control_hz=a.hz, sim_realtime=not a.sim_normal_priority,
                                        torque_on_stop="off" if k % 3 == 0 else "hold", **fault)
                finally:
                    for h in hogs:
                        h.terminate()
                s, c = r["summary"], r["checks"]
                bus = bus_totals(s)
                line = {"protocol": protocol, "fault": fault, "run": k, "hog": bool(hogs), "load": load_avg(),
                        "stopped_by": s["stopped_by"], "fault_msg": s["fault"], "steps": s["steps"],
                        "goals": c["goals"], "unsafe_goals": c["bad_goals"], "torque_wrong": len(c["torque_wrong"]),
                        "torque_mode": s.get("torque_mode"), "bus": bus, "staleness_ms": s["staleness_ms"],
                        "write_lateness_p99_ms": s["cadence"]["write_lateness"]["p99"],
                        "realtime": s.get("realtime", {}).get("policy"), "wall_s": round(time.monotonic() - t0, 1)}
                print(json.dumps(line), flush=True)
                if out:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
                row["runs"] += 1
                row["hog_runs"] += bool(hogs)
                row["stops"] += spontaneous_stop(s)
                row["unsafe_goals"] += c["bad_goals"]
                row["goals"] += c["goals"]
                row["torque_wrong"] += len(c["torque_wrong"])
                for key2 in ("lost", "corrupt", "late", "retried", "transactions"):
                    row[key2] += bus[key2]
                row["longest_miss_run"] = max(row["longest_miss_run"], bus["longest_miss_run"])
                row["staleness_max_ms"] = max(row["staleness_max_ms"], s["staleness_ms"]["max"] or 0.0)
                row["load"].append(line["load"])
    print("\n| protocol | fault | runs (hog) | spontaneous stops | unsafe goals / goals | torque wrong | reads | lost | "
          "corrupt | late | retried | longest miss run | staleness max ms | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows.values():
        f = ", ".join(f"{k} {v:g}" for k, v in row["fault"].items())
        loads = row["load"]
        print(f"| {row['protocol']} | {f} | {row['runs']} ({row['hog_runs']}) | {row['stops']} | {row['unsafe_goals']} / "
              f"{row['goals']} | {row['torque_wrong']} | {row['transactions']} | {row['lost']} | {row['corrupt']} | "
              f"{row['late']} | {row['retried']} | {row['longest_miss_run']} | {row['staleness_max_ms']:.1f} | "
              f"{min(loads):.2f}-{max(loads):.2f} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("IMAGEWAM_EDGE_CACHE", str(Path.home() / ".cache" / "imagewam-edge"))
    sys.exit(main())
