"""Loopback round-trip overhead of the served policy (Triton, gRPC) against the local backend, for 1, 2 and 4 robot
clients at once: p50/p99 per control step, the server/network split, throughput, and the machine's load (uptime).

Each client is a thread with its own connection, asking for the next control step as soon as the last one came back
(the stress case: a robot asks once per replan, e.g. every 0.8 s). The local backend (same engines, this process)
runs right after each step of client 0, so both columns see the same load on a shared machine. The server runs in the serving environment on
loopback (started here, one process group), with --instances N policies.

    python scripts/bench_serve.py                                   # the embedded default's engines
    python scripts/bench_serve.py --engines engines/ --iterations 300 --clients 1,2,4 --instances 2 --json serve.json
    python scripts/bench_serve.py --deployment repository         # Triton's binary on a model repository
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(xs) -> dict:
    a = np.asarray(xs, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "mean": round(float(a.mean()), 2), "n": int(a.size)}


def observation(policy, rng):
    size = [(s.height, s.width) for s in policy.canvas.slots]
    return {"images": [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in size],
            "state": rng.uniform(-0.3, 0.3, policy.spec.state_dim), "instruction": ARGS.instruction}


def timed(policy, obs, k) -> tuple[float, dict]:
    t = time.perf_counter()
    out = policy.infer(obs, seed=k)
    return (time.perf_counter() - t) * 1e3, out["timings_ms"]


def bench_remote(url: str, clients: int, local) -> dict:
    """`clients` robots at once; with one client the local backend runs right after each remote step (interleaved:
    both see the same load on this shared machine); with more, the one-client phase's local figure is the reference
    (a local run between concurrent requests would compete with the server for the same cores)."""
    from edge.serve.client import connect

    robots = [connect(url, timeout_s=30.0) for _ in range(clients)]
    obs = observation(robots[0], np.random.default_rng(0))
    for r in robots + [local]:
        for k in range(ARGS.warmup):
            r.infer(obs, seed=k)
    rows: list = [[] for _ in robots]
    local_ms: list = []
    barrier = threading.Barrier(clients)

    def robot(i):
        barrier.wait()
        for k in range(ARGS.iterations):
            rows[i].append(timed(robots[i], obs, k))
            if clients == 1:
                local_ms.append(timed(local, obs, k)[0])

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for r in robots:
        r.close()
    flat = [x for row in rows for x in row]
    out = {"local_step_ms": pct(local_ms)} if local_ms else {}
    return {"clients": clients, **out, "step_ms": pct([x[0] for x in flat]),
            "server_ms": pct([x[1]["server"] for x in flat]), "network_ms": pct([x[1]["network"] for x in flat]),
            "steps_per_s": round(len(flat) / wall, 1)}


def main() -> int:
    from edge.serve.launch import ServerProcess

    engines = ARGS.engines
    if engines == "@default":
        from edge.default import ensure_default_engines

        engines = str(ensure_default_engines(progress=lambda s: sys.stderr.write(s + "\n")))
    result = {"engines": engines, "iterations": ARGS.iterations, "instances": ARGS.instances, "cpus": os.cpu_count(),
              "load_before": load()}
    from edge.engines import load_engine_policy

    local = load_engine_policy(engines, threads=ARGS.threads)
    result["deployment"] = ARGS.deployment
    with tempfile.TemporaryDirectory() as tmp:
        command = None
        if ARGS.deployment == "repository":  # Triton's binary on a model repository, as a stock container runs it
            from edge.serve.env import source_dir
            from edge.serve.launch import repository_command
            from edge.serve.model_repo import write_model_repository
            from edge.serve.server import ServeConfig

            repo = write_model_repository(ServeConfig(engines=engines, instances=ARGS.instances, threads=ARGS.threads),
                                          Path(tmp) / "repo", package_path=str(source_dir()))
            command = repository_command(repo, Path(tmp) / "triton")
        srv = ServerProcess(engines, tmp, instances=ARGS.instances, command=command,
                            extra=["--threads", str(ARGS.threads)] if ARGS.threads else ())
        sys.stderr.write("starting the server...\n")
        t = time.monotonic()
        srv.start()
        result["server_start_s"] = round(time.monotonic() - t, 1)
        try:
            result["remote"] = []
            for c in sorted(set([1] + ARGS.clients)):  # 1 first: the interleaved local reference
                sys.stderr.write(f"{c} client(s)...\n")
                r = bench_remote(srv.url, c, local)
                result.setdefault("local_step_ms", r.get("local_step_ms"))
                r.setdefault("local_step_ms", result["local_step_ms"])
                r["overhead_p50_ms"] = round(r["step_ms"]["p50"] - r["local_step_ms"]["p50"], 2)
                r["overhead_p99_ms"] = round(r["step_ms"]["p99"] - r["local_step_ms"]["p99"], 2)
                r["load"] = load()
                result["remote"].append(r)
        finally:
            srv.stop()
    result["load_after"] = load()
    text = json.dumps(result, indent=1)
    if ARGS.json:
        from edge.atomic import write_text

        write_text(ARGS.json, text)
    print(text)
    l = result["local_step_ms"]
    print(f"\n{result['cpus']} CPUs, load before {result['load_before']}, after {result['load_after']}; local backend "
          f"(interleaved with the 1-client run): p50 {l['p50']} p99 {l['p99']} ms")
    for r in result["remote"]:
        print(f"{r['clients']} client(s): remote p50 {r['step_ms']['p50']} p99 {r['step_ms']['p99']} ms "
              f"(+{r['overhead_p50_ms']} / +{r['overhead_p99_ms']} ms; server p50 {r['server_ms']['p50']}, network "
              f"p50 {r['network_ms']['p50']}; {r['steps_per_s']} steps/s; load {r['load']})")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default="@default", help="engines directory (default: the embedded default's)")
    p.add_argument("--iterations", type=int, default=200, help="control steps per client (default 200)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4],
                   help="robot clients at once, comma separated (default 1,2,4)")
    p.add_argument("--instances", type=int, default=1, help="server model instances (default 1)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads, both sides (0: default)")
    p.add_argument("--deployment", choices=["pytriton", "repository"], default="pytriton",
                   help="pytriton: `imagewam-edge serve`; repository: Triton's binary on `serve --model-repository` "
                   "(the stock-container way), both from the serving environment")
    p.add_argument("--instruction", default="move to the red block")
    p.add_argument("--json", help="also write the result here")
    ARGS = p.parse_args()
    sys.exit(main())
