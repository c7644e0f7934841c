"""Subcommands `run` (the control loop; without --config the embedded default) and `bench` (latency: per stage,
against the official reference path, or a roofline model only). Heavy imports happen inside the handlers."""
from __future__ import annotations

import sys

from .cli_util import add_config, add_json, add_torch_device_args, command, emit_json, output
from .errors import ConfigError


def register(sub) -> None:
    from .model_variants import roofline_names

    p = command(sub, "run", "Run the robot: cameras -> policy -> action chunks -> joint commands over serial. Without "
                "--config: the embedded default (simulated camera and arm controller, tiny demo model, CPU). "
                "Ctrl-C, SIGTERM (systemd, docker stop) and SIGHUP stop it safely, also during set-up: the "
                "configured torque on every servo, the summary written, exit code 0; exit code 1 after a fault "
                "(bus stale longer than fault.max_stale_s, a port gone, a command out of range, ...), with the "
                "last seconds of states and commands dumped to fault.dump_dir.",
                "imagewam-edge run --seconds 20 --summary run.json    |    imagewam-edge run --config edge/configs/"
                "libero_dynamixel_2rs.yaml --record rec/", _run)
    add_config(p, note="; default: the embedded default")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this long (default: 20 for the embedded default, until Ctrl-C with --config)")
    p.add_argument("--summary", "--report", dest="summary", metavar="FILE", help="write the summary as JSON here (steps, chunks, commands_sent, overruns, "
                   "latency_ms, camera_to_serial_ms)")
    p.add_argument("--record", help="record observations, instruction, actions sent and timings into this directory "
                   "(the format `quantize --calibration` reads)")
    p.add_argument("--instruction", help="override the config's instruction (must be in the prompt cache)")
    add_json(p)  # the summary
    add_torch_device_args(p, "imagewam-edge run --config robot.yaml", default=None,
                          note=" (for a config with policy.backend: torch or policy.fallback: torch; overrides "
                          "policy.device / policy.compile)")

    b = command(sub, "bench", "Measure latency: per stage (warm-up, p50/p90/p99, jitter, peak memory, system facts), "
                "against the official reference path (--compare reference), or a roofline model (--model-only).",
                "imagewam-edge bench --engines engines/ --iterations 200 --report bench.json --plot bench.png    |    "
                "imagewam-edge bench --checkpoint demo --compare reference    |    imagewam-edge bench --model-only "
                "--variant flux2-4b --target orin-agx-64gb --precision int8", _bench)
    b.add_argument("--engines", help="engines directory written by `export` (onnxruntime) or `build` (tensorrt)")
    b.add_argument("--checkpoint", help="release directory (torch backend; with --compare reference: the "
                     "checkpoint both paths run, exported to a temporary directory for ours)")
    b.add_argument("--backend", choices=["onnxruntime", "tensorrt", "torch"], default=None,
                   help="default: onnxruntime with --engines, torch with --checkpoint")
    b.add_argument("--iterations", type=int, default=100, help="measured control steps (default 100)")
    b.add_argument("--warmup", type=int, default=5, help="control steps run before measuring (default 5)")
    b.add_argument("--instruction", default="pick up the red block", help="must be in the prompt cache for --engines")
    b.add_argument("--prompt-cache", help="prompt-embedding cache (.npz); default ENGINES/prompts.npz")
    b.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    b.add_argument("--report", metavar="FILE", help="write the results as JSON to FILE (stages, system, ...)")
    add_json(b)
    b.add_argument("--plot", metavar="PNG", help="write a plot of the latency distribution per stage (matplotlib)")
    b.add_argument("--compare", choices=["reference"], help="also time the official way (PyTorch eager, text "
                   "re-encoded every step, 512-token padded text) on the same checkpoint; needs --checkpoint")
    b.add_argument("--model-only", action="store_true", help="no model run: FLOPs, bytes and a roofline latency "
                   "bound per component for --variant on --target at --precision, and a video-WAM baseline")
    b.add_argument("--variant", default="flux2-4b", help=f"--model-only: {', '.join(roofline_names())} (or all)")
    b.add_argument("--target", default="orin-agx-64gb",
                   help="--model-only: orin-agx-64gb, orin-agx-32gb, orin-nx-16gb, orin-nano-8gb, thor (or all)")
    b.add_argument("--precision", default="int8", help="--model-only: fp16, int8, fp8 (or all)")
    b.add_argument("--text-tokens", type=int, default=None, help="--model-only: valid text tokens (default 44: the "
                   "prompt template + a short instruction); the reference path pads to 512")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_torch_device_args(b, "imagewam-edge bench --checkpoint demo --iterations 50")


def _progress(quiet: bool = False):
    return (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))


def _run(args) -> int:
    from . import config as cfgmod
    from .runtime import run_config, write_summary

    progress = _progress(args.json)
    if args.config:
        cfg = cfgmod.from_yaml(args.config)
        seconds = args.seconds
    else:
        from .default import DEFAULT_CONFIG

        cfg = cfgmod.from_yaml(DEFAULT_CONFIG)
        seconds = 20.0 if args.seconds is None else args.seconds
        progress("embedded default: the tiny ImageWAM trained on the toy reaching task, onnxruntime (CPU), the task "
                 "camera, a simulated Dynamixel controller in its own process")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    if args.instruction:
        from dataclasses import replace

        cfg = replace(cfg, instruction=args.instruction)
    if args.device is not None or args.compile:
        cfg = _torch_overrides(cfg, args.device, args.compile)
    summary = run_config(cfg, seconds=seconds, record=args.record, progress=progress, ignore_signals_after=True)
    if args.summary:
        write_summary(summary, args.summary)
    try:
        if args.json:
            emit_json(summary)
        else:
            print(format_summary(summary))
    except OSError:  # SIGHUP: the terminal is gone; the --summary file holds it
        pass
    return 1 if summary.get("fault") else 0


def _torch_overrides(cfg, device: str | None, compile_: bool):
    """`run --device/--compile`: the config's torch backend (or torch fallback) on that device / compiled."""
    import re
    from dataclasses import replace

    from .config import TORCH_DEVICE

    pcfg = cfg.policy
    if pcfg.backend != "torch" and not pcfg.fallback:
        raise ConfigError(f"--device/--compile apply to the torch backend, but {cfg.source} runs policy.backend "
                          f"{pcfg.backend} without a fallback; set `policy.backend: torch` (with `policy.checkpoint`) "
                          "or `policy.fallback: torch` in the config")
    if device is not None and not re.fullmatch(TORCH_DEVICE, device):
        raise ConfigError(f"--device {device!r}: use cpu, cuda or cuda:N (e.g. --device cuda)")
    return replace(cfg, policy=replace(pcfg, device=device or pcfg.device, compile=compile_ or pcfg.compile))


def format_summary(s: dict) -> str:
    if s.get("during") == "setup":
        return (f"stopped by {s['stopped_by']} during set-up (nothing ran); torque: "
                f"{_torque_line(s.get('torque') or {}) or 'never enabled'}")

    def pct(d):
        return "p50 {p50} p90 {p90} p99 {p99} ms".format(**{k: ("-" if d.get(k) is None else f"{d[k]:.2f}")
                                                          for k in ("p50", "p90", "p99")})

    lines = [f"{s['duration_s']:.1f} s at {s['control_hz']:g} Hz (achieved {s['achieved_hz']:.1f} Hz): steps {s['steps']}, "
             f"chunks {s['chunks']}, commands_sent {s['commands_sent']}, overruns {s['overruns']}, "
             f"hold_ticks {s['hold_ticks']}, camera stalls {s['camera_stalls']}, arm travel {s['arm_travel_max']:.3f} rad",
             f"camera -> serial  {pct(s['camera_to_serial_ms'])}"]
    order = ["inference", "vision_encoder", "prefill", "denoise", "denoise_step", "preprocess", "postprocess",
             "frame_to_chunk", "chunk_latency", "tick", "overhead", "read_state", "serial_write", "write_lateness",
             "tick_lateness"]
    lat = s["latency_ms"]
    for k in order + sorted(set(lat) - set(order)):
        if k in lat:
            lines.append(f"  {k:<16} {pct(lat[k])}")
    t = s.get("task")
    if t and t.get("instruction"):  # the toy task's camera (edge/task): did the arm do what it was told?
        lines.append(f"task: {t['instruction']!r}: " + (f"SUCCESS after {t['seconds']:.2f} s" if t["success"] else
                     f"not reached (end effector {t['distance']} from the goal block, success radius "
                     f"{t['success_radius']} held {t['hold_s']} s)"))
    c = s.get("cadence") or {}
    if c:
        lines.append(f"cadence: {c['achieved_hz']:.1f} of {c['target_hz']:g} Hz, {c['ticks_over_budget']} ticks over "
                     f"budget; write lateness mean {_ms(c['write_lateness']['mean'])} p99 "
                     f"{_ms(c['write_lateness']['p99'])} worst {_ms(c['write_lateness']['worst'])}")
    for b in s.get("bus") or ():
        lines.append(f"bus {b['protocol']} {b['port']}: {b['transactions']} reads, lost {b['lost']}, corrupt "
                     f"{b['corrupt']}, late {b['late']}, retried {b['retried']}, longest miss run "
                     f"{b['longest_miss_run']}; clipped commands {b['clipped']['commands']}")
    st = s.get("staleness_ms") or {}
    if st.get("n"):
        lines.append(f"state staleness p50 {_ms(st['p50'])} p99 {_ms(st['p99'])} max {_ms(st['max'])}")
    if s.get("torque"):
        lines.append(f"torque at stop ({s.get('torque_mode')}): {_torque_line(s['torque'])}")
    if s.get("fault"):
        lines.append(f"FAULT: {s['fault']} (states and commands dumped to {s.get('dump')})")
    else:
        lines.append(f"stopped by {s['stopped_by']}")
    return "\n".join(lines)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def _torque_line(torque: dict) -> str:
    """{port: {id: state}} -> "/dev/ttyUSB0: 1 off, 2 off; ..." (unconfirmed ids spelled out)."""
    return "; ".join(f"{port}: " + ", ".join(f"{i} {v}" for i, v in ids.items()) for port, ids in torque.items())


def _bench(args) -> int:
    progress = _progress(args.quiet or args.json)
    if args.model_only:
        from .roofline import format_table, model_only

        result = model_only(args.variant, args.target, args.precision, text_tokens=args.text_tokens)
        output(args, result, lambda: format_table(result))
        return 0
    if args.compare and not args.checkpoint:
        raise ConfigError("--compare reference needs --checkpoint DIR (the reference runs it in PyTorch); add --engines "
                          "DIR for our path, else the checkpoint is exported to a temporary directory first")
    if not args.compare and bool(args.engines) == bool(args.checkpoint):
        raise ConfigError("bench needs exactly one of --engines DIR or --checkpoint DIR (or --model-only)")
    if args.iterations < 1 or args.warmup < 0:
        raise ConfigError("--iterations must be >= 1 and --warmup >= 0")
    from .bench import format_bench, run_bench

    result = run_bench(args, progress)
    output(args, result, lambda: format_bench(result))
    if args.plot:
        from .bench import plot

        plot(result, args.plot)
        progress(f"plot written to {args.plot}")
    return 0
