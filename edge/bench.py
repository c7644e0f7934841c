"""`bench`: control-step latency per stage on this machine, with the facts that make a figure meaningful.

Warm-up first, then `iterations` control steps on changing synthetic camera frames (the simulated camera's scene):
per stage p50/p90/p99/mean (vision encoder, prefill, each denoise step, the denoise loop, the whole control step),
jitter, peak memory, and the system (CPU/GPU; on a Jetson: L4T/JetPack, TensorRT, nvpmodel mode, jetson_clocks,
temperatures). Outputs are synchronous numpy arrays, so every timing already includes the device synchronisation.
`--compare reference` also times the official evaluation path (edge/bench_reference.py) on the same checkpoint."""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ConfigError
from .process_memory import peak_rss_mb, rss_mb  # noqa: F401  (re-exported)
from .synthetic import synthetic_observation  # noqa: F401  (re-exported)
from .timing import jitter, summarize

log = logging.getLogger(__name__)

STAGE_ORDER = ("control_step", "text", "preprocess", "vision_encoder", "prefill", "denoise", "denoise_step",
               "postprocess")


def measure(infer: Callable[[dict, int], dict], make_obs: Callable[[int], dict], iterations: int, warmup: int,
            progress: Callable[[str], None] = lambda s: None) -> dict:
    """Runs `infer(obs, seed)` warmup + iterations times; returns {"samples": stage -> [ms], "rss_peak_mb",
    "transfers": [one {"h2d": {stage: bytes}, "d2h": {...}} per measured step] (the `transfer_bytes` of each infer)}."""
    for k in range(warmup):
        infer(make_obs(k), k)
    samples: dict[str, list] = {}
    transfers: list[dict] = []
    rss_peak = rss_mb()
    t_last = time.monotonic()
    for k in range(iterations):
        obs = make_obs(warmup + k)
        t0 = time.perf_counter()
        out = infer(obs, k)
        samples.setdefault("control_step", []).append((time.perf_counter() - t0) * 1e3)
        for stage, ms in out.get("timings_ms", {}).items():
            if stage != "total":
                samples.setdefault(stage, []).append(ms)
        for ms in out.get("step_ms", ()):
            samples.setdefault("denoise_step", []).append(ms)
        transfers.append(out.get("transfer_bytes") or {"h2d": {}, "d2h": {}})
        if k % 10 == 0:
            rss_peak = max(rss_peak, rss_mb())
        if time.monotonic() - t_last > 5:
            progress(f"  {k + 1}/{iterations} steps")
            t_last = time.monotonic()
    return {"samples": samples, "rss_peak_mb": max(rss_peak, rss_mb()), "transfers": transfers}


TRANSFER_ORDER = ("vision_encoder", "prefill", "denoise", "denoise_step")


def transfer_summary(transfers: list[dict], where: str, noise_bytes: int, steps: int) -> dict:
    """Host<->device bytes per control step by stage (mean over the measured steps; `varies` if they differ).

    `kv_moved` are the bytes of the prefill's K/V that crossed between host and device in a step: everything the
    prefill sent down (its only outputs are the K/V) plus what the denoise stages sent up beyond the noise or the
    per-step x and sigma (`steps * (noise_bytes + 4)`). 0 when the K/V stay where the backend keeps them.
    `where` is the backend's: "host" (host memory is the device: nothing moves) or "device"."""
    n = max(1, len(transfers))
    out: dict = {"where": where, "control_steps": len(transfers), "h2d": {}, "d2h": {}, "varies": False}
    for direction in ("h2d", "d2h"):
        stages = sorted({s for t in transfers for s in t.get(direction, {})},
                        key=lambda s: (TRANSFER_ORDER.index(s) if s in TRANSFER_ORDER else len(TRANSFER_ORDER), s))
        for stage in stages:
            values = [int(t.get(direction, {}).get(stage, 0)) for t in transfers]
            out[direction][stage] = int(round(sum(values) / n))
            out["varies"] |= len(set(values)) > 1
    up_denoise = sum(v for s, v in out["h2d"].items() if s.startswith("denoise"))
    out["kv_moved"] = int(out["d2h"].get("prefill", 0) + max(0, up_denoise - steps * (noise_bytes + 4)))
    out["total_h2d"], out["total_d2h"] = sum(out["h2d"].values()), sum(out["d2h"].values())
    return out


def human_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (decimal units, as the latency tables' MB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_transfers(t: dict) -> str:
    """One line: "host<->device per control step: vision_encoder 1.2 MB up, ...; K/V 0 B"."""
    if not (t["h2d"] or t["d2h"]) and t["where"] == "host":
        return "host<->device per control step: 0 B (host memory is the device: the backend keeps every tensor in host memory)"
    parts = []
    for stage in sorted(set(t["h2d"]) | set(t["d2h"]),
                        key=lambda s: (TRANSFER_ORDER.index(s) if s in TRANSFER_ORDER else len(TRANSFER_ORDER), s)):
        up, down = t["h2d"].get(stage, 0), t["d2h"].get(stage, 0)
        parts.append(f"{stage} " + " / ".join(([f"{human_bytes(up)} up"] if up else []) +
                                               ([f"{human_bytes(down)} down"] if down else [])))
    line = f"host<->device per control step: {', '.join(parts) or '0 B'}; K/V {human_bytes(t['kv_moved'])}"
    return line + (" (mean; differs between steps)" if t["varies"] else "")


def stage_table(samples: dict) -> dict:
    order = [s for s in STAGE_ORDER if s in samples] + sorted(set(samples) - set(STAGE_ORDER))
    return {s: {k: v for k, v in summarize(samples[s]).items() if k in ("p50", "p90", "p99", "mean", "std", "n")}
            for s in order}


def _run(cmd: list[str], timeout: float = 3.0) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip() or None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def temperatures() -> dict:
    """{zone type: degrees C} from /sys/class/thermal (Jetson: CPU-therm, GPU-therm, ...)."""
    out = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        t, kind = _read(str(zone / "temp")), _read(str(zone / "type"))
        if t and t.lstrip("-").isdigit():
            out[kind or zone.name] = int(t) / 1000.0
    return out


def jetson_facts() -> dict | None:
    """L4T/JetPack, TensorRT, nvpmodel, jetson_clocks and a tegrastats line; None when not on a Jetson."""
    release = _read("/etc/nv_tegra_release")
    if release is None and not Path("/sys/firmware/devicetree/base/compatible").exists():
        return None
    model = _read("/proc/device-tree/model")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    trt = None
    try:
        import tensorrt

        trt = tensorrt.__version__
    except Exception:
        trt = _run(["dpkg-query", "-W", "-f=${Version}", "tensorrt"]) or _run(["dpkg-query", "-W", "-f=${Version}", "libnvinfer10"])
    tegra = None
    if shutil.which("tegrastats"):
        try:
            p = subprocess.Popen(["tegrastats", "--interval", "200"], stdout=subprocess.PIPE, text=True)
            tegra = p.stdout.readline().strip()
            p.terminate()
            p.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            tegra = None
    return {"model": model, "l4t": release.splitlines()[0] if release else None,
            "jetpack": _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]), "tensorrt": trt,
            "nvpmodel": _run(["nvpmodel", "-q"]), "jetson_clocks": _run(["jetson_clocks", "--show"]),
            "tegrastats": tegra}


def system_facts(backend=None) -> dict:
    cpu = None
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            cpu = line.split(":", 1)[1].strip()
            break
    facts = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
             "cpu": cpu or platform.processor(), "cpu_count": os.cpu_count(),
             "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
             "load_avg": [round(x, 2) for x in os.getloadavg()], "numpy": np.__version__,
             "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
             "temperatures_c": temperatures(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        import psutil

        facts["memory_total_gb"] = round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        facts["onnxruntime"] = ort.__version__
        facts["onnxruntime_providers"] = getattr(backend, "providers", None) or ort.get_available_providers()
    except ImportError:
        pass
    facts["gpu"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw",
                         "--format=csv,noheader"])
    facts["jetson"] = jetson_facts()
    return facts


def load_bench_policy(args, engines: str | None):
    from .cli_util import torch_device_options

    from .loader import PolicySource, load_policy

    backend = args.backend or ("onnxruntime" if engines else "torch")
    source = PolicySource(engines=engines, checkpoint=None if engines else args.checkpoint, backend=backend,
                          prompt_cache=args.prompt_cache, threads=args.threads if engines else 0,
                          **torch_device_options(args, backend))
    return load_policy(source), backend


def run_bench(args, progress: Callable[[str], None] = lambda s: None) -> dict:
    engines = args.engines
    tmp = None
    if args.compare and not engines:
        import tempfile

        from .bench_reference import check_reference_inputs

        check_reference_inputs(args.checkpoint)  # before the export: the official path needs the text encoder

        from quantize.export import export_checkpoint

        tmp = tempfile.TemporaryDirectory(prefix="imagewam-bench-")
        progress(f"exporting {args.checkpoint} for our path (onnxruntime + prompt cache)")
        engines = export_checkpoint(args.checkpoint, Path(tmp.name) / "engines", instructions=[args.instruction],
                                    progress=progress)["out"]
    try:
        rss0 = rss_mb()
        policy, backend = load_bench_policy(args, engines)
        policy.text(args.instruction)  # prompt-cache miss -> clear error before timing anything
        rss_loaded = rss_mb()
        compare = None
        if args.compare:
            from .bench_reference import compare_reference

            # one measurement of ours: the control steps interleaved with the reference's are the bench's own
            # samples, so the stage table and the comparison show the same p50 (not two runs of the same thing)
            compare, res = compare_reference(args, policy, progress)
        else:
            progress(f"bench: {backend}, {args.warmup} warm-up + {args.iterations} control steps")
            res = measure(lambda obs, k: policy.infer(obs, seed=k),
                          lambda k: synthetic_observation(policy, args.instruction, k), args.iterations, args.warmup,
                          progress)
        stages = stage_table(res["samples"])
        torch_device = {"device": getattr(args, "device", None) or "cpu", "compile": bool(getattr(args, "compile", False))}
        result = {"backend": backend, "torch": torch_device if backend == "torch" else None,
                  "engines": engines if not tmp else None, "checkpoint": args.checkpoint,
                  "iterations": args.iterations, "warmup": args.warmup, "instruction": args.instruction,
                  "spec": policy.spec.to_dict(), "stages": stages,
                  "jitter_ms": jitter(res["samples"]["control_step"]),
                  "memory_mb": {"rss_before_load": round(rss0, 1), "rss_after_load": round(rss_loaded, 1),
                                "rss_peak_during_steps": round(res["rss_peak_mb"], 1),
                                "process_peak": round(peak_rss_mb(), 1)},
                  "samples_ms": {k: [round(x, 4) for x in v] for k, v in res["samples"].items()},
                  "transfer_bytes_per_step": transfer_summary(
                      res["transfers"], getattr(policy.backend, "where", "host"),
                      policy.spec.horizon * policy.spec.action_dim * 4, policy.spec.steps),
                  "system": system_facts(getattr(policy, "backend", None))}
        if compare is not None:
            result["compare"] = compare
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _fmt(d: dict) -> str:
    return "  ".join(f"{k} {d[k]:9.3f}" if isinstance(d.get(k), float) else f"{k} {'-':>9}" for k in ("p50", "p90", "p99", "mean"))


def format_bench(r: dict) -> str:
    s = r["system"]
    torch_device = r.get("torch") or {}
    label = r["backend"]
    if torch_device.get("device", "cpu") != "cpu" or torch_device.get("compile"):
        label += f" ({torch_device['device']}" + (", torch.compile)" if torch_device.get("compile") else ")")
    lines = [f"{label} on {s.get('cpu')} ({s.get('cpu_count')} cores, load {s.get('load_avg')}), "
             f"{r['iterations']} control steps after {r['warmup']} warm-up (ms):"]
    for stage, d in r["stages"].items():
        lines.append(f"  {stage:<15} {_fmt(d)}")
    j, m = r["jitter_ms"], r["memory_mb"]
    lines.append(f"  jitter: std {j['std']} ms, p99-p50 {j['p99_minus_p50']} ms; memory: RSS after load "
                 f"{m['rss_after_load']} MB, peak during steps {m['rss_peak_during_steps']} MB, process peak {m['process_peak']} MB")
    if r.get("transfer_bytes_per_step"):
        lines.append("  " + format_transfers(r["transfer_bytes_per_step"]))
    if s.get("jetson"):
        jf = s["jetson"]
        lines.append(f"  jetson: {jf.get('model')} | {jf.get('l4t')} | JetPack {jf.get('jetpack')} | TensorRT "
                     f"{jf.get('tensorrt')} | {jf.get('nvpmodel')} | temps {s.get('temperatures_c')}")
    c = r.get("compare")
    if c:
        lines.append(f"reference (official way: {c['reference']['how']}): p50 {c['reference']['p50']:.2f} ms, "
                     f"mean {c['reference']['mean']:.2f} ms")
        lines.append(f"ours ({c['ours']['how']}): the control_step above (p50 {c['ours']['p50']:.2f} ms, "
                     f"mean {c['ours']['mean']:.2f} ms; interleaved step by step with the reference)")
        lines.append(f"speed-up (reference p50 / ours p50): {c['ratio_p50']:.2f}x (mean {c['ratio_mean']:.2f}x); "
                     f"actions max |ref - ours| {c['actions_max_abs_diff']:.2e}")
    return "\n".join(lines)


def write_json(result: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def plot(result: dict, png: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(f"--plot needs matplotlib: pip install 'imagewam-edge[plot]' ({exc})") from None
    samples = result["samples_ms"]
    names = [s for s in result["stages"] if s in samples and samples[s]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    axes[0].boxplot([samples[n] for n in names], whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    axes[0].set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    axes[0].set_ylabel("ms")
    axes[0].set_yscale("log")
    axes[0].set_title("per stage (box: p25-p75, whiskers: p1-p99)")
    total = np.asarray(samples["control_step"])
    axes[1].hist(total, bins=40, color="tab:blue")
    for p, ls in ((50, "-"), (90, "--"), (99, ":")):
        axes[1].axvline(np.percentile(total, p), color="k", ls=ls, label=f"p{p} {np.percentile(total, p):.1f} ms")
    axes[1].set_xlabel("control step (ms)")
    axes[1].legend()
    s = result["system"]
    fig.suptitle(f"{result['backend']} | {s.get('cpu')} | {s.get('time')}", fontsize=9)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
