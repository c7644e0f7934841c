"""`calibrate intrinsics`: camera intrinsics from a folder of board views, or captured live from a RealSense and
compared with its factory intrinsics."""
from __future__ import annotations

import argparse

import logging
from pathlib import Path

from calib.cli.common import SPEC_HELP, board_spec, emit, out_path, require_dirs

log = logging.getLogger(__name__)

HELP = "camera intrinsics from board views (or capture them live with --camera)"
EXAMPLE = ("imagewam-edge calibrate intrinsics --images views/ --board charuco:9,6,0.035,0.026,DICT_5X5_100 "
           "--serial 123456789012 --out intrinsics.yaml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="directory of board images (one camera, one resolution)")
    p.add_argument("--camera", metavar="SERIAL", help="capture live from this RealSense (saves into --images or DIR "
                   "next to --out) and compare with its factory intrinsics")
    p.add_argument("--board", help=SPEC_HELP)
    p.add_argument("--serial", help="camera serial recorded in the file (default: from DIR/session.yaml or --camera)")
    p.add_argument("--out", help="output YAML (default: $IMAGEWAM_CALIB_DIR/<serial>/intrinsics.yaml)")
    p.add_argument("--min-views", type=int, default=6, help="refuse with fewer usable views (default 6)")
    p.add_argument("--max-view-rms", type=float, default=1.0, help="reject views above max(this, 3x median) px")
    p.add_argument("--fix-k3", action="store_true", help="fix k3 = 0 (narrow lenses, few views)")
    p.add_argument("--n-views", type=int, default=20, help="--camera: views to capture (default 20)")
    p.add_argument("--width", type=int, default=640, help="--camera: stream width")
    p.add_argument("--height", type=int, default=480, help="--camera: stream height")


def run(args) -> int:
    from calib.dataset import detect_dir, read_session
    from calib.errors import InputFileError
    from calib.intrinsics import calibrate_intrinsics, compare_intrinsics
    from calib.store import save_intrinsics

    factory, images = None, args.images
    if args.camera:
        from calib.cli.devices import capture_for_intrinsics

        images = str(Path(images or Path(args.out or ".").resolve().parent / f"views_{args.camera}"))
        factory = capture_for_intrinsics(args.camera, args.width, args.height, Path(images), board_spec(args.board),
                                         args.n_views)
    if not images:
        raise InputFileError("pass --images DIR (board images) or --camera SERIAL (capture live)")
    require_dirs(images)
    session = read_session(images)
    spec = board_spec(args.board, session.get("board"))
    serial = args.serial or args.camera or session.get("serial")
    views = detect_dir(images, spec)
    res = calibrate_intrinsics(
        views.detections, views.size, spec, serial=None if serial is None else str(serial), min_views=args.min_views,
        max_view_rms_px=args.max_view_rms, fix_k3=args.fix_k3, rejected=views.rejected, source=str(images),
    )
    intr = res.intrinsics
    if factory is not None:
        intr.extra["factory_comparison"] = compare_intrinsics(intr, factory)
    out = out_path(args.out, intr.serial, "intrinsics")
    if intr.serial is None:
        log.warning("no camera serial recorded in %s: the control loop cannot check it; pass --serial", out)
    save_intrinsics(out, intr)
    emit(args, {"out": str(out), **intr.to_dict()}, report(res, images, out))
    return 0


def report(res, images: str, out: Path) -> str:
    """The text report of an intrinsics calibration."""
    intr = res.intrinsics
    lines = [
        f"intrinsics from {intr.extra['n_views']} views of {images} ({intr.width}x{intr.height}): "
        f"RMS {intr.rms_px:.3f} px",
        f"  fx {intr.fx:.2f}  fy {intr.fy:.2f}  cx {intr.cx:.2f}  cy {intr.cy:.2f}  (std fx {res.std['fx']:.2f} px)",
        "  dist " + " ".join(f"{v:.5f}" for v in intr.dist),
        "  per-view RMS px: " + ", ".join(f"{n} {e:.2f}" for n, e in res.per_view_px.items()),
    ]
    if res.rejected:
        lines.append("  rejected: " + "; ".join(f"{n}: {r}" for n, r in res.rejected.items()))
    cov = res.coverage
    lines.append(f"  coverage: {100 * cov['cells_covered']:.0f}% of {cov['grid'][0]}x{cov['grid'][1]} cells, "
                 f"{100 * cov['border_cells_covered']:.0f}% of border cells (corners per cell; '.' = none):")
    lines += ["    " + row for row in cov["map"]]
    fc = intr.extra.get("factory_comparison")
    if fc is not None:
        lines.append(f"  vs factory: dfx {fc['dfx_px']} dfy {fc['dfy_px']} dcx {fc['dcx_px']} dcy {fc['dcy_px']} px, "
                     f"max displacement {fc['max_displacement_px']} px")
    lines.append(f"wrote {out}")
    return "\n".join(lines)
