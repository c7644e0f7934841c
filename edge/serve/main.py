"""The server process: `python -m edge.serve.main ARGS` in the serving environment (`imagewam-edge serve` starts it
there). The arguments are the `serve` subcommand's server arguments."""
from __future__ import annotations

import argparse
import sys

from .server import ServeConfig


def add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", help="exported engines directory (onnxruntime / tensorrt); @default: the embedded "
                   "default's (built on first use)")
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "torch"], default="onnxruntime",
                   help="how the server runs the policy (default onnxruntime)")
    p.add_argument("--checkpoint", help="release directory (--backend torch; needs torch in the serving environment)")
    p.add_argument("--device", default="cpu", help="--backend torch: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 serves robots on the network)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, the robots' (default 8001)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port: health /v2/health/ready (default 8000)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--instances", type=int, default=1, help="model instances: policies in memory, control steps "
                   "computed at the same time for several robots (default 1; more robots queue)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads per instance (0: default)")
    p.add_argument("--prompt-cache", help="prompt-embedding cache (.npz); default ENGINES/prompts.npz")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the engines')")
    p.add_argument("--log-file", help="Triton's own log goes here (default: this terminal)")


def config_from_args(args) -> ServeConfig:
    return ServeConfig(engines=args.engines, backend=args.backend, checkpoint=args.checkpoint, device=args.device,
                       host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                       metrics_port=args.metrics_port, instances=args.instances, threads=args.threads,
                       prompt_cache=args.prompt_cache, steps=args.steps, log_file=args.log_file)


def server_argv(args) -> list[str]:
    """The parsed server arguments back as a command line (for the process in the serving environment)."""
    out = []
    for name in ("engines", "backend", "checkpoint", "device", "host", "grpc_port", "http_port", "metrics_port",
                 "instances", "threads", "prompt_cache", "steps", "log_file"):
        v = getattr(args, name, None)
        if v is not None:
            out += ["--" + name.replace("_", "-"), str(v)]
    return out


def main(argv: list[str] | None = None) -> int:
    from ..cli_util import run_command, setup_logging

    p = argparse.ArgumentParser(prog="python -m edge.serve.main", description=__doc__)
    add_server_args(p)
    args = p.parse_args(argv)
    setup_logging()
    return run_command(_serve, args)


def _serve(args) -> int:
    from .server import serve

    def progress(msg: str) -> None:
        sys.stderr.write(f"[serve] {msg}\n")
        sys.stderr.flush()

    summary = serve(config_from_args(args), progress)
    progress(f"stopped: {summary['served']} control step(s) served")
    return 0


if __name__ == "__main__":
    sys.exit(main())
