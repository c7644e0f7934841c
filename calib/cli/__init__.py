"""`imagewam-edge calibrate ...`: board, intrinsics, handeye, extrinsics, verify, capture.

One module per step, each with its parser (`add_parser`) apart from its work (`run(args) -> int`); `--json` (one
JSON object on stdout instead of the text report) is added to every step here, so it means the same everywhere.
Shared helpers: calib.cli.common; the hardware (RealSense, operator prompt, arm): calib.cli.devices.

Imports nothing heavy at module level: OpenCV, matplotlib and drivers are imported inside the steps' `run`.
Exit codes: 0 ok, 1 error (message says what to do), 3 `verify`: the calibration no longer holds.
"""
from __future__ import annotations

import argparse

from calib.cli import board, capture, extrinsics, handeye, intrinsics, verify
from calib.cli.common import JSON_HELP

STEPS = (board, intrinsics, handeye, extrinsics, verify, capture)  # in the help's order


def register(sub) -> None:
    """Add the `calibrate` command group to an argparse subparsers object."""
    cal = sub.add_parser(
        "calibrate",
        help="camera calibration: printable board, intrinsics, hand-eye, multi-camera extrinsics, verify, capture",
        description="Calibrate cameras with a ChArUco board. Typical order: board -> capture -> intrinsics -> "
        "handeye -> verify (later, on new views).",
        epilog="example:\n  imagewam-edge calibrate board --board charuco:9,6,0.035,0.026,DICT_5X5_100 --out board\n"
        "  imagewam-edge calibrate capture --camera 123456789012 --pose-cmd './my_fk.sh' --out views/\n"
        "  imagewam-edge calibrate intrinsics --images views/ --out intrinsics.yaml\n"
        "  imagewam-edge calibrate handeye --images views/ --intrinsics intrinsics.yaml --mode eye-in-hand --out handeye.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cal.set_defaults(func=lambda args: (cal.print_help(), 2)[1])
    csub = cal.add_subparsers(dest="calibrate_command", metavar="STEP")
    for step in STEPS:
        step.add_parser(csub).add_argument("--json", action="store_true", help=JSON_HELP)  # the same everywhere
