"""Every stop path of `imagewam-edge run` in its own process, against a simulated controller whose log says what each
servo really did: SIGTERM (systemd, docker stop), SIGHUP, a double Ctrl-C, Ctrl-C during set-up, a policy that emits
+-1e6 (a fault by default, counted when clipping is chosen), a dead host (SIGKILL: the Dynamixel bus watchdog stops
the arm), torque changes that reach every servo even when one does not answer, an unwritable dump directory."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.default import DEFAULT_CONFIG, default_engines_dir

ROOT = Path(__file__).resolve().parents[2]
IDS = list(range(1, 8))


def write_config(tmp_path: Path, port: str, **fault) -> Path:
    data = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    data["arms"][0]["port"] = port
    data["fault"] = {"torque": "hold", "torque_on_stop": "off", "dump_dir": str(tmp_path / "faults"), **fault}
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_run(tmp_path, cfg, default_cache, seconds=60):
    env = {**os.environ, "IMAGEWAM_EDGE_CACHE": str(default_cache), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg), "--seconds", str(seconds),
                             "--summary", str(tmp_path / "summary.json")], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(proc, text, timeout=60):
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if text in line or not line:
            break
    assert text in seen, seen
    return seen


def final_torque(sim, log):
    from drivers.arm.sim_log import read_sim_log

    sim.stop()
    return read_sim_log(str(log))


@pytest.fixture
def sim(tmp_path):
    from drivers.arm.sim import SimulatedController

    log = tmp_path / "sim.jsonl"
    s = SimulatedController("dynamixel", ids=IDS, log=str(log))
    s.start()
    s.log_path = log
    yield s
    s.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_safely_with_summary_and_exit_0(sig, sim, tmp_path, default_cache):
    proc = start_run(tmp_path, write_config(tmp_path, sim.port), default_cache)
    wait_for(proc, "running at")
    time.sleep(1.5)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    stop_s = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert stop_s < 10.0  # inside docker stop's 10 s grace
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stopped_by"] == signal.Signals(sig).name and s["fault"] is None and s["commands_sent"] > 50
    assert all(v == "off" for v in s["torque"][sim.port].values()), s["torque"]
    log = final_torque(sim, sim.log_path)
    assert log["torque"] == {i: False for i in IDS}  # the simulator's own word: every servo off


def test_second_ctrl_c_cannot_skip_the_torque_handling(sim, tmp_path, default_cache):
    proc = start_run(tmp_path, write_config(tmp_path, sim.port), default_cache)
    wait_for(proc, "running at")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    for _ in range(5):  # hammering Ctrl-C during the safe stop
        time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stopped_by"] == "SIGINT" and s["signals"] >= 1
    assert final_torque(sim, sim.log_path)["torque"] == {i: False for i in IDS}


def test_ctrl_c_during_setup_leaves_every_servo_in_the_stop_state(sim, tmp_path, default_cache):
    """Ctrl-C at a random moment of set-up (seeded): exit 0, a summary, and no servo left torqued."""
    rng = random.Random(7)
    proc = start_run(tmp_path, write_config(tmp_path, sim.port), default_cache)
    wait_for(proc, "loading the policy")
    time.sleep(rng.uniform(0.0, 0.6))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stopped_by"] == "SIGINT" and s["fault"] is None
    log = final_torque(sim, sim.log_path)
    assert not any(log["torque"].values()), log["torque"]


def test_out_of_range_policy_is_a_fault_and_clip_mode_counts(sim, tmp_path, default_cache):
    from edge.config import from_yaml
    from edge.engines import load_engine_policy
    from edge.runtime import run_config

    from bus_fault_harness import SharedPolicy

    class Wild(SharedPolicy):  # the real policy, its actions replaced by +-1e6
        def infer(self, obs, **kw):
            out = dict(super().infer(obs, **kw))
            out["actions"] = np.where(np.arange(out["actions"].shape[-1]) % 2, 1e6, -1e6) * np.ones_like(out["actions"])
            return out

    os.environ["IMAGEWAM_EDGE_CACHE"] = str(default_cache)
    policy = load_engine_policy(default_engines_dir())
    cfg = from_yaml(write_config(tmp_path, sim.port, torque_on_stop="hold"))
    s = run_config(cfg, seconds=3.0, policy=Wild(policy))
    assert s["stopped_by"] == "fault" and s["fault"].startswith("OutOfRangeError"), s["fault"]
    assert "safety.on_out_of_range" in s["fault"] and s["dump"]
    data = yaml.safe_load(Path(cfg.source).read_text())
    data["arms"][0]["safety"]["on_out_of_range"] = "clip"
    Path(cfg.source).write_text(yaml.safe_dump(data))
    s = run_config(from_yaml(cfg.source), seconds=2.0, policy=Wild(policy))
    assert s["fault"] is None and s["clipped_commands"] > 50
    log = final_torque(sim, sim.log_path)
    goals = np.concatenate([g for g in log["goals"].values()])
    lo, hi = 2048 - 1.5 * 4096 / (2 * np.pi), 2048 + 1.5 * 4096 / (2 * np.pi)
    assert np.isfinite(goals).all() and goals.min() >= lo - 1 and goals.max() <= hi + 1


def test_dead_host_trips_the_dynamixel_bus_watchdog(sim, tmp_path, default_cache):
    proc = start_run(tmp_path, write_config(tmp_path, sim.port), default_cache)
    wait_for(proc, "running at")
    time.sleep(1.0)
    proc.kill()  # the host dies: no safe stop at all
    proc.communicate(timeout=30)
    time.sleep(0.5)  # > the 100 ms watchdog
    log = final_torque(sim, sim.log_path)
    assert log["watchdog"] and set(log["watchdog"][0]["ids"]) == set(IDS), log["watchdog"]


def test_torque_off_reaches_every_servo_even_when_one_does_not_answer(sim):
    from drivers.arm.dynamixel import DynamixelConfig, DynamixelLink
    from drivers.errors import ArmLinkError

    good = DynamixelLink(DynamixelConfig(port=sim.port, ids=(1, 2, 3, 4))).connect()
    good.torque(True)
    good.disconnect(torque_off=False)
    link = DynamixelLink(DynamixelConfig(port=sim.port, ids=(1, 2, 42, 3, 4), timeout_s=0.02))  # 42: not there
    link.connect(check_ids=False)
    with pytest.raises(ArmLinkError, match=r"id\(s\) \[42\]"):
        link.torque(False)
    report = link.set_torque_all(False)
    assert report[42].startswith("unconfirmed") and all(report[i] == "off" for i in (1, 2, 3, 4)), report
    link.disconnect(torque_off=False)
    log = final_torque(sim, sim.log_path)
    assert [e["on"] for e in log["torque_events"] if e["id"] == 3][:1] == [True]  # it was on ...
    assert all(log["torque"][i] is False for i in (1, 2, 3, 4))  # ... and every answering servo is off now


def test_unwritable_dump_dir_is_refused_before_anything_moves(tmp_path):
    from edge.config import from_yaml
    from edge.errors import ConfigError
    from edge.runtime import run_config

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the dump directory should go")  # unwritable even for root
    cfg = from_yaml(write_config(tmp_path, "/dev/ttyUSB-none", dump_dir=str(blocker / "faults")))
    with pytest.raises(ConfigError, match="fault.dump_dir"):
        run_config(cfg, seconds=1.0)


@pytest.mark.parametrize("watchdog_ms,expected", [(0, "BusFaultError"), (100, "ArmLinkError")])
def test_a_dead_bus_at_the_loop_start_is_a_fault_with_a_dump(watchdog_ms, expected, sim, tmp_path, default_cache):
    """The loop's very first bus I/O is inside the fault path: a controller that froze between set-up and the loop
    gives a fault (the stale first read, or the bus watchdog that cannot be armed), a dump and a summary, not an
    escaping exception."""
    from edge.config import ArmConfig, FaultConfig, PolicyConfig, RatesConfig
    from edge.engines import load_engine_policy
    from edge.loop import ControlLoop, robot_policy
    from edge.runtime import make_link

    from drivers.arm.base import MultiArm
    from drivers.camera.sim import SimCamera, SimCameraConfig

    policy = load_engine_policy(default_engines_dir())
    ac = ArmConfig("dynamixel", sim.port, tuple(IDS), safety={"lower": -1.5, "upper": 1.5},
                   link={"watchdog_ms": watchdog_ms})
    arm = MultiArm([make_link(ac, sim.port, 0, "test")]).connect()
    cam = SimCamera(SimCameraConfig(width=64, height=64, depth=False)).connect()
    try:
        os.kill(sim.proc.pid, signal.SIGSTOP)
        robot = robot_policy(policy, PolicyConfig(engines="x"), len(IDS), policy.spec.state_dim, policy.spec.action_dim)
        loop = ControlLoop(robot, [cam], arm, "move to the red block", RatesConfig(control_hz=100),
                           fault=FaultConfig(dump_dir=str(tmp_path / "faults")))
        s = loop.run(seconds=2.0)
    finally:
        os.kill(sim.proc.pid, signal.SIGCONT)
        cam.disconnect()
        arm.disconnect()
    assert s["stopped_by"] == "fault" and s["fault"].startswith(expected) and s["steps"] == 0
    assert watchdog_ms == 0 or "bus watchdog" in s["fault"]
    info = json.loads(Path(s["dump"]).with_suffix(".json").read_text())
    assert info["type"] == expected
