"""`imagewam-edge`: the one console script. Each package registers its own subcommands; heavy imports happen
inside the handlers, so `--help` and the on-device commands never import torch."""
from __future__ import annotations

import argparse
import importlib
import logging
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
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # typed package errors carry the fix in their message
        if isinstance(exc, _user_errors()) and not args.verbose:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


def _user_errors() -> tuple[type, ...]:
    """Every error a package raises on purpose derives from the one root (drivers and calib too): printed without
    a traceback, the message carries the fix."""
    from .errors import ImageWAMEdgeError

    return (ImageWAMEdgeError,)


if __name__ == "__main__":
    sys.exit(main())
