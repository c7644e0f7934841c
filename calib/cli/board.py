"""`calibrate board`: a printable ChArUco board (PNG + PDF at true scale), optionally self-checked on synthetic
views through a known camera."""
from __future__ import annotations

import argparse

from calib.cli.common import DEFAULT_BOARD, SPEC_HELP, board_spec, emit

HELP = "write a printable ChArUco board (PNG + PDF at true scale, with a 50 mm check ruler)"
EXAMPLE = ("imagewam-edge calibrate board --board charuco:9,6,0.035,0.026,DICT_5X5_100 --out board  "
           "# board.png, board.pdf")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", default=DEFAULT_BOARD, help=SPEC_HELP)
    p.add_argument("--out", required=True, help="output path prefix (writes PREFIX.png and PREFIX.pdf)")
    p.add_argument("--dpi", type=int, default=300, help="PNG resolution (default 300)")
    p.add_argument("--self-check", action="store_true",
                   help="also calibrate synthetic views of this board through a known camera and report the errors")


def run(args) -> int:
    from calib.board import write_printable

    spec = board_spec(args.board)
    info = write_printable(spec, args.out, dpi=args.dpi)
    summary = {"board": str(spec), **info}
    text = (f"wrote {info['png']} and {info['pdf']} ({info['page_mm'][0]}x{info['page_mm'][1]} mm page, fits "
            f"{info['paper'] or 'no standard sheet up to A2'}). Print at 100% scale, check the 50 mm bar, glue flat.")
    if args.self_check:
        sc = summary["self_check"] = self_check(spec)
        text += (f"\nself-check on synthetic views: fx error {sc['fx_err_px']:.3f} px, rms {sc['rms_px']:.3f} px, "
                 f"hand-eye {sc['handeye_mm']:.3f} mm / {sc['handeye_deg']:.4f} deg")
    emit(args, summary, text)
    return 0


def self_check(spec) -> dict:
    """Intrinsics and hand-eye from 12 synthetic views of `spec` through a known camera: the errors."""
    import numpy as np

    from calib import synth
    from calib.board import BoardDetector
    from calib.geometry import transform_delta
    from calib.handeye import board_poses, solve_handeye
    from calib.intrinsics import calibrate_intrinsics

    det, cam = BoardDetector(spec), synth.Camera()
    scene = synth.handeye_scene(spec, 12, "eye-in-hand", cam, np.random.default_rng(0))
    dets = {f"v{i}": det.detect(synth.render_view(spec, T, cam)) for i, T in enumerate(scene.T_cam_board)}
    res = calibrate_intrinsics(dets, cam.size, spec)
    intr = res.intrinsics
    poses, _, _ = board_poses(dets, spec, intr.K, intr.dist_array)
    he = solve_handeye({f"v{i}": T for i, T in enumerate(scene.T_base_gripper)}, poses, "eye-in-hand", spec)
    deg, mm = transform_delta(he.T, scene.X)
    return {"fx_err_px": abs(intr.fx - cam.K[0, 0]), "rms_px": intr.rms_px, "handeye_mm": mm, "handeye_deg": deg}
