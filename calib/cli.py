"""`imagewam-edge calibrate ...`: board, intrinsics, handeye, extrinsics, verify, capture.

Imports nothing heavy at module level: OpenCV, matplotlib and drivers are imported inside the handlers.
Exit codes: 0 ok, 1 error (message says what to do), 3 `verify`: the calibration no longer holds.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_DOES_NOT_HOLD = 3
SPEC_HELP = "ChArUco board: charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT (default: from the session/intrinsics file)"


def _parser(sub, name: str, help_: str, example: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help_, description=help_, epilog="example:\n  " + example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


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

    p = _parser(csub, "board", "write a printable ChArUco board (PNG + PDF at true scale, with a 50 mm check ruler)",
                "imagewam-edge calibrate board --board charuco:9,6,0.035,0.026,DICT_5X5_100 --out board  "
                "# board.png, board.pdf", cmd_board)
    p.add_argument("--board", default="charuco:9,6,0.035,0.026,DICT_5X5_100", help=SPEC_HELP)
    p.add_argument("--out", required=True, help="output path prefix (writes PREFIX.png and PREFIX.pdf)")
    p.add_argument("--dpi", type=int, default=300, help="PNG resolution (default 300)")
    p.add_argument("--self-check", action="store_true",
                   help="also calibrate synthetic views of this board through a known camera and report the errors")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = _parser(csub, "intrinsics", "camera intrinsics from board views (or capture them live with --camera)",
                "imagewam-edge calibrate intrinsics --images views/ --board charuco:9,6,0.035,0.026,DICT_5X5_100 "
                "--serial 123456789012 --out intrinsics.yaml", cmd_intrinsics)
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
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = _parser(csub, "handeye", "hand-eye calibration: camera on the gripper (eye-in-hand) or fixed (eye-to-hand)",
                "imagewam-edge calibrate handeye --images views/ --poses views/poses.json --intrinsics intrinsics.yaml "
                "--board charuco:9,6,0.035,0.026,DICT_5X5_100 --mode eye-in-hand --out handeye.yaml", cmd_handeye)
    p.add_argument("--images", required=True, help="directory of board images")
    p.add_argument("--poses", help="JSON/YAML list of {image, T_base_gripper 4x4 row-major, metres} "
                   "(default DIR/poses.json)")
    p.add_argument("--intrinsics", required=True, help="intrinsics YAML of this camera")
    p.add_argument("--board", help=SPEC_HELP)
    p.add_argument("--mode", required=True, choices=["eye-in-hand", "eye-to-hand"],
                   help="eye-in-hand: camera on the gripper, board fixed; eye-to-hand: camera fixed, board on the gripper")
    p.add_argument("--out", help="output YAML (default: $IMAGEWAM_CALIB_DIR/<serial>/handeye.yaml)")
    p.add_argument("--keep-outliers", action="store_true", help="do not drop outlier views")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = _parser(csub, "extrinsics", "camera-to-camera extrinsics from simultaneous board views (same file names)",
                "imagewam-edge calibrate extrinsics --images cam_a/ cam_b/ --intrinsics a.yaml b.yaml "
                "--board charuco:9,6,0.035,0.026,DICT_5X5_100 --out extrinsics.yaml", cmd_extrinsics)
    p.add_argument("--images", nargs="+", required=True, help="one image directory per camera")
    p.add_argument("--intrinsics", nargs="+", required=True, help="one intrinsics YAML per camera, same order")
    p.add_argument("--board", help=SPEC_HELP)
    p.add_argument("--reference", help="serial of the reference camera (default: the first)")
    p.add_argument("--out", required=True, help="output YAML")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = _parser(csub, "verify", "check a calibration on new views; exit 3 when it no longer holds",
                "imagewam-edge calibrate verify --images new_views/ --intrinsics intrinsics.yaml "
                "--handeye handeye.yaml --poses new_views/poses.json", cmd_verify)
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
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = _parser(csub, "capture", "interactive capture of board views and robot poses (live camera + arm, or --sim)",
                "imagewam-edge calibrate capture --camera 123456789012 --pose-cmd './print_T_base_gripper.sh' "
                "--board charuco:9,6,0.035,0.026,DICT_5X5_100 --out views/\n"
                "  imagewam-edge calibrate capture --sim --mode eye-to-hand --out /tmp/sim_views  # no hardware",
                cmd_capture)
    p.add_argument("--out", required=True, help="new directory for view_NNN.png, poses.json, session.yaml")
    p.add_argument("--board", default="charuco:9,6,0.035,0.026,DICT_5X5_100", help=SPEC_HELP)
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
    p.add_argument("--json", action="store_true", help="print a JSON summary")


# ------------------------------------------------------------------------------------------------ helpers


def _emit(args, summary: dict, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(text)


def _board(args, *fallbacks) -> "object":
    from calib.board import parse_board
    from calib.errors import BoardSpecError

    spec = args.board or next((f for f in fallbacks if f), None)
    if not spec:
        raise BoardSpecError("no board given: pass --board charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT")
    return parse_board(spec)


def _out_path(out: str | None, serial: str | None, kind: str) -> Path:
    from calib.errors import InputFileError
    from calib.store import calibration_path

    if out:
        return Path(out)
    if not serial:
        raise InputFileError(f"no --out and no camera serial: pass --out FILE or --serial SERIAL ({kind} files are "
                             "stored per camera serial)")
    return calibration_path(serial, kind)


def _fmt_T(T) -> str:
    return "\n".join("  [" + ", ".join(f"{v: .6f}" for v in row) + "]" for row in T)


# ------------------------------------------------------------------------------------------------ handlers


def cmd_board(args) -> int:
    from calib.board import write_printable

    spec = _board(args)
    info = write_printable(spec, args.out, dpi=args.dpi)
    summary = {"board": str(spec), **info}
    text = (f"wrote {info['png']} and {info['pdf']} ({info['page_mm'][0]}x{info['page_mm'][1]} mm page, fits "
            f"{info['paper'] or 'no standard sheet up to A2'}). Print at 100% scale, check the 50 mm bar, glue flat.")
    if args.self_check:
        summary["self_check"] = _self_check(spec)
        sc = summary["self_check"]
        text += (f"\nself-check on synthetic views: fx error {sc['fx_err_px']:.3f} px, rms {sc['rms_px']:.3f} px, "
                 f"hand-eye {sc['handeye_mm']:.3f} mm / {sc['handeye_deg']:.4f} deg")
    _emit(args, summary, text)
    return 0


def _self_check(spec) -> dict:
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


def cmd_intrinsics(args) -> int:
    from calib.dataset import detect_dir, read_session
    from calib.errors import InputFileError
    from calib.intrinsics import calibrate_intrinsics, compare_intrinsics
    from calib.store import save_intrinsics

    factory = None
    if args.camera:
        images = Path(args.images or Path(args.out or ".").resolve().parent / f"views_{args.camera}")
        factory = _capture_live_for_intrinsics(args, images)
        args.images = str(images)
    if not args.images:
        raise InputFileError("pass --images DIR (board images) or --camera SERIAL (capture live)")
    session = read_session(args.images)
    spec = _board(args, session.get("board"))
    serial = args.serial or args.camera or session.get("serial")
    views = detect_dir(args.images, spec)
    res = calibrate_intrinsics(
        views.detections, views.size, spec, serial=None if serial is None else str(serial), min_views=args.min_views,
        max_view_rms_px=args.max_view_rms, fix_k3=args.fix_k3, rejected=views.rejected, source=str(args.images),
    )
    intr = res.intrinsics
    if factory is not None:
        intr.extra["factory_comparison"] = compare_intrinsics(intr, factory)
    out = _out_path(args.out, intr.serial, "intrinsics")
    if intr.serial is None:
        log.warning("no camera serial recorded in %s: the control loop cannot check it; pass --serial", out)
    save_intrinsics(out, intr)
    summary = {"out": str(out), **intr.to_dict()}
    lines = [
        f"intrinsics from {intr.extra['n_views']} views of {args.images} ({intr.width}x{intr.height}): "
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
    if factory is not None:
        fc = intr.extra["factory_comparison"]
        lines.append(f"  vs factory: dfx {fc['dfx_px']} dfy {fc['dfy_px']} dcx {fc['dcx_px']} dcy {fc['dcy_px']} px, "
                     f"max displacement {fc['max_displacement_px']} px")
    lines.append(f"wrote {out}")
    _emit(args, summary, "\n".join(lines))
    return 0


def _capture_live_for_intrinsics(args, images: Path):
    """Capture views from a RealSense (no robot poses); returns its factory intrinsics as calib Intrinsics."""
    from calib.capture import run_capture
    from calib.store import Intrinsics

    spec = _board(args)
    camera = _open_realsense(args.camera, args.width, args.height)
    try:
        run_capture(camera, None, images, spec, wait_for_operator=_enter_prompt, n_views=args.n_views,
                    serial=args.camera, say=lambda m: print(m, file=sys.stderr))
        fi = camera.intrinsics
    finally:
        camera.disconnect()
    if fi is None:
        return None
    dist = list(getattr(fi, "coeffs", (0.0,) * 5))
    if getattr(fi, "model", "none") not in ("none", "brown_conrady", "inverse_brown_conrady"):
        log.warning("factory distortion model %s is not OpenCV's; comparing focal/centre only", fi.model)
        dist = [0.0] * 5
    return Intrinsics(fi.width, fi.height, fi.fx, fi.fy, fi.ppx, fi.ppy, dist, 0.0, serial=args.camera)


def _enter_prompt(attempt: int) -> bool:
    reply = input("move the board/robot, hold still, press Enter to capture (q + Enter to finish): ")
    return reply.strip().lower() not in ("q", "quit", "exit")


def _open_realsense(serial: str, width: int, height: int):
    from calib.errors import MissingDependencyError

    try:  # assumed drivers API, see calib/README or the capture docstring
        from drivers.camera.realsense import RealSenseCamera, RealSenseConfig
    except ImportError as exc:
        raise MissingDependencyError(f"live capture needs the drivers package and pyrealsense2 ({exc}); "
                                     "pip install 'imagewam-edge[realsense]'") from exc
    cam = RealSenseCamera(RealSenseConfig(serial=str(serial), width=width, height=height, depth=False))
    cam.connect()
    return cam


def cmd_handeye(args) -> int:
    from calib.dataset import detect_dir, read_poses, read_session
    from calib.handeye import board_poses, solve_handeye
    from calib.geometry import T_to_list
    from calib.store import HandEye, load_intrinsics, save_handeye

    session = read_session(args.images)
    intr = load_intrinsics(args.intrinsics)
    spec = _board(args, intr.board, session.get("board"))
    poses_path = args.poses or str(Path(args.images) / "poses.json")
    robot = read_poses(poses_path)
    views = detect_dir(args.images, spec)
    # refuse intrinsics of another camera or resolution
    load_intrinsics(args.intrinsics, expect_size=views.size,
                    expect_serial=session.get("serial") if intr.serial and session.get("serial") else None)
    missing = [n for n in views.usable if n not in robot]
    if missing:
        log.warning("%d images have no pose in %s (ignored): %s", len(missing), poses_path, ", ".join(missing[:5]))
    cam_poses, pnp_rms, rejected = board_poses({n: views.detections[n] for n in views.usable}, spec, intr.K, intr.dist_array)
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
    out = _out_path(args.out, intr.serial, "handeye")
    save_handeye(out, he)
    r = res.residuals
    lines = [
        f"hand-eye ({args.mode}) from {r['n_views']} views: {he.key} by {res.method} (most consistent)",
        _fmt_T(res.T),
        f"  residuals: rms {r['rms_mm']:.3f} mm (max {r['max_mm']:.3f}), rms {r['rms_deg']:.4f} deg (max {r['max_deg']:.4f}); "
        f"methods agree within {r['methods_spread_mm']:.3f} mm / {r['methods_spread_deg']:.4f} deg",
        "  methods (rms mm / deg): " + ", ".join(f"{m} {v['rms_mm']:.3f}/{v['rms_deg']:.4f}" for m, v in res.methods.items()),
    ]
    if res.outliers:
        lines.append("  outlier views (dropped): " + "; ".join(f"{n}: {w}" for n, w in res.outliers.items()))
    if rejected:
        lines.append("  rejected views: " + "; ".join(f"{n}: {w}" for n, w in rejected.items()))
    lines.append(f"wrote {out}")
    _emit(args, {"out": str(out), **he.to_dict()}, "\n".join(lines))
    return 0


def _poses_by_camera(dirs, intr_files, spec_arg, board_from=None):
    from calib.board import parse_board
    from calib.dataset import detect_dir
    from calib.errors import InputFileError
    from calib.handeye import board_poses
    from calib.store import load_intrinsics

    if len(dirs) != len(intr_files):
        raise InputFileError(f"{len(dirs)} --images dirs but {len(intr_files)} --intrinsics files: give one per camera")
    intrs = [load_intrinsics(f) for f in intr_files]
    spec = parse_board(spec_arg or board_from or intrs[0].board)
    out, serials = {}, []
    for d, f, intr in zip(dirs, intr_files, intrs):
        serial = intr.serial or Path(d).name
        if serial in out:
            raise InputFileError(f"two cameras with serial {serial} ({f}); each intrinsics file needs its own serial")
        views = detect_dir(d, spec)
        load_intrinsics(f, expect_size=views.size)  # refuse a file calibrated at another resolution
        poses, _, _ = board_poses({n: views.detections[n] for n in views.usable}, spec, intr.K, intr.dist_array)
        out[serial] = poses
        serials.append(serial)
    return spec, out, serials


def cmd_extrinsics(args) -> int:
    from calib.extrinsics import solve_extrinsics
    from calib.store import Extrinsics, save_extrinsics

    spec, poses, serials = _poses_by_camera(args.images, args.intrinsics, args.board)
    ref = args.reference or serials[0]
    T_ref, report = solve_extrinsics(poses, ref)
    ex = Extrinsics(ref, T_ref, str(spec), report)
    save_extrinsics(args.out, ex)
    lines = [f"extrinsics relative to camera {ref}:"]
    for s, T in T_ref.items():
        if s != ref:
            lines += [f" T_{ref}_{s}:", _fmt_T(T)]
    for pair, v in report["pairs"].items():
        lines.append(f"  {pair}: {v['n_views']} shared views, rms {v['rms_mm']:.3f} mm / {v['rms_deg']:.4f} deg"
                     + (f", outliers {v['outliers']}" if v["outliers"] else ""))
    lines.append(f"wrote {args.out}")
    _emit(args, {"out": args.out, **ex.to_dict()}, "\n".join(lines))
    return 0


def cmd_verify(args) -> int:
    from calib.dataset import detect_dir, read_poses
    from calib.errors import InputFileError
    from calib.extrinsics import check_extrinsics
    from calib.store import load_extrinsics, load_handeye, load_intrinsics
    from calib.verify import verify_handeye, verify_intrinsics

    if args.extrinsics:
        spec, poses, serials = _poses_by_camera(args.images, args.intrinsics, args.board)
        ex = load_extrinsics(args.extrinsics, expect_serials=serials)
        res = check_extrinsics(poses, ex.T_ref_cam, ex.reference)
        if not res:
            raise InputFileError("no view shows the board in the reference camera and another camera at once")
        max_mm = 2.0 if args.max_mm is None else args.max_mm
        max_deg = 0.3 if args.max_deg is None else args.max_deg
        holds = all(v["median_mm"] <= max_mm and v["median_deg"] <= max_deg for v in res.values())
        text = "\n".join(f"  camera {s}: {v['n_views']} views, median {v['median_mm']} mm / {v['median_deg']} deg"
                         for s, v in res.items())
        summary = {"holds": holds, "extrinsics": res}
    else:
        if len(args.images) != 1 or len(args.intrinsics) != 1:
            raise InputFileError("several --images/--intrinsics are for --extrinsics; verify one camera at a time")
        images, intr_file = args.images[0], args.intrinsics[0]
        intr = load_intrinsics(intr_file)
        he = load_handeye(args.handeye, expect_serial=intr.serial) if args.handeye else None
        from calib.board import parse_board

        spec = parse_board(args.board or intr.board)
        views = detect_dir(images, spec)
        load_intrinsics(intr_file, expect_size=views.size)
        usable = {n: views.detections[n] for n in views.usable}
        if he is not None:
            robot = read_poses(args.poses or str(Path(images) / "poses.json"))
            summary = verify_handeye(usable, robot, spec, intr, he, args.max_mm, args.max_deg, args.max_rms,
                                     args.max_drift)
            h, i = summary["handeye"], summary["intrinsics"]
            holds = summary["holds"]
            text = _intr_text(i, args) + (
                f"\n  hand-eye: median {h['median_mm']} mm / {h['median_deg']} deg (limits {h['threshold_mm']} mm / "
                f"{h['threshold_deg']} deg), predicted board {h['median_reprojection_px']} px off")
        else:
            summary = verify_intrinsics(usable, spec, intr, args.max_rms, args.max_drift)
            summary.pop("_poses")
            holds = summary["holds"]
            text = _intr_text(summary, args)
    verdict = "calibration HOLDS" if holds else "calibration does NOT hold: recalibrate (or check focus/mounting)"
    _emit(args, summary, verdict + "\n" + text)
    return 0 if holds else EXIT_DOES_NOT_HOLD


def _intr_text(i: dict, args) -> str:
    text = (f"  intrinsics: median reprojection {i['median_rms_px']} px, max {i['max_rms_px']} px (limit {args.max_rms}); "
            f"views over the limit: {', '.join(i['views_over_threshold']) or 'none'}")
    d = i.get("model_drift")
    text += ("\n  lens model vs a fresh fit on these views: " + (f"mean {d['mean_px']} px, max {d['max_px']} px (limit "
             f"{d['threshold_px']})" if d else "not checked (needs >= 6 tilted views)"))
    return text


def cmd_capture(args) -> int:
    from calib.capture import ArmPoseSource, CommandPoseSource, PromptPoseSource, SimBoardRig, run_capture
    from calib.errors import InputFileError

    spec = _board(args)
    source = args.pose_source or ("cmd" if args.pose_cmd else "arm" if args.arm else None)
    closers = []
    if args.sim:
        rig = SimBoardRig(spec, n=args.n_views, mode=args.mode, seed=args.seed)
        frames, poses, wait = rig, (None if source == "none" else rig), rig.advance
    else:
        if not args.camera:
            raise InputFileError("pass --camera SERIAL (a RealSense) or --sim")
        frames = _open_realsense(args.camera, args.width, args.height)
        closers.append(frames.disconnect)
        wait = _enter_prompt
        source = source or "prompt"
        if source == "cmd":
            if not args.pose_cmd:
                raise InputFileError("--pose-source cmd needs --pose-cmd 'COMMAND'")
            poses = CommandPoseSource(args.pose_cmd)
        elif source == "arm":
            arm = _open_arm(args.arm)
            closers.append(getattr(arm, "disconnect", lambda: None))
            poses = ArmPoseSource(arm)
        elif source == "prompt":
            poses = PromptPoseSource()
        else:
            poses = None
    try:
        res = run_capture(frames, poses, args.out, spec, wait_for_operator=wait, n_views=args.n_views,
                          serial=args.camera, say=lambda m: print(m, file=sys.stderr))
    finally:
        for close in closers:
            close()
    summary = {"out": str(res.out_dir), "saved": res.saved, "skipped": res.skipped}
    text = (f"saved {len(res.saved)} views to {res.out_dir} ({len(res.skipped)} skipped)"
            + ("; poses in poses.json" if poses else ""))
    _emit(args, summary, text)
    return 0


def _open_arm(config_path: str | None):
    from calib.errors import InputFileError, MissingDependencyError

    if not config_path:
        raise InputFileError("--pose-source arm needs --arm CONFIG.yaml")
    try:  # assumed drivers API: drivers.arm.open_arm(config_path) -> connected arm with read_state()
        from drivers.arm import open_arm
    except ImportError as exc:
        raise MissingDependencyError(
            f"drivers.arm.open_arm is not available ({exc}); use --pose-cmd 'COMMAND' printing T_base_gripper"
        ) from exc
    return open_arm(config_path)
