"""`imagewam-edge`: the one console script. Each package registers its own subcommands; heavy imports happen
inside the handlers, so `--help` and the on-device commands never import torch."""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, function) pairs that add subcommands; each parser sets `func(args) -> int` (the exit code).
REGISTRARS = [
    ("edge.commands", "register"),
    ("edge.commands_loop", "register"),
    ("edge.commands_eval", "register"),
    ("edge.commands_deploy", "register"),
    ("edge.serve.commands", "register"),
    ("edge.commands_recording", "register"),
    ("quantize.commands", "register"),
    ("drivers.cli", "register"),
    ("calib.cli", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagewam-edge",
        description="ImageWAM robot policies on NVIDIA Jetson: export and quantize checkpoints, build engines, "
        "calibrate RealSense cameras, run the control loop and measure latency.",
        epilog="Start here: `imagewam-edge run` (no config) runs the embedded default without hardware.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"imagewam-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, fn in REGISTRARS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a package this install leaves out (quantize on a robot): no subcommands
            if exc.name not in (module_name, module_name.split(".")[0]):
                raise
            continue
        getattr(module, fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .cli_util import json_file_hint, run_command, setup_logging

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{json_file_hint(sys.argv[1:] if argv is None else argv, unknown)}")
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
