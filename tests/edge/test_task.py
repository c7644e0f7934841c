"""The toy task (edge/task): seeded episodes, rendering, the scripted expert, success tracking, the task camera, and
the expert through the real control loop. No torch."""
import json
import time

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.task.world import (TASK, SuccessTracker, end_effector, expert_chunk, goal_of, instructions, make_episode,
                             render, rollout)


def test_episodes_are_a_pure_function_of_the_seed():
    a, b, c = make_episode(7), make_episode(7), make_episode(8)
    assert np.array_equal(a.blocks, b.blocks) and np.array_equal(a.start, b.start) and a.goal == b.goal
    assert not np.array_equal(a.blocks, c.blocks)
    assert np.array_equal(render(a, a.start), render(b, b.start))  # same pixels
    assert render(a, a.start).shape == (64, 64, 3) and render(a, a.start).dtype == np.uint8
    goals = set()
    for s in range(200):
        ep = make_episode(s)
        goals.add(ep.goal)
        d = np.linalg.norm(ep.blocks[:, None] - ep.blocks[None], axis=-1)[np.triu_indices(3, 1)]
        assert d.min() >= TASK.min_separation and np.linalg.norm(ep.blocks - ep.start, axis=1).min() >= TASK.min_separation
        assert np.all(np.abs(ep.blocks) <= TASK.workspace) and ep.instruction in instructions()
    assert goals == {"red", "green", "blue"}


def test_render_shows_the_end_effector_and_the_blocks_where_they_are():
    ep = make_episode(3)
    img = render(ep, np.array([0.0, 0.0]))
    moved = render(ep, np.array([0.5, -0.5]))
    assert not np.array_equal(img, moved)
    # pixel of a block centre has the block's colour; the end effector is dark at the image centre
    from edge.task.world import COLORS

    for (x, y), name in zip(ep.blocks, ep.colors):
        col, row = int((x + TASK.view) / (2 * TASK.view) * 64), int((TASK.view - y) / (2 * TASK.view) * 64)
        if np.linalg.norm(np.array([x, y])) > 0.3:  # not under the end effector
            assert np.abs(img[row, col].astype(int) - COLORS[name]).max() <= 2
    assert img[32, 32].max() < 60


def test_expert_chunk_moves_at_the_expert_speed_to_the_goal_and_holds_the_other_joints():
    ep = make_episode(5)
    q = ep.start_joints()
    q[2:] = 0.3
    chunk = expert_chunk(ep, q)
    assert chunk.shape == (TASK.horizon, 7)
    steps = np.diff(np.vstack([q, chunk]), axis=0)
    assert np.all(np.linalg.norm(steps[:, :2], axis=1) <= TASK.expert_speed + 1e-9)
    assert np.allclose(chunk[-1, 2:], 0.0)  # 0.3 / 0.08 < 16 steps
    d0 = np.linalg.norm(q[:2] - ep.target)
    assert np.linalg.norm(chunk[-1, :2] - ep.target) == pytest.approx(max(0.0, d0 - TASK.horizon * TASK.expert_speed), abs=1e-9)


def test_success_needs_the_hold():
    ep = make_episode(1)
    tr = SuccessTracker(ep, hold=3)
    far, near = ep.target + 0.5, ep.target + 0.05
    assert [tr.update(p) for p in (near, near, far, near, near)] == [False] * 5  # interrupted run
    assert tr.update(near) and tr.success_at == 5
    assert tr.update(far)  # latched


def test_the_expert_solves_every_episode_kinematically():
    from edge.task.evaluate import evaluate_kinematic

    s = evaluate_kinematic(None, episodes=100, seed=0)
    assert s["success_rate"] == 1.0 and s["episodes"] == 100
    assert 0.5 < s["mean_episode_s"] < 3.0


def test_a_policy_that_does_not_move_fails():
    ep = make_episode(2)
    r = rollout(lambda img, q, text: np.repeat(q[None], 16, 0), ep)
    assert not r["success"] and r["steps"] == TASK.max_steps


def test_goal_of_refuses_unknown_instructions():
    assert goal_of("move to the green block") == "green"
    with pytest.raises(ConfigError, match="move to the red block"):
        goal_of("pick up the red block")


def test_task_camera_renders_the_observed_state_and_reports_success():
    from edge.task.camera import TaskCamera, TaskCameraConfig

    with pytest.raises(ConfigError, match="unknown field"):
        TaskCameraConfig.from_dict({"depth": True})
    cam = TaskCamera(TaskCameraConfig(fps=60)).connect()
    try:
        ep = cam.start_for_instruction("move to the blue block", np.zeros(7))
        assert ep.goal == "blue" and np.allclose(ep.start, 0)
        f = cam.read(timeout=1.0)
        assert f.color.shape == (64, 64, 3) and np.array_equal(f.color, render(ep, np.zeros(2)))
        assert not cam.done.is_set()
        q = np.zeros(7)
        q[:2] = ep.target
        cam.observe_state(q)
        assert cam.done.wait(2.0)
        st = cam.status()
        assert st["success"] and st["distance"] < 1e-9 and st["instruction"] == "move to the blue block"
        assert np.array_equal(cam.read(timeout=1.0).color, render(ep, ep.target))
    finally:
        cam.disconnect()


def test_task_camera_kind_in_the_run_config(tmp_path):
    from edge.config import from_dict, from_yaml
    from edge.default import DEFAULT_CONFIG

    cfg = from_yaml(DEFAULT_CONFIG)
    assert cfg.cameras[0].kind == "task" and cfg.instruction in instructions()
    bad = {"instruction": "x", "policy": {"engines": "e"}, "arms": [{"protocol": "dynamixel", "port": "/dev/null", "ids": [1]}],
           "cameras": [{"kind": "task", "slot": "main", "fps": 0}]}
    with pytest.raises(ConfigError, match=r"cameras\[0\].*fps"):
        from_dict(bad, "t.yaml", tmp_path)


def test_the_expert_through_the_real_control_loop(tmp_path):
    """Scripted expert as the loop's policy: task camera, simulated Dynamixel process on a pty, chunk scheduling."""
    from edge.task.evaluate import evaluate

    t = time.monotonic()
    s = evaluate(None, episodes=3, seed=0, fault_dir=str(tmp_path / "faults"))
    assert s["mode"] == "closed-loop" and s["successes"] == 3, s
    assert all(r["fault"] is None and r["chunks"] >= 1 for r in s["results"])
    assert all(r["seconds"] < TASK.max_seconds for r in s["results"])
    assert time.monotonic() - t < 60


def test_eval_cli_expert_kinematic_json(tmp_path, capsys):
    from edge.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--expert", "--kinematic", "--episodes", "20", "--seed", "100", "--report", str(out)]) == 0
    assert "success 20/20" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["success_rate"] == 1.0 and [r["seed"] for r in data["results"]] == list(range(100, 120))
    assert main(["eval", "--episodes", "2"]) == 1  # needs a policy: a typed error, no traceback
    assert "exactly one of" in capsys.readouterr().err
