"""Subcommand `serve`: the policy inside Triton Inference Server (PyTriton), for robots that run the control loop
with `policy.backend: remote`. It runs in the serving environment (numpy < 2): created with `--install-env`, then
`serve` re-executes itself there (the same process id: Ctrl-C and SIGTERM reach the server directly)."""
from __future__ import annotations

import os
import sys

from ..cli_util import command, emit_json

EXAMPLE = ("imagewam-edge serve --install-env    (once, ~1 minute)\n"
           "  imagewam-edge serve --engines @default              (terminal 1: the embedded default's policy)\n"
           "  imagewam-edge run --config edge/configs/remote.yaml (terminal 2: the loop, policy.backend: remote)\n"
           "  imagewam-edge serve --engines engines/ --host 0.0.0.0 --instances 2   (a GPU server for a fleet)")


def register(sub) -> None:
    from .main import add_server_args

    p = command(sub, "serve", "Serve the policy with Triton Inference Server (gRPC, health/readiness at "
                "/v2/health/ready, several robots queued or computed by --instances); robots run the loop with "
                "`policy.backend: remote` (url, timeout_s). Runs in its own environment (nvidia-pytriton pins "
                "numpy < 2): create it once with --install-env. Ctrl-C / SIGTERM stop it.", EXAMPLE, _serve)
    add_server_args(p)
    p.add_argument("--install-env", action="store_true", help="create the serving environment (then serve if "
                   "--engines or --checkpoint is given); its path: $IMAGEWAM_SERVE_ENV or "
                   "~/.cache/imagewam-edge/serve-env")
    p.add_argument("--env-info", action="store_true", help="print the serving environment's path and state (JSON)")
    p.add_argument("--model-repository", metavar="DIR", help="write a Triton model repository for a stock Triton "
                   "container (Python backend over --engines) into DIR instead of serving")


def _progress(msg: str) -> None:
    sys.stderr.write(f"[serve] {msg}\n")
    sys.stderr.flush()


def _serve(args) -> int:
    from . import env
    from .main import config_from_args, server_argv

    if args.env_info:
        emit_json(env.describe())
        return 0
    if args.install_env:
        env.install_env(progress=_progress)
        if not (args.engines or args.checkpoint):
            return 0
    if args.engines == "@default":  # built here (first use needs torch, which the serving environment lacks)
        from ..default import ensure_default_engines

        args.engines = str(ensure_default_engines(progress=_progress))
    cfg = config_from_args(args)  # validated here: a wrong flag fails before anything starts
    if args.model_repository:
        from .model_repo import write_model_repository

        out = write_model_repository(cfg, args.model_repository)
        _progress(f"model repository written to {out}; serve it with a stock Triton container, see "
                  f"{out}/README.md")
        return 0
    if _runs_here():
        from .main import main

        return main(server_argv(args))
    argv, environ = env.server_command(server_argv(args))
    _progress(f"starting the server in the serving environment ({argv[0]})")
    sys.stdout.flush()
    os.execve(argv[0], argv, environ)
    return 1  # not reached


def _runs_here() -> bool:
    """This interpreter can serve itself (nvidia-pytriton importable, numpy < 2)."""
    import importlib.util

    import numpy as np

    return int(np.__version__.split(".")[0]) < 2 and importlib.util.find_spec("pytriton") is not None
