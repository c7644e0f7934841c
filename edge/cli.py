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
    ("edge.recording_cli", "register"),
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


# Each package has its own error base (drivers and calib know nothing of edge); all print without a traceback.
USER_ERRORS = [("edge.errors", "ImageWAMEdgeError"), ("drivers.errors", "DriverError"), ("calib.errors", "CalibrationError")]


def _user_errors() -> tuple[type, ...]:
    found = []
    for module_name, cls in USER_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module_name), cls))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


if __name__ == "__main__":
    sys.exit(main())
