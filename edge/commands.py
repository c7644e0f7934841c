"""Subcommands of the runtime: `infer` (one control step). Heavy imports happen inside the handlers."""
from __future__ import annotations

import numpy as np

from .cli_util import add_json, add_torch_device_args, command, emit_json, parse_vector, read_image, torch_device_options
from .errors import ConfigError


def register(sub) -> None:
    p = command(sub, "infer", "Run one ImageWAM control step: camera image(s) + instruction + state -> action chunk.",
                "imagewam-edge infer --checkpoint demo --image cam0.png --image cam1.png "
                "--instruction 'pick up the red block' --state 0,0,0,0,0,0,0,0 --json", _infer)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="ImageWAM release directory (model.pt, dataset_stats.json, ...)")
    src.add_argument("--engines", help="engines directory written by `export` (or quantize / build)")
    p.add_argument("--image", action="append", required=True,
                   help="camera image, once per camera slot of the canvas (LIBERO: agentview then wrist)")
    p.add_argument("--instruction", required=True, help="the task in words")
    p.add_argument("--state", required=True, help="robot state, comma-separated (LIBERO: eef pos 3, axis-angle 3, gripper 2)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0: same inputs -> same actions)")
    p.add_argument("--noise", help="initial noise .npy [horizon, action_dim] instead of --seed")
    p.add_argument("--prompt-cache", help="prompt-embedding cache (.npz); hit -> the text encoder is not run")
    p.add_argument("--backend", default=None, choices=["torch", "onnxruntime", "tensorrt"],
                   help="torch with --checkpoint (default), onnxruntime or tensorrt with --engines")
    p.add_argument("--base", help="FLUX.2 klein base release (vae/, text_encoder/, tokenizer/); default CHECKPOINT/base")
    p.add_argument("--steps", type=int, default=10, help="denoising steps (default 10, as the official evaluation)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="torch compute dtype (auto: the checkpoint's own)")
    add_torch_device_args(p, "imagewam-edge infer --checkpoint demo --image a.png --image b.png --instruction 'pick "
                          "up the red block' --state 0,0,0,0,0,0,0,0")
    add_json(p)  # {actions, timings_ms}


def load_policy(args):
    """The policy for --checkpoint (torch) or --engines (onnxruntime / tensorrt), through edge/loader.py."""
    from .loader import PolicySource, load_policy as load

    backend = args.backend or ("torch" if args.checkpoint else "onnxruntime")
    return load(PolicySource(engines=args.engines, checkpoint=args.checkpoint, backend=backend, base=args.base,
                             dtype=args.dtype, prompt_cache=args.prompt_cache, steps=args.steps,
                             **torch_device_options(args, backend)))


def _infer(args) -> int:
    images = [read_image(p) for p in args.image]
    state = parse_vector(args.state)
    noise = None
    if args.noise:
        try:
            noise = np.load(args.noise, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ConfigError(f"--noise {args.noise}: not a readable .npy file ({exc}); save it with "
                              "numpy.save(FILE, array) as [horizon, action_dim] float32") from None
        if not isinstance(noise, np.ndarray):
            noise.close()
            raise ConfigError(f"--noise {args.noise} is an .npz archive; pass one .npy array [horizon, action_dim] "
                              "(numpy.save, not numpy.savez)")
    policy = load_policy(args)
    horizon, dim = policy.spec.horizon, policy.spec.action_dim
    if noise is not None and noise.size != horizon * dim:
        raise ConfigError(f"--noise {args.noise} has shape {noise.shape}; the model needs [{horizon}, {dim}]")
    out = policy.infer({"images": images, "state": state, "instruction": args.instruction}, noise=noise, seed=args.seed)
    timings = {k: round(v, 3) for k, v in out["timings_ms"].items()}
    if args.json:
        emit_json({"actions": out["actions"].tolist(), "timings_ms": timings})
        return 0
    print(f"action chunk ({horizon} x {dim}, un-normalised, {policy.spec.embodiment} post-processing):")
    for i, row in enumerate(out["actions"]):
        print(f"  {i:2d}  " + "  ".join(f"{v:+.4f}" for v in row))
    print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return 0
