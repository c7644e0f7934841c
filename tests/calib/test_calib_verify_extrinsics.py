from __future__ import annotations

import numpy as np
import pytest

from calib import synth
from calib.errors import InsufficientViewsError
from calib.extrinsics import check_extrinsics, solve_extrinsics
from calib.geometry import make_T, rodrigues, transform_delta
from calib.handeye import board_poses, solve_handeye
from calib.intrinsics import calibrate_intrinsics
from calib.store import HandEye, Intrinsics
from calib.verify import verify_handeye, verify_intrinsics

from calib_test_helpers import render_detect

T_B = make_T(rodrigues([0.05, -0.25, 0.03]), [0.15, 0.01, 0.02])
T_C = make_T(rodrigues([-0.03, 0.2, -0.05]), [-0.12, -0.02, 0.03])


@pytest.fixture(scope="module")
def three_cameras(spec, detector, camera):
    views = synth.multi_camera_views(spec, {"A": np.eye(4), "B": T_B, "C": T_C}, 10, camera, np.random.default_rng(3))
    poses = {}
    for s, vs in views.items():
        dets = render_detect(spec, detector, vs, camera, prefix="frame_")
        poses[s], _, rejected = board_poses(dets, spec, camera.K, camera.dist)
        assert not rejected
    return poses


def test_multi_camera_extrinsics(three_cameras):
    T, report = solve_extrinsics(three_cameras, "A")
    for s, truth in (("B", T_B), ("C", T_C)):
        deg, mm = transform_delta(T[s], truth)
        print(f"extrinsics A->{s}: {mm:.3f} mm {deg:.4f} deg")
        assert mm < 1.0 and deg < 0.2
    assert np.allclose(T["A"], np.eye(4))
    assert report["pairs"]["A->B"]["n_views"] == 10
    check = check_extrinsics(three_cameras, T, "A")
    assert check["B"]["median_mm"] < 2.0
    # a camera that was bumped by 1 cm no longer agrees
    T_bad = dict(T, B=T["B"] @ make_T(np.eye(3), [0.01, 0, 0]))
    assert check_extrinsics(three_cameras, T_bad, "A")["B"]["median_mm"] > 8.0


def test_extrinsics_chain_through_a_middle_camera(three_cameras):
    names = sorted(three_cameras["A"])
    poses = {
        "A": {n: three_cameras["A"][n] for n in names[:5]},  # A and C never see the board together
        "B": dict(three_cameras["B"]),
        "C": {n: three_cameras["C"][n] for n in names[5:]},
    }
    T, report = solve_extrinsics(poses, "A")
    assert report["chains"]["C"] == ["A", "B", "C"]
    deg, mm = transform_delta(T["C"], T_C)
    assert mm < 1.5 and deg < 0.3


def test_extrinsics_without_shared_views_is_an_error(three_cameras):
    poses = {"A": dict(list(three_cameras["A"].items())[:5]), "B": dict(list(three_cameras["B"].items())[5:])}
    with pytest.raises(InsufficientViewsError, match="share too few board views"):
        solve_extrinsics(poses, "A")


@pytest.fixture(scope="module")
def calibrated(spec, detector, camera):
    scene = synth.handeye_scene(spec, 12, "eye-in-hand", camera, np.random.default_rng(11))
    dets = render_detect(spec, detector, scene.T_cam_board, camera, seed=300)
    robot = {f"view_{i:03d}.png": T for i, T in enumerate(scene.T_base_gripper)}
    intr = calibrate_intrinsics(dets, camera.size, spec).intrinsics
    poses, _, _ = board_poses(dets, spec, intr.K, intr.dist_array)
    he = solve_handeye(robot, poses, "eye-in-hand", spec)
    new = synth.handeye_scene(spec, 8, "eye-in-hand", camera, np.random.default_rng(12))  # same X, new views
    new_dets = render_detect(spec, detector, new.T_cam_board, camera, seed=400)
    new_robot = {f"view_{i:03d}.png": T for i, T in enumerate(new.T_base_gripper)}
    return intr, HandEye("eye-in-hand", he.T, "cam"), new_dets, new_robot


def test_verify_holds_for_a_good_calibration(spec, calibrated):
    intr, he, dets, robot = calibrated
    r = verify_handeye(dets, robot, spec, intr, he)
    print("verify good:", r["intrinsics"]["median_rms_px"], "px", r["handeye"]["median_mm"], "mm")
    assert r["holds"] and r["intrinsics"]["median_rms_px"] < 0.2 and r["handeye"]["median_mm"] < 1.0


@pytest.mark.parametrize(
    "field, factor",
    [("fx", 1.03), ("cx", None), ("dist", None)],
)
def test_verify_detects_broken_intrinsics(spec, calibrated, field, factor):
    intr, _, dets, _ = calibrated
    d = dict(intr.__dict__)
    if field == "fx":
        d["fx"] *= factor
    elif field == "cx":
        d["cx"] += 15.0
    else:
        d["dist"] = [0.0, 0.0, 0.0, 0.0, 0.0]
    broken = Intrinsics(**d)
    r = verify_intrinsics(dets, spec, broken)
    print(f"verify broken {field}: median {r['median_rms_px']} px, drift {r['model_drift']}")
    assert not r["holds"]


@pytest.mark.parametrize("delta", [make_T(np.eye(3), [0.01, 0, 0]), make_T(rodrigues([0.0, np.radians(1.5), 0.0]), [0, 0, 0])])
def test_verify_detects_broken_handeye(spec, calibrated, delta):
    intr, he, dets, robot = calibrated
    broken = HandEye("eye-in-hand", he.T @ delta, "cam")
    r = verify_handeye(dets, robot, spec, intr, broken)
    print("verify broken hand-eye:", r["handeye"]["median_mm"], "mm", r["handeye"]["median_deg"], "deg")
    assert not r["holds"] and r["intrinsics"]["holds"]
