from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from calib.capture import ArmPoseSource, SimBoardRig, parse_pose_text, run_capture
from calib.dataset import read_poses, read_session
from calib.errors import CalibrationError, InputFileError
from calib.geometry import make_T, rodrigues, transform_delta


def test_sim_session_writes_views_poses_and_session(spec, tmp_path):
    rig = SimBoardRig(spec, n=8, mode="eye-in-hand", seed=3)
    res = run_capture(rig, rig, tmp_path / "v", spec, wait_for_operator=rig.advance, n_views=20, say=lambda m: None)
    assert res.saved == [f"view_{i:03d}.png" for i in range(8)] and not res.skipped
    poses = read_poses(tmp_path / "v" / "poses.json")
    for i, name in enumerate(res.saved):
        assert transform_delta(poses[name], rig.scene.T_base_gripper[i])[1] < 1e-6
    raw = json.loads((tmp_path / "v" / "poses.json").read_text())
    assert set(raw[0]) == {"image", "T_base_gripper"} and len(raw[0]["T_base_gripper"]) == 4
    s = read_session(tmp_path / "v")
    assert s["serial"] == "sim-board" and (s["width"], s["height"]) == (640, 480) and s["board"] == str(spec)
    with pytest.raises(InputFileError, match="already holds 8 views"):
        run_capture(rig, rig, tmp_path / "v", spec, wait_for_operator=lambda i: True)


@dataclass
class _Frame:
    color: np.ndarray
    serial: str = "x"


class _Scripted:
    """Frame + pose source replaying scripted (image, pose before, pose after) steps."""

    def __init__(self, steps):
        self.steps, self.i, self.k = steps, -1, 0

    def advance(self, attempt):
        self.i += 1
        self.k = 0
        return self.i < len(self.steps)

    def read(self):
        return _Frame(self.steps[self.i][0])

    def read_pose(self):
        T = self.steps[self.i][1 + min(self.k, 1)]
        self.k += 1
        return T


def test_unusable_moving_and_duplicate_views_are_skipped(spec, tmp_path):
    rig = SimBoardRig(spec, n=3, seed=4)
    imgs = []
    for _ in range(3):
        rig.advance()
        imgs.append((rig.read().color, rig.read_pose()))
    blank = np.full((480, 640, 3), 100, np.uint8)
    nudge = make_T(rodrigues([0, 0, 0.001]), [0.002, 0, 0])  # 2 mm, 0.06 deg
    steps = [
        (blank, imgs[0][1], imgs[0][1]),  # no board
        (imgs[0][0], imgs[0][1], imgs[0][1] @ make_T(np.eye(3), [0.01, 0, 0])),  # robot still moving
        (imgs[0][0], imgs[0][1], imgs[0][1]),  # saved
        (imgs[0][0], imgs[0][1] @ nudge, imgs[0][1] @ nudge),  # duplicate of view_000
        (imgs[1][0], imgs[1][1], imgs[1][1]),  # saved
    ]
    src = _Scripted(steps)
    msgs = []
    res = run_capture(src, src, tmp_path / "s", spec, wait_for_operator=src.advance, say=msgs.append)
    assert res.saved == ["view_000.png", "view_001.png"]
    assert [r for _, r in res.skipped] == ["board not found", "robot moving", "duplicate of view_000.png"]
    assert any("hold still" in m for m in msgs)


def test_pose_text_formats():
    T = make_T(rodrigues([0.1, -0.2, 0.3]), [0.4, 0.5, 0.6])
    assert np.allclose(parse_pose_text(" ".join(map(str, T.ravel()))), T)
    assert np.allclose(parse_pose_text("0.4, 0.5, 0.6, 0.1, -0.2, 0.3"), T)
    q = parse_pose_text("0.4 0.5 0.6 0 0 0.7071068 0.7071068")  # 90 deg about z
    assert np.allclose(q[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    with pytest.raises(InputFileError, match="has 3 numbers"):
        parse_pose_text("1 2 3")


def test_arm_adapter():
    T = make_T(rodrigues([0.1, 0, 0]), [0.1, 0.2, 0.3])

    class PoseArm:
        def read_state(self):
            return {"q": [0.0] * 6, "T_base_gripper": T.tolist()}

    class JointArm:
        def read_state(self):
            return {"q": [0.0] * 6}

    assert np.allclose(ArmPoseSource(PoseArm()).read_pose(), T)
    with pytest.raises(CalibrationError, match="joint angles only.*--pose-cmd"):
        ArmPoseSource(JointArm()).read_pose()
