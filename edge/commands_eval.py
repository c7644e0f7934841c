"""Subcommand `eval`: closed-loop success rate and episode length on the toy task (edge/task), through the real
control loop with the task camera and a simulated arm controller. Heavy imports happen inside the handler."""
from __future__ import annotations

import sys

from .cli_util import add_json, add_torch_device_args, command, output, torch_device_options
from .errors import ConfigError


def register(sub) -> None:
    p = command(sub, "eval", "Closed-loop evaluation on the toy reaching task: success rate and mean episode length "
                "through the real control loop (task camera, simulated Dynamixel controller on a pty, the embedded "
                "default's rates and limits), N seeded episodes on one setup.",
                "imagewam-edge eval --checkpoint edge/assets/toy_checkpoint --episodes 100 --report eval.json    |    "
                "imagewam-edge eval --engines engines/int8 --episodes 100    |    imagewam-edge eval --expert "
                "--episodes 20", _eval)
    p.add_argument("--checkpoint", help="release directory (exported to ONNX in a temporary directory first, or run "
                   "in PyTorch with --backend torch)")
    p.add_argument("--engines", help="exported or quantized engines directory (its prompt cache must hold the task's "
                   "instructions: export with --instruction 'move to the red block' ... green ... blue)")
    p.add_argument("--expert", action="store_true", help="evaluate the scripted expert (the task's upper bound)")
    p.add_argument("--episodes", type=int, default=20, help="seeded episodes (default 20)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed .. seed+N-1; default 0)")
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "torch"], default=None,
                   help="default: onnxruntime (--engines, or --checkpoint after export)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--kinematic", action="store_true", help="no real time: the arm reaches every target exactly "
                   "(deterministic, fast); the control loop is not used")
    p.add_argument("--record", help="record every episode's observations into this directory (the format "
                   "`quantize --calibration` reads)")
    p.add_argument("--report", metavar="FILE", help="write the summary with per-episode rows as JSON to FILE")
    add_json(p)
    p.add_argument("--quiet", action="store_true", help="no per-episode progress on stderr")
    add_torch_device_args(p, "imagewam-edge eval --checkpoint edge/assets/toy_checkpoint --backend torch --episodes 20")


def load_eval_policy(checkpoint=None, engines=None, backend=None, threads: int = 0, workdir=None,
                     progress=lambda s: None, device: str = "cpu", compile: bool = False):
    """A policy for the task from engines, or from a checkpoint (exported to `workdir`, or PyTorch on `device`)."""
    from .loader import PolicySource, load_policy
    from .task.world import instructions

    if engines:
        return load_policy(PolicySource(engines=engines, backend=backend or "onnxruntime", threads=threads))
    if backend == "torch":
        return load_policy(PolicySource(checkpoint=checkpoint, backend="torch", device=device, compile=compile))
    from .errors import require

    require("torch", "export")
    from quantize.export import export_checkpoint

    progress(f"exporting {checkpoint} to ONNX in {workdir}")
    export_checkpoint(checkpoint, workdir, instructions=instructions(), progress=lambda s: progress("  " + s))
    return load_policy(PolicySource(engines=str(workdir), backend=backend or "onnxruntime", threads=threads))


def _eval(args) -> int:
    import tempfile
    from pathlib import Path

    from .task.evaluate import evaluate, evaluate_kinematic, format_eval

    chosen = [bool(args.checkpoint), bool(args.engines), bool(args.expert)]
    if sum(chosen) != 1:
        raise ConfigError("eval needs exactly one of --checkpoint DIR, --engines DIR or --expert")
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.record and args.kinematic:
        raise ConfigError("--record needs the control loop; drop --kinematic")
    progress = (lambda s: None) if args.quiet or args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="imagewam-eval-") as tmp:
        policy = None
        if not args.expert:
            policy = load_eval_policy(args.checkpoint, args.engines, args.backend, args.threads,
                                      Path(tmp) / "engines", progress,
                                      **torch_device_options(args, args.backend or "onnxruntime"))
        if args.kinematic:
            summary = evaluate_kinematic(policy, args.episodes, args.seed, progress=progress)
        else:
            summary = evaluate(policy, args.episodes, args.seed, fault_dir=str(Path(tmp) / "faults"), record=args.record,
                               progress=progress)
    label = "expert" if args.expert else (args.engines or args.checkpoint)
    summary["policy"] = label
    output(args, summary, lambda: format_eval(summary, label))
    return 0
