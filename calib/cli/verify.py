"""`calibrate verify`: does a calibration still hold on new views? Intrinsics (and hand-eye with --handeye) of one
camera, or multi-camera extrinsics with --extrinsics. Exit 3 when it no longer holds."""
from __future__ import annotations

import argparse

from pathlib import Path

from calib.cli.common import SPEC_HELP, emit, require_dirs

EXIT_DOES_NOT_HOLD = 3
HELP = "check a calibration on new views; exit 3 when it no longer holds"
EXAMPLE = ("imagewam-edge calibrate verify --images new_views/ --intrinsics intrinsics.yaml "
           "--handeye handeye.yaml --poses new_views/poses.json")
EXTRINSICS_MAX_MM, EXTRINSICS_MAX_DEG = 2.0, 0.3  # defaults of --max-mm / --max-deg for --extrinsics


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", required=True, help="new board images (one dir per camera with --extrinsics)")
    p.add_argument("--intrinsics", nargs="+", required=True, help="intrinsics YAML (one per --images dir)")
    p.add_argument("--handeye", help="hand-eye YAML to check too (needs --poses)")
    p.add_argument("--poses", help="robot poses of the new views (default DIR/poses.json)")
    p.add_argument("--extrinsics", help="multi-camera extrinsics YAML to check (needs one --images dir per camera)")
    p.add_argument("--board", help=SPEC_HELP)
    p.add_argument("--max-rms", type=float, default=1.0, help="max median reprojection RMS in px (default 1.0)")
    p.add_argument("--max-drift", type=float, default=1.0,
                   help="max mean px between the stored lens model and a fresh fit on the new views (default 1.0)")
    p.add_argument("--max-mm", type=float, help="max median hand-eye / extrinsics residual, mm "
                   "(default max(2, 3x the calibration's rms))")
    p.add_argument("--max-deg", type=float, help="max median hand-eye / extrinsics residual, deg "
                   "(default max(0.3, 3x the calibration's rms))")


def run(args) -> int:
    summary, text = verify_extrinsics(args) if args.extrinsics else verify_camera(args)
    holds = summary["holds"]
    verdict = "calibration HOLDS" if holds else "calibration does NOT hold: recalibrate (or check focus/mounting)"
    emit(args, summary, verdict + "\n" + text)
    return 0 if holds else EXIT_DOES_NOT_HOLD


def verify_extrinsics(args) -> tuple[dict, str]:
    from calib.cli.multicam import poses_by_camera
    from calib.errors import InputFileError
    from calib.extrinsics import check_extrinsics
    from calib.store import load_extrinsics

    _, poses, serials = poses_by_camera(args.images, args.intrinsics, args.board)
    ex = load_extrinsics(args.extrinsics, expect_serials=serials)
    res = check_extrinsics(poses, ex.T_ref_cam, ex.reference)
    if not res:
        raise InputFileError("no view shows the board in the reference camera and another camera at once")
    max_mm = EXTRINSICS_MAX_MM if args.max_mm is None else args.max_mm
    max_deg = EXTRINSICS_MAX_DEG if args.max_deg is None else args.max_deg
    holds = all(v["median_mm"] <= max_mm and v["median_deg"] <= max_deg for v in res.values())
    text = "\n".join(f"  camera {s}: {v['n_views']} views, median {v['median_mm']} mm / {v['median_deg']} deg"
                     for s, v in res.items())
    return {"holds": holds, "extrinsics": res}, text


def verify_camera(args) -> tuple[dict, str]:
    from calib.board import parse_board
    from calib.dataset import detect_dir, read_poses
    from calib.errors import InputFileError
    from calib.store import load_handeye, load_intrinsics
    from calib.verify import verify_handeye, verify_intrinsics

    if len(args.images) != 1 or len(args.intrinsics) != 1:
        raise InputFileError("several --images/--intrinsics are for --extrinsics; verify one camera at a time")
    images, intr_file = args.images[0], args.intrinsics[0]
    require_dirs(images)
    intr = load_intrinsics(intr_file)
    he = load_handeye(args.handeye, expect_serial=intr.serial) if args.handeye else None
    spec = parse_board(args.board or intr.board)
    views = detect_dir(images, spec)
    load_intrinsics(intr_file, expect_size=views.size)
    usable = {n: views.detections[n] for n in views.usable}
    if he is None:
        summary = verify_intrinsics(usable, spec, intr, args.max_rms, args.max_drift)
        summary.pop("_poses")
        return summary, intrinsics_text(summary, args.max_rms)
    robot = read_poses(args.poses or str(Path(images) / "poses.json"))
    summary = verify_handeye(usable, robot, spec, intr, he, args.max_mm, args.max_deg, args.max_rms, args.max_drift)
    h = summary["handeye"]
    return summary, intrinsics_text(summary["intrinsics"], args.max_rms) + (
        f"\n  hand-eye: median {h['median_mm']} mm / {h['median_deg']} deg (limits {h['threshold_mm']} mm / "
        f"{h['threshold_deg']} deg), predicted board {h['median_reprojection_px']} px off")


def intrinsics_text(i: dict, max_rms: float) -> str:
    text = (f"  intrinsics: median reprojection {i['median_rms_px']} px, max {i['max_rms_px']} px (limit {max_rms}); "
            f"views over the limit: {', '.join(i['views_over_threshold']) or 'none'}")
    d = i.get("model_drift")
    text += ("\n  lens model vs a fresh fit on these views: " + (f"mean {d['mean_px']} px, max {d['max_px']} px (limit "
             f"{d['threshold_px']})" if d else "not checked (needs >= 6 tilted views)"))
    return text
