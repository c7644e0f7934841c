"""Shared synthetic data for the calib tests (rendered once per session: rendering is the slow part)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from calib import synth  # noqa: E402
from calib.board import BoardDetector, parse_board  # noqa: E402
from calib_test_helpers import render_detect  # noqa: E402

SPEC = "charuco:9,6,0.035,0.026,DICT_5X5_100"


@pytest.fixture(scope="session")
def spec():
    return parse_board(SPEC)


@pytest.fixture(scope="session")
def camera():
    return synth.Camera()


@pytest.fixture(scope="session")
def detector(spec):
    return BoardDetector(spec)


@pytest.fixture(scope="session")
def intrinsics_views(spec, detector, camera):
    poses = synth.random_board_views(spec, 15, camera, np.random.default_rng(2))
    return poses, render_detect(spec, detector, poses, camera)


@pytest.fixture(scope="session", params=["eye-in-hand", "eye-to-hand"])
def handeye_data(request, spec, detector, camera):
    scene = synth.handeye_scene(spec, 15, request.param, camera, np.random.default_rng(5), pose_noise=(0.0002, 0.02))
    dets = render_detect(spec, detector, scene.T_cam_board, camera, seed=100)
    poses = {f"view_{i:03d}.png": T for i, T in enumerate(scene.T_base_gripper)}
    return scene, dets, poses
