from __future__ import annotations

import numpy as np
import pytest

from calib import synth
from calib.board import Detection
from calib.errors import DegenerateMotionError, InsufficientViewsError
from calib.geometry import make_T
from calib.intrinsics import calibrate_intrinsics, compare_intrinsics, model_displacement_px
from calib.store import Intrinsics

from calib_test_helpers import render_detect


def test_recovers_intrinsics_with_distortion(spec, camera, intrinsics_views):
    _, dets = intrinsics_views
    res = calibrate_intrinsics(dets, camera.size, spec, serial="cam0")
    intr = res.intrinsics
    K = camera.K
    errs = [abs(intr.fx - K[0, 0]), abs(intr.fy - K[1, 1]), abs(intr.cx - K[0, 2]), abs(intr.cy - K[1, 2])]
    print("intrinsics error px (fx, fy, cx, cy):", np.round(errs, 4), "rms", round(intr.rms_px, 4))
    assert max(errs) < 1.0
    assert intr.rms_px < 0.3
    # the whole lens model (distortion included) maps rays within 1 px of the truth where the board was seen
    mx, mean = model_displacement_px(intr.K, intr.dist_array, K, camera.dist, camera.size, step=8)
    print("model displacement px: max", round(mx, 3), "mean", round(mean, 3))
    assert mean < 0.3 and mx < 2.0
    assert set(res.per_view_px) == set(dets) and not res.rejected
    assert 0.6 < res.coverage["cells_covered"] <= 1.0 and len(res.coverage["map"]) == 6
    assert intr.serial == "cam0" and intr.extra["n_views"] == len(dets)


def test_bad_views_are_rejected_and_named(spec, camera, intrinsics_views):
    _, dets = intrinsics_views
    dets = dict(dets)
    dets["blank.png"] = Detection(np.zeros((0, 2)), np.zeros(0, dtype=int), camera.size)
    # a misdetection: one view whose corners are shifted by several pixels in a non-rigid way
    d = dets["view_003.png"]
    rng = np.random.default_rng(0)
    dets["shaky.png"] = Detection(d.corners + rng.normal(0, 4.0, d.corners.shape), d.ids.copy(), d.size)
    res = calibrate_intrinsics(dets, camera.size, spec)
    assert res.rejected["blank.png"] == "board not found"
    assert "shaky.png" in res.rejected and "reprojection error" in res.rejected["shaky.png"]
    assert abs(res.intrinsics.fx - camera.K[0, 0]) < 1.0


def test_too_few_views_is_an_error(spec, camera, intrinsics_views):
    _, dets = intrinsics_views
    few = dict(list(dets.items())[:3])
    with pytest.raises(InsufficientViewsError, match=r"only 3 usable views in DIR \(need >= 6\)"):
        calibrate_intrinsics(few, camera.size, spec, source="DIR")


def test_no_board_visible_is_an_error(spec, camera, detector):
    blank = {f"b{i}.png": detector.detect(np.full((480, 640), 90 + i, np.uint8)) for i in range(8)}
    with pytest.raises(InsufficientViewsError, match="only 0 usable views.*board not found"):
        calibrate_intrinsics(blank, camera.size, spec)


def test_fronto_parallel_views_are_refused(spec, camera, detector):
    bw, bh = spec.size_m
    rng = np.random.default_rng(1)
    poses = [make_T(np.eye(3), [-bw / 2 + rng.uniform(-0.05, 0.05), -bh / 2 + rng.uniform(-0.04, 0.04),
                                rng.uniform(0.35, 0.5)]) for _ in range(8)]
    dets = render_detect(spec, detector, poses, camera)
    with pytest.raises(DegenerateMotionError, match="fronto-parallel|poorly constrained"):
        calibrate_intrinsics(dets, camera.size, spec)


def test_compare_with_factory():
    a = Intrinsics(640, 480, 600, 600, 320, 240, [0, 0, 0, 0, 0], 0.1)
    b = Intrinsics(640, 480, 603, 600, 321, 240, [0, 0, 0, 0, 0], 0.0)
    c = compare_intrinsics(a, b)
    assert c["dfx_px"] == -3 and c["dcx_px"] == -1
    assert 1.0 < c["max_displacement_px"] < 3.0  # 3 px focal change moves the image corners by ~1.6 px + 1 px shift
