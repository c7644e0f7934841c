"""The toy task's scene is an environment with a declared interface (edge.task.environment.Environment): the run
config declares it (a camera of kind `task`), the runtime calls it through the interface, and an object that lacks
a member is refused at start by name. A setup of real cameras has none."""
import dataclasses

import pytest

from edge.config import CONFIG_DIR, from_yaml
from edge.default import DEFAULT_CONFIG
from edge.errors import ConfigError


def _quick(cfg, tmp_path):
    """The embedded default's config with the dump directory in tmp_path and a reply timeout for a busy machine."""
    return dataclasses.replace(cfg, fault=dataclasses.replace(cfg.fault, dump_dir=str(tmp_path / "faults")),
                               arms=(dataclasses.replace(cfg.arms[0], link={"timeout_s": 0.2}),))


def test_the_task_camera_is_an_environment_and_real_cameras_declare_none():
    from edge.runtime import open_environment
    from edge.task.camera import TaskCamera
    from edge.task.environment import Environment, check_environment

    env = open_environment(from_yaml(DEFAULT_CONFIG))
    assert isinstance(env, TaskCamera) and isinstance(env, Environment) and env.camera is env
    assert check_environment(env, "here") is env
    assert open_environment(from_yaml(CONFIG_DIR / "libero_dynamixel_2rs.yaml")) is None  # RealSense: no environment


def test_the_runtime_drives_the_toy_environment_to_the_goal(tmp_path, monkeypatch):
    """run_config on the embedded default's config with the scripted expert as the policy: the runtime starts the
    environment's episode for the instruction, feeds it every joint state, and its status lands in the summary."""
    from edge import runtime
    from edge.task.evaluate import ExpertPolicy

    made = []

    def toy(device):  # the toy task's own maker; the test keeps the environment to give the expert its goal
        made.append(runtime._task_environment(device))
        return made[-1]

    monkeypatch.setitem(runtime.ENVIRONMENTS, "task", toy)
    cfg = _quick(from_yaml(DEFAULT_CONFIG), tmp_path)
    s = runtime.run_config(cfg, seconds=6.0, policy=ExpertPolicy(lambda: made[0].episode))
    assert s["fault"] is None and len(made) == 1
    task = s["task"]
    assert task["instruction"] == cfg.instruction and task["success"], task
    assert task["distance"] <= task["success_radius"]


class NoStatus:
    """A scene with a camera, a state hook and episodes, but no `status`."""

    def __init__(self, device):
        from edge.runtime import _task_environment

        self.camera = _task_environment(device)

    def observe_state(self, q):
        pass

    def start_for_instruction(self, instruction, q):
        return None


def test_an_environment_that_lacks_a_member_is_refused_at_start(tmp_path, monkeypatch):
    from edge import runtime
    from edge.task.environment import check_environment
    from edge.task.evaluate import ExpertPolicy

    monkeypatch.setitem(runtime.ENVIRONMENTS, "task", NoStatus)
    messages = []
    cfg = _quick(from_yaml(DEFAULT_CONFIG), tmp_path)
    with pytest.raises(ConfigError, match=r"default.yaml: `cameras\[0\]` \(kind task\): NoStatus .* lacks status"):
        runtime.run_config(cfg, seconds=1.0, policy=ExpertPolicy(lambda: None), progress=messages.append)
    assert not any("simulated" in m for m in messages), messages  # refused before the simulated arm was started
    with pytest.raises(ConfigError, match=r"lacks camera, observe_state, start_for_instruction, status"):
        check_environment(object(), "x")
