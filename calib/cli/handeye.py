"""`calibrate handeye`: the camera's pose on the gripper (eye-in-hand) or in the robot base (eye-to-hand) from board
views and the robot poses they were taken at."""
from __future__ import annotations

import argparse

import logging
from pathlib import Path

from calib.cli.common import SPEC_HELP, board_spec, emit, fmt_T, out_path, require_dirs

log = logging.getLogger(__name__)

HELP = "hand-eye calibration: camera on the gripper (eye-in-hand) or fixed (eye-to-hand)"
EXAMPLE = ("imagewam-edge calibrate handeye --images views/ --poses views/poses.json --intrinsics intrinsics.yaml "
           "--board charuco:9,6,0.035,0.026,DICT_5X5_100 --mode eye-in-hand --out handeye.yaml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, help="directory of board images")
    p.add_argument("--poses", help="JSON/YAML list of {image, T_base_gripper 4x4 row-major, metres} "
                   "(default DIR/poses.json)")
    p.add_argument("--intrinsics", required=True, help="intrinsics YAML of this camera")
    p.add_argument("--board", help=SPEC_HELP)
    p.add_argument("--mode", required=True, choices=["eye-in-hand", "eye-to-hand"],
                   help="eye-in-hand: camera on the gripper, board fixed; eye-to-hand: camera fixed, board on the gripper")
    p.add_argument("--out", help="output YAML (default: $IMAGEWAM_CALIB_DIR/<serial>/handeye.yaml)")
    p.add_argument("--keep-outliers", action="store_true", help="do not drop outlier views")


def run(args) -> int:
    from calib.dataset import detect_dir, read_poses, read_session
    from calib.geometry import T_to_list
    from calib.handeye import board_poses, solve_handeye
    from calib.store import HandEye, load_intrinsics, save_handeye

    require_dirs(args.images)
    session = read_session(args.images)
    intr = load_intrinsics(args.intrinsics)
    spec = board_spec(args.board, intr.board, session.get("board"))
    poses_path = args.poses or str(Path(args.images) / "poses.json")
    robot = read_poses(poses_path)
    views = detect_dir(args.images, spec)
    # refuse intrinsics of another camera or resolution
    load_intrinsics(args.intrinsics, expect_size=views.size,
                    expect_serial=session.get("serial") if intr.serial and session.get("serial") else None)
    missing = [n for n in views.usable if n not in robot]
    if missing:
        log.warning("%d images have no pose in %s (ignored): %s", len(missing), poses_path, ", ".join(missing[:5]))
    cam_poses, pnp_rms, rejected = board_poses({n: views.detections[n] for n in views.usable}, spec, intr.K,
                                               intr.dist_array)
    rejected = {**views.rejected, **rejected}
    res = solve_handeye(robot, cam_poses, args.mode, spec, reject_outliers=not args.keep_outliers,
                        source=str(args.images))
    for n, v in res.per_view.items():  # the per-view board pose the solution was computed from
        v.update(pnp_rms_px=round(pnp_rms[n], 4), T_camera_board=T_to_list(cam_poses[n], 6))
    he = HandEye(
        args.mode, res.T, intr.serial, str(spec), res.method, res.residuals,
        extra={
            "intrinsics_file": str(args.intrinsics),
            "T_base_board" if args.mode == "eye-in-hand" else "T_gripper_board": T_to_list(res.T_fixed_board),
            "methods": res.methods, "per_view": res.per_view, "outlier_views": res.outliers,
            "rejected_views": rejected,
        },
    )
    out = out_path(args.out, intr.serial, "handeye")
    save_handeye(out, he)
    emit(args, {"out": str(out), **he.to_dict()}, report(args.mode, he, res, rejected, out))
    return 0


def report(mode: str, he, res, rejected: dict, out: Path) -> str:
    """The text report of a hand-eye calibration."""
    r = res.residuals
    lines = [
        f"hand-eye ({mode}) from {r['n_views']} views: {he.key} by {res.method} (most consistent)",
        fmt_T(res.T),
        f"  residuals: rms {r['rms_mm']:.3f} mm (max {r['max_mm']:.3f}), rms {r['rms_deg']:.4f} deg (max {r['max_deg']:.4f}); "
        f"methods agree within {r['methods_spread_mm']:.3f} mm / {r['methods_spread_deg']:.4f} deg",
        "  methods (rms mm / deg): " + ", ".join(f"{m} {v['rms_mm']:.3f}/{v['rms_deg']:.4f}" for m, v in res.methods.items()),
    ]
    if res.outliers:
        lines.append("  outlier views (dropped): " + "; ".join(f"{n}: {w}" for n, w in res.outliers.items()))
    if rejected:
        lines.append("  rejected views: " + "; ".join(f"{n}: {w}" for n, w in rejected.items()))
    lines.append(f"wrote {out}")
    return "\n".join(lines)
