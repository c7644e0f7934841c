from __future__ import annotations

import numpy as np
import pytest

from calib.errors import DegenerateMotionError, InconsistentDataError, InsufficientViewsError
from calib.geometry import inv_T, make_T, rodrigues, transform_delta
from calib.handeye import HANDEYE_METHODS, _solve, board_poses, check_motion, solve_handeye
from calib.intrinsics import calibrate_intrinsics


@pytest.fixture(scope="module")
def solved(handeye_data, spec, camera):
    scene, dets, robot = handeye_data
    intr = calibrate_intrinsics(dets, camera.size, spec).intrinsics  # recovered, not the true intrinsics
    cam_poses, rms, rejected = board_poses(dets, spec, intr.K, intr.dist_array)
    assert not rejected and max(rms.values()) < 0.3
    return scene, robot, cam_poses, solve_handeye(robot, cam_poses, scene.mode, spec)


def test_recovers_handeye_both_modes(solved):
    scene, _, _, res = solved
    deg, mm = transform_delta(res.T, scene.X)
    print(f"{scene.mode}: {res.method} error {mm:.3f} mm {deg:.4f} deg; residuals {res.residuals}")
    assert mm < 1.0 and deg < 0.2
    fdeg, fmm = transform_delta(res.T_fixed_board, scene.T_fixed_board)
    assert fmm < 2.0 and fdeg < 0.2
    assert res.residuals["rms_mm"] < 1.0 and res.residuals["rms_deg"] < 0.2
    assert set(res.methods) >= set(HANDEYE_METHODS) | {"SHAH", "LI"}
    assert res.method in res.methods and not res.outliers


def test_methods_are_really_different_solvers(solved, spec):
    """`method=` is passed as a keyword: with noisy data the five solvers give five different answers."""
    import cv2

    scene, robot, cam_poses, _ = solved
    names = sorted(cam_poses)
    Xs = [_solve(cv2, m, scene.mode, [robot[n] for n in names], [cam_poses[n] for n in names]) for m in HANDEYE_METHODS]
    distinct = {tuple(np.round(X[:3, 3], 9)) for X in Xs}
    assert len(distinct) == len(HANDEYE_METHODS)


def test_outlier_view_is_reported_and_dropped(solved, spec):
    scene, robot, cam_poses, _ = solved
    robot = dict(robot)
    bad = sorted(robot)[4]
    robot[bad] = robot[bad] @ make_T(rodrigues([0.0, 0.02, 0.0]), [0.015, 0.0, 0.0])  # 1.1 deg + 15 mm slip
    res = solve_handeye(robot, cam_poses, scene.mode, spec)
    assert list(res.outliers) == [bad]
    deg, mm = transform_delta(res.T, scene.X)
    assert mm < 1.0 and deg < 0.2


def test_wrong_mode_is_refused_not_answered(solved, spec):
    scene, robot, cam_poses, _ = solved
    other = "eye-to-hand" if scene.mode == "eye-in-hand" else "eye-in-hand"
    with pytest.raises(InconsistentDataError, match="check --mode"):
        solve_handeye(robot, cam_poses, other, spec)


def _exact_scene(gripper_rotations, translations):
    """Eye-in-hand poses built from given gripper rotations (rotation vectors) and translations, no noise."""
    X = make_T(rodrigues([0.05, -0.08, 0.3]), [0.032, -0.047, 0.085])
    F = make_T(rodrigues([np.pi, 0.0, 0.0]), [0.5, -0.1, 0.0])
    base = make_T(rodrigues([np.pi, 0, 0]), [0.45, -0.05, 0.45])
    Tg = [base @ make_T(rodrigues(r), t) for r, t in zip(gripper_rotations, translations)]
    Tc = [inv_T(g @ X) @ F for g in Tg]
    names = [f"v{i}" for i in range(len(Tg))]
    return dict(zip(names, Tg)), dict(zip(names, Tc)), X


def test_pure_translations_are_degenerate(spec):
    rng = np.random.default_rng(0)
    robot, cams, _ = _exact_scene([np.zeros(3)] * 10, rng.uniform(-0.1, 0.1, (10, 3)))
    with pytest.raises(DegenerateMotionError, match="pure translations"):
        solve_handeye(robot, cams, "eye-in-hand", spec)


def test_single_rotation_axis_is_degenerate(spec):
    rng = np.random.default_rng(1)
    rots = [np.array([0.0, 0.0, a]) for a in rng.uniform(-0.8, 0.8, 10)]
    robot, cams, _ = _exact_scene(rots, rng.uniform(-0.1, 0.1, (10, 3)))
    with pytest.raises(DegenerateMotionError, match="one axis"):
        solve_handeye(robot, cams, "eye-in-hand", spec)


def test_two_axes_are_enough_and_exact_data_is_exact(spec):
    rng = np.random.default_rng(2)
    rots = [rng.uniform(-0.5, 0.5, 3) for _ in range(8)]
    robot, cams, X = _exact_scene(rots, rng.uniform(-0.1, 0.1, (8, 3)))
    stats = check_motion(list(robot.values()))
    assert stats["axis_spread_deg"] > 10
    res = solve_handeye(robot, cams, "eye-in-hand", spec)
    deg, mm = transform_delta(res.T, X)
    assert mm < 1e-3 and deg < 1e-4


def test_too_few_views(spec):
    robot, cams, _ = _exact_scene([np.array([0.1 * i, 0.2, 0]) for i in range(3)], np.zeros((3, 3)))
    with pytest.raises(InsufficientViewsError, match="only 3 views"):
        solve_handeye(robot, cams, "eye-in-hand", spec)
    robot2 = {k + "x": v for k, v in robot.items()}  # names do not match the images
    with pytest.raises(InsufficientViewsError, match="names match"):
        solve_handeye(robot2, cams, "eye-in-hand", spec)
