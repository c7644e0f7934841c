"""Board poses seen by several cameras at once (one image folder and one intrinsics file per camera): what
`calibrate extrinsics` solves from and `calibrate verify --extrinsics` checks."""
from __future__ import annotations

from pathlib import Path


def poses_by_camera(dirs, intr_files, board_arg: str | None):
    """(board spec, {serial: {image name: T_camera_board}}, serials in the given order)."""
    from calib.board import parse_board
    from calib.cli.common import require_dirs
    from calib.dataset import detect_dir
    from calib.errors import InputFileError
    from calib.handeye import board_poses
    from calib.store import load_intrinsics

    if len(dirs) != len(intr_files):
        raise InputFileError(f"{len(dirs)} --images dirs but {len(intr_files)} --intrinsics files: give one per camera")
    require_dirs(dirs)
    intrs = [load_intrinsics(f) for f in intr_files]
    spec = parse_board(board_arg or intrs[0].board)
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
