"""`calibrate extrinsics`: camera-to-camera poses from simultaneous board views (the same file names in each
camera's folder)."""
from __future__ import annotations

import argparse

from calib.cli.common import SPEC_HELP, emit, fmt_T

HELP = "camera-to-camera extrinsics from simultaneous board views (same file names)"
EXAMPLE = ("imagewam-edge calibrate extrinsics --images cam_a/ cam_b/ --intrinsics a.yaml b.yaml "
           "--board charuco:9,6,0.035,0.026,DICT_5X5_100 --out extrinsics.yaml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", required=True, help="one image directory per camera")
    p.add_argument("--intrinsics", nargs="+", required=True, help="one intrinsics YAML per camera, same order")
    p.add_argument("--board", help=SPEC_HELP)
    p.add_argument("--reference", help="serial of the reference camera (default: the first)")
    p.add_argument("--out", required=True, help="output YAML")


def run(args) -> int:
    from calib.cli.multicam import poses_by_camera
    from calib.extrinsics import solve_extrinsics
    from calib.store import Extrinsics, save_extrinsics

    spec, poses, serials = poses_by_camera(args.images, args.intrinsics, args.board)
    ref = args.reference or serials[0]
    T_ref, report_ = solve_extrinsics(poses, ref)
    ex = Extrinsics(ref, T_ref, str(spec), report_)
    save_extrinsics(args.out, ex)
    emit(args, {"out": args.out, **ex.to_dict()}, report(ref, T_ref, report_, args.out))
    return 0


def report(ref: str, T_ref: dict, solved: dict, out: str) -> str:
    """The text report of an extrinsics calibration."""
    lines = [f"extrinsics relative to camera {ref}:"]
    for s, T in T_ref.items():
        if s != ref:
            lines += [f" T_{ref}_{s}:", fmt_T(T)]
    for pair, v in solved["pairs"].items():
        lines.append(f"  {pair}: {v['n_views']} shared views, rms {v['rms_mm']:.3f} mm / {v['rms_deg']:.4f} deg"
                     + (f", outliers {v['outliers']}" if v["outliers"] else ""))
    lines.append(f"wrote {out}")
    return "\n".join(lines)
