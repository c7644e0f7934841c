"""`calibrate capture`: save board views and the robot pose of each, from a live camera and arm (or a pose command,
or the operator) or from a simulated rig (--sim, no hardware)."""
from __future__ import annotations

import argparse

from calib.cli.common import DEFAULT_BOARD, SPEC_HELP, board_spec, emit

HELP = "interactive capture of board views and robot poses (live camera + arm, or --sim)"
EXAMPLE = ("imagewam-edge calibrate capture --camera 123456789012 --pose-cmd './print_T_base_gripper.sh' "
           "--board charuco:9,6,0.035,0.026,DICT_5X5_100 --out views/\n"
           "  imagewam-edge calibrate capture --sim --mode eye-to-hand --out /tmp/sim_views  # no hardware")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="new directory for view_NNN.png, poses.json, session.yaml")
    p.add_argument("--board", default=DEFAULT_BOARD, help=SPEC_HELP)
    p.add_argument("--camera", metavar="SERIAL", help="RealSense serial (live colour stream)")
    p.add_argument("--width", type=int, default=640, help="stream width (default 640)")
    p.add_argument("--height", type=int, default=480, help="stream height (default 480)")
    p.add_argument("--sim", action="store_true", help="simulated camera and arm viewing a synthetic board")
    p.add_argument("--mode", default="eye-in-hand", choices=["eye-in-hand", "eye-to-hand"], help="--sim scene layout")
    p.add_argument("--seed", type=int, default=0, help="--sim random seed")
    p.add_argument("--pose-source", choices=["arm", "cmd", "prompt", "none"],
                   help="where T_base_gripper comes from (default: cmd with --pose-cmd, arm with --arm, sim with --sim, "
                   "else prompt); none = intrinsics-only capture")
    p.add_argument("--pose-cmd", help="command printing T_base_gripper (16 numbers, or x y z rx ry rz)")
    p.add_argument("--arm", help="arm config YAML for drivers.arm (arms that report their gripper pose)")
    p.add_argument("--n-views", type=int, default=20, help="stop after this many saved views (default 20)")


def run(args) -> int:
    from calib.capture import SimBoardRig, run_capture
    from calib.cli.devices import say

    spec = board_spec(args.board)
    source = args.pose_source or ("cmd" if args.pose_cmd else "arm" if args.arm else None)
    closers = []
    try:
        if args.sim:
            rig = SimBoardRig(spec, n=args.n_views, mode=args.mode, seed=args.seed)
            frames, poses, wait = rig, (None if source == "none" else rig), rig.advance
        else:
            frames, poses, wait = open_live(args, source or "prompt", closers)
        quiet = args.json and args.sim  # --json: no progress; a live capture still talks to its operator
        res = run_capture(frames, poses, args.out, spec, wait_for_operator=wait, n_views=args.n_views,
                          serial=args.camera, say=(lambda m: None) if quiet else say)
    finally:
        for close in reversed(closers):
            close()
    summary = {"out": str(res.out_dir), "saved": res.saved, "skipped": res.skipped}
    text = (f"saved {len(res.saved)} views to {res.out_dir} ({len(res.skipped)} skipped)"
            + ("; poses in poses.json" if poses else ""))
    emit(args, summary, text)
    return 0


def open_live(args, source: str, closers: list):
    """(frames, poses, wait) from the hardware; what was opened is added to `closers`."""
    from calib.capture import ArmPoseSource, CommandPoseSource, PromptPoseSource
    from calib.cli.devices import enter_prompt, open_arm, open_realsense
    from calib.errors import InputFileError

    if not args.camera:
        raise InputFileError("pass --camera SERIAL (a RealSense) or --sim")
    if source == "cmd" and not args.pose_cmd:
        raise InputFileError("--pose-source cmd needs --pose-cmd 'COMMAND'")
    frames = open_realsense(args.camera, args.width, args.height)
    closers.append(frames.disconnect)
    if source == "cmd":
        poses = CommandPoseSource(args.pose_cmd)
    elif source == "arm":
        arm = open_arm(args.arm)
        closers.append(getattr(arm, "disconnect", lambda: None))
        poses = ArmPoseSource(arm)
    else:
        poses = PromptPoseSource() if source == "prompt" else None
    return frames, poses, enter_prompt
