"""The action re-mapping is a policy output transform (edge.transforms.JointMap, declared in the run config's
`policy` section): policy actions -> joint commands in robot units, mapped, scaled and checked once; the control
loop streams what comes out, within the arm's safety limits, and does not map again."""
import numpy as np
import pytest

from edge.errors import ConfigError, PolicyOutputError
from edge.transforms import POSTPROCESS, JointMap, get_canvas, get_embodiment


def test_action_dims_reach_the_declared_joints_in_arm_order_scaled_and_offset():
    m = JointMap(n_joints=3, state_dim=2, action_dim=4, state_indices=(2, 0), action_indices=(3, 1, 0),
                 scale=(1.0, 2.0, -0.5), offset=(0.0, 0.1, 0.25))
    actions = np.array([[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]])  # [H=2, Da=4]
    q = m.commands(actions, q_obs=np.zeros(3))
    assert q.shape == (2, 3) and q.dtype == np.float64
    np.testing.assert_allclose(q, [[13.0, 2 * 11.0 + 0.1, -0.5 * 10.0 + 0.25],
                                   [23.0, 2 * 21.0 + 0.1, -0.5 * 20.0 + 0.25]])
    np.testing.assert_array_equal(m.state([0.1, 0.2, 0.3]), [0.3, 0.1])  # the input side: joints -> policy state


def test_the_defaults_keep_every_action_on_its_joint():
    m = JointMap(n_joints=7, state_dim=7, action_dim=7)
    a = np.arange(14, dtype=np.float32).reshape(2, 7) / 10
    np.testing.assert_array_equal(m.commands(a, np.ones(7)), a.astype(np.float64))
    np.testing.assert_array_equal(m.state(np.arange(7.0)), np.arange(7.0))


def test_delta_actions_are_added_to_the_joints_the_observation_saw():
    m = JointMap(n_joints=2, state_dim=2, action_dim=2, mode="delta", scale=0.5)
    q = m.commands(np.array([[0.2, -0.2], [0.4, -0.4]]), q_obs=np.array([1.0, 2.0]))
    np.testing.assert_allclose(q, [[1.1, 1.9], [1.2, 1.8]])


def test_a_libero_gripper_lands_on_the_robots_gripper_units_after_the_post_processing():
    """Order of the output side: un-normalised actions -> the embodiment's post-processing (LIBERO: the gripper
    binarised to -1 open / +1 closed) -> the joint map (gripper joint 0 open .. 1 closed: scale 0.5, offset 0.5)."""
    post = POSTPROCESS[get_embodiment("libero").postprocess]
    m = JointMap(n_joints=7, state_dim=8, action_dim=7, state_indices=(0, 1, 2, 3, 4, 5, 6, 6),
                 scale=(1, 1, 1, 1, 1, 1, 0.5), offset=(0, 0, 0, 0, 0, 0, 0.5))
    raw = np.zeros((2, 7), dtype=np.float32)
    raw[:, :6] = 0.3
    raw[0, 6], raw[1, 6] = 0.9, 0.1  # the policy's gripper: 0.9 -> open (-1), 0.1 -> closed (+1)
    q = m.commands(post(raw), np.zeros(7))
    np.testing.assert_allclose(q[:, :6], 0.3, rtol=1e-6)
    assert q[0, 6] == 0.0 and q[1, 6] == 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_are_refused_once_with_where_they_are(bad):
    m = JointMap(n_joints=3, state_dim=3, action_dim=3)
    a = np.zeros((4, 3))
    a[2, 1] = bad
    with pytest.raises(PolicyOutputError, match=r"non-finite actions .* step 2, dim 1"):
        m.commands(a, np.zeros(3))
    with pytest.raises(PolicyOutputError, match=r"shape \(4, 2\).*\[horizon, 3\]"):
        m.commands(np.zeros((4, 2)), np.zeros(3))


def test_a_mapping_that_does_not_fit_the_model_or_the_arms_names_the_config_field():
    with pytest.raises(ConfigError, match=r"robot.yaml: field `policy.action_indices`.*7 action dims.*6 joints"):
        JointMap(n_joints=6, state_dim=6, action_dim=7, source="robot.yaml")
    with pytest.raises(ConfigError, match=r"`policy.action_indices`.*index \(< 7\)"):
        JointMap(n_joints=2, state_dim=2, action_dim=7, state_indices=(0, 1), action_indices=(0, 7))
    with pytest.raises(ConfigError, match=r"`policy.state_indices`.*state of 3 values.*2 joints"):
        JointMap(n_joints=2, state_dim=3, action_dim=2)
    with pytest.raises(ConfigError, match=r"`policy.action_scale`.*list of 2"):
        JointMap(n_joints=2, state_dim=2, action_dim=2, scale=(1.0, 2.0, 3.0))
    with pytest.raises(ConfigError, match=r"`policy.action_offset`.*finite"):
        JointMap(n_joints=2, state_dim=2, action_dim=2, offset=float("nan"))
    with pytest.raises(ConfigError, match=r"`policy.action_mode`"):
        JointMap(n_joints=2, state_dim=2, action_dim=2, mode="velocity")


class ConstantPolicy:
    """The policy contract with a fixed chunk in the policy's own action space (dims in the policy's order); it
    keeps the states it was given."""

    def __init__(self, actions: np.ndarray, state_dim: int):
        self.actions = np.asarray(actions, dtype=np.float32)
        self.spec = type("Spec", (), {"state_dim": state_dim, "action_dim": self.actions.shape[1]})()
        self.canvas, self.embodiment = get_canvas("sim"), get_embodiment("sim")
        self.states: list = []

    def text(self, instruction):
        return None

    def infer(self, obs, **kw):
        self.states.append(np.asarray(obs["state"]).copy())
        return {"actions": self.actions.copy(), "timings_ms": {"total": 0.1}, "step_ms": []}


def _config(tmp_path, **policy):
    """A run config: one simulated 7-joint Dynamixel arm, one simulated camera, the policy section given."""
    return {"instruction": "hold the pose", "policy": {"engines": "x", **policy},
            "cameras": [{"kind": "sim", "slot": "main", "width": 64, "height": 64, "depth": False}],
            "arms": [{"protocol": "dynamixel", "port": "@sim", "ids": [1, 2, 3, 4, 5, 6, 7],
                      "safety": {"lower": -1.5, "upper": 1.5, "max_velocity": 1.5, "max_step": 0.1},
                      "link": {"timeout_s": 0.2}}],
            "rates": {"control_hz": 100, "action_hz": 10},
            "fault": {"dump_dir": str(tmp_path / "faults"), "max_stale_s": 0.5}}


def test_the_run_config_declares_the_mapping_and_a_bad_one_is_named(tmp_path):
    from edge.config import from_dict
    from edge.loop import robot_policy

    gripper = {"action_scale": [1, 1, 1, 1, 1, 1, 0.5], "action_offset": [0, 0, 0, 0, 0, 0, 0.5]}
    cfg = from_dict(_config(tmp_path, **gripper), "robot.yaml", tmp_path)
    chunk = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, -1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0]])
    robot = robot_policy(ConstantPolicy(chunk, 7), cfg.policy, 7, 7, 7, cfg.source)
    out = robot.infer({"images": [np.zeros((64, 64, 3), np.uint8)], "joints": np.zeros(7), "instruction": "x"})
    np.testing.assert_allclose(out["joints"][:, 6], [0.0, 1.0])
    np.testing.assert_allclose(out["actions"], chunk.astype(np.float32))  # the policy's own, as recorded
    plain = from_dict(_config(tmp_path), "robot.yaml", tmp_path)  # without the keys: each action on its joint
    np.testing.assert_allclose(robot_policy(ConstantPolicy(chunk, 7), plain.policy, 7, 7, 7).infer(
        {"images": [], "joints": np.zeros(7), "instruction": "x"})["joints"], chunk)
    short = from_dict(_config(tmp_path, action_scale=[1.0, 2.0]), "robot.yaml", tmp_path)
    with pytest.raises(ConfigError, match=r"robot.yaml: field `policy.action_scale` .* list of 7"):
        robot_policy(ConstantPolicy(chunk, 7), short.policy, 7, 7, 7, short.source)
    with pytest.raises(ConfigError, match=r"policy.action_offset"):
        from_dict(_config(tmp_path, action_offset="half"), "robot.yaml", tmp_path)


def test_a_declared_mapping_reaches_the_simulated_arm_once(tmp_path):
    """run --config with `policy.action_indices` (reversed), `state_indices`, `action_scale` and `action_offset`: a
    constant chunk drives the simulated Dynamixel arm (its own process, on a pty) to the mapped joint targets. Were
    the mapping applied twice, the reversal would undo itself and the scale and offset would double."""
    from edge.config import from_dict
    from edge.recording import iter_observations
    from edge.runtime import run_config

    target = np.array([0.30, -0.20, 0.10, 0.0, -0.10, 0.20, -0.30])  # what each joint (arm order) must reach
    scale, offset = 2.0, 0.05
    actions_for_joints = (target - offset) / scale
    policy_actions = np.repeat(actions_for_joints[::-1][None], 16, 0)  # the policy emits the dims reversed
    data = _config(tmp_path, action_indices=[6, 5, 4, 3, 2, 1, 0], state_indices=[1, 0], action_scale=scale,
                   action_offset=offset)
    cfg = from_dict(data, "robot.yaml", tmp_path)
    policy = ConstantPolicy(policy_actions, state_dim=2)
    s = run_config(cfg, seconds=3.0, record=str(tmp_path / "rec"), policy=policy)
    assert s["fault"] is None and s["stopped_by"] == "time", s["fault"]
    assert "task" not in s  # sim cameras declare no environment
    obs = list(iter_observations(tmp_path / "rec"))
    assert obs and all(o.state.shape == (2,) for o in obs)  # the policy saw joints 1 and 0 only
    np.testing.assert_allclose(obs[0].actions, policy_actions, rtol=1e-6)  # recorded in the policy's own space
    step = sorted((tmp_path / "rec").glob("episode_*/step_*.npz"))[-1]
    with np.load(step) as d:
        sent = d["sent"]
    np.testing.assert_allclose(sent, target, atol=0.01)  # the arm was commanded to the mapped targets
    last_state = obs[-1].state  # joints 1 and 0 of the arm, read back from the simulated controller
    np.testing.assert_allclose(last_state, target[[1, 0]], atol=0.02)
