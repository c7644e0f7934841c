"""`imagewam-edge calibrate ...`: board, intrinsics, handeye, extrinsics, verify, capture.

One module per step: HELP, EXAMPLE, its flags (`add_arguments(p)`) apart from its work (`run(args) -> int`). Every
step's parser is made here by edge.cli_util.command with `--json` (one JSON object on stdout instead of the text
report), so it means the same here as on every other subcommand.
Shared helpers: calib.cli.common; the hardware (RealSense, operator prompt, arm): calib.cli.devices.

Imports nothing heavy at module level: OpenCV, matplotlib and drivers are imported inside the steps' `run`.
Exit codes: 0 ok, 1 error (message says what to do), 3 `verify`: the calibration no longer holds.
"""
from __future__ import annotations

from calib.cli import board, capture, extrinsics, handeye, intrinsics, verify
from edge.cli_util import command, group

STEPS = (board, intrinsics, handeye, extrinsics, verify, capture)  # in the help's order


def register(sub) -> None:
    """Add the `calibrate` command group to an argparse subparsers object."""
    _, csub = group(
        sub, "calibrate",
        "camera calibration: printable board, intrinsics, hand-eye, multi-camera extrinsics, verify, capture",
        ["imagewam-edge calibrate board --board charuco:9,6,0.035,0.026,DICT_5X5_100 --out board",
         "imagewam-edge calibrate capture --camera 123456789012 --pose-cmd './my_fk.sh' --out views/",
         "imagewam-edge calibrate intrinsics --images views/ --out intrinsics.yaml",
         "imagewam-edge calibrate handeye --images views/ --intrinsics intrinsics.yaml --mode eye-in-hand --out "
         "handeye.yaml"],
        dest="calibrate_command", metavar="STEP",
        description="Calibrate cameras with a ChArUco board. Typical order: board -> capture -> intrinsics -> "
                    "handeye -> verify (later, on new views).")
    for step in STEPS:  # the module's name is the step's; --json the same as on every subcommand
        name = step.__name__.rsplit(".", 1)[1]
        step.add_arguments(command(csub, name, step.HELP, step.EXAMPLE, step.run, json=True))
