"""The control loop with simulated devices: a simulated camera (capture thread) and a simulated Dynamixel controller in
its own process on a pty, the embedded default's engines through onnxruntime. Policies are wrapped (slow, NaN,
stuck) to make the loop hold or fault; the loop itself is never replaced."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import ChunkingConfig, FaultConfig, PolicyConfig, RatesConfig, from_yaml
from edge.default import DEFAULT_CONFIG, DEFAULT_INSTRUCTION

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy(sim_engines):
    from edge.engines import load_engine_policy

    return load_engine_policy(sim_engines)


def test_loop_commands_the_simulated_arm_and_records(sim_engines, tmp_path):
    from edge.recording import iter_observations, read_session
    from edge.runtime import run_config

    cfg = from_yaml(DEFAULT_CONFIG)
    cfg = dataclasses.replace(cfg, fault=dataclasses.replace(cfg.fault, dump_dir=str(tmp_path / "faults")))
    s = run_config(cfg, seconds=4.0, record=str(tmp_path / "rec"))
    assert s["fault"] is None and s["stopped_by"] == "time"
    assert 300 <= s["steps"] <= 410 and s["commands_sent"] == s["steps"]  # 100 Hz for 4 s
    assert s["chunks"] >= 4  # replanned several times
    assert s["arm_travel_max"] > 0.05  # the simulated controller reports the arm moved
    for key in ("inference", "vision_encoder", "prefill", "denoise", "denoise_step", "tick", "serial_write"):
        assert set(s["latency_ms"][key]) == {"p50", "p90", "p99"}
    c2s = s["camera_to_serial_ms"]
    assert c2s["p50"] is not None and c2s["p50"] > s["latency_ms"]["inference"]["p50"]  # frame -> wire includes inference
    assert s["overruns"] <= s["steps"] // 4
    # the recording is in the documented format, with the command actually sent
    session = read_session(tmp_path / "rec")
    assert session["canvas"] == "sim" and session["state_dim"] == 7
    obs = list(iter_observations(tmp_path / "rec"))
    assert len(obs) >= 3 and obs[0].instruction == DEFAULT_INSTRUCTION
    assert obs[0].images[0].shape == (64, 64, 3) and obs[0].actions.shape == (16, 7)  # the task camera
    with np.load(sorted((tmp_path / "rec").glob("episode_*/step_*.npz"))[0]) as step:
        assert step["sent"].shape == (7,) and np.all(np.abs(step["sent"]) <= 1.5 + 1e-6)  # within the safety limits


class _Devices:
    """The embedded default's devices, opened directly (to inspect the loop object itself)."""

    def __init__(self, protocol="dynamixel"):
        from drivers.arm.base import MultiArm
        from drivers.arm.sim import SimulatedController
        from drivers.camera.sim import SimCamera, SimCameraConfig
        from edge.config import ArmConfig
        from edge.runtime import make_link

        self.sim = SimulatedController(protocol, ids=list(range(1, 8)))
        port = self.sim.start()
        ac = ArmConfig(protocol, port, tuple(range(1, 8)), safety={"lower": -1.5, "upper": 1.5, "max_velocity": 1.5,
                                                                     "max_step": 0.1})
        self.arm = MultiArm([make_link(ac, port, 0, "test")]).connect()
        for link in self.arm.links:
            link.torque(True)
        self.camera = SimCamera(SimCameraConfig(width=320, height=240, depth=False)).connect()

    def close(self):
        self.camera.disconnect()
        try:
            self.arm.disconnect()
        except Exception:
            pass
        self.sim.stop()


@pytest.fixture
def devices():
    d = _Devices()
    yield d
    d.close()


class SlowAfter:
    """Wraps a policy: after `fast` calls every call takes `delay` s longer (an inference stall)."""

    def __init__(self, policy, fast, delay, fn=None):
        self.policy, self.fast, self.delay, self.fn, self.calls = policy, fast, delay, fn, 0
        self.spec, self.canvas, self.embodiment = policy.spec, policy.canvas, policy.embodiment

    def infer(self, obs, **kw):
        self.calls += 1
        out = self.policy.infer(obs, **kw)
        if self.calls > self.fast:
            time.sleep(self.delay)
            if self.fn:
                out = self.fn(out)
        return out


def make_loop(policy, devices, tmp_path, **fault):
    from edge.loop import ControlLoop, robot_policy

    robot = robot_policy(policy, PolicyConfig(engines="x"), 7, policy.spec.state_dim, policy.spec.action_dim)
    return ControlLoop(robot, [devices.camera], devices.arm, DEFAULT_INSTRUCTION,
                       RatesConfig(control_hz=100, action_hz=10), ChunkingConfig(blend_s=0.1),
                       FaultConfig(dump_dir=str(tmp_path / "faults"), **fault))


def test_hold_when_inference_stalls(policy, devices, tmp_path):
    loop = make_loop(SlowAfter(policy, fast=2, delay=2.2), devices, tmp_path, inference_timeout_s=5.0)
    s = loop.run(seconds=4.0)
    assert s["fault"] is None
    # the chunk (16 actions at 10 Hz = 1.6 s) runs out during the 2.2 s stall: the loop holds
    assert s["hold_ticks"] > 30, s
    hist = list(loop.history)
    holds = [k for k in range(1, len(hist)) if hist[k][3]]
    assert holds
    # holding = the last command again, through the same safety clip (it may only move toward the present
    # position by one velocity step while the arm catches up), so the held command settles and stays constant
    for k in holds:
        assert np.max(np.abs(hist[k][2] - hist[k - 1][2])) <= 1.5 * 0.01 + 1e-3
    run = [k for k in holds if k - 20 in holds and all(j in holds for j in range(k - 20, k))]
    assert run, "no 20 consecutive hold ticks"
    k = run[-1]
    assert all(np.array_equal(hist[j][2], hist[k][2]) for j in range(k - 10, k))
    assert s["commands_sent"] == s["steps"]  # the stream never stopped


def test_fault_when_the_controller_dies_holds_and_dumps(policy, devices, tmp_path):
    loop = make_loop(policy, devices, tmp_path)
    threading.Timer(1.5, devices.sim.kill).start()
    s = loop.run(seconds=6.0)
    # the pty closing (PortClosedError) or, on a loaded machine, the state going stale first (BusFaultError): either
    # way the dead controller is a fault within the staleness budget, never a run that goes on
    assert s["stopped_by"] == "fault" and ("PortClosedError" in s["fault"] or "BusFaultError" in s["fault"]), s["fault"]
    assert s["duration_s"] < 4.0
    dump = Path(s["dump"])
    with np.load(dump) as d:
        assert d["state"].shape[1] == 7 and d["command"].shape == d["state"].shape
        assert d["t"][-1] - d["t"][0] > 1.0  # the last seconds before the fault
    info = json.loads(dump.with_suffix(".json").read_text())
    assert "dynamixel" in info["reason"] and info["last_command"] is not None and info["torque"] == "hold"


def test_fault_on_a_nan_command_sends_nothing_bad(policy, devices, tmp_path):
    def nan(out):
        out = dict(out)
        out["actions"] = np.full_like(out["actions"], np.nan)
        return out

    loop = make_loop(SlowAfter(policy, fast=1, delay=0.0, fn=nan), devices, tmp_path, torque="off")
    s = loop.run(seconds=5.0)
    # refused by the policy's output transform (edge.transforms.JointMap), before the chunk reaches the loop
    assert s["stopped_by"] == "fault" and "PolicyOutputError" in s["fault"] and "non-finite" in s["fault"]
    sent = np.array([h[2] for h in loop.history])
    assert np.isfinite(sent).all()
    assert Path(s["dump"]).exists()


def test_fault_when_inference_never_returns(policy, devices, tmp_path):
    loop = make_loop(SlowAfter(policy, fast=1, delay=30.0), devices, tmp_path, inference_timeout_s=0.5)
    t0 = time.monotonic()
    s = loop.run(seconds=10.0)
    assert s["stopped_by"] == "fault" and "no action chunk" in s["fault"]
    assert time.monotonic() - t0 < 5.0


def test_sigint_safe_stop_without_torch(default_cache, tmp_path):
    """The on-device path (`run` with engines) in its own process: no torch import; Ctrl-C stops it cleanly."""
    summary = tmp_path / "summary.json"
    code = ("import sys, json; from edge.cli import main; rc = main(['run', '--seconds', '60', '--summary', sys.argv[1]]);"
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'ort': 'onnxruntime' in sys.modules}))")
    env = {**os.environ, "IMAGEWAM_EDGE_CACHE": str(default_cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(summary)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "running at" in line or not line:
            break
    assert "running at" in seen, seen
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"rc": 0, "torch": False, "ort": True}, (out, err)
    s = json.loads(summary.read_text())
    assert s["stopped_by"] == "SIGINT" and s["fault"] is None and s["commands_sent"] > 100
    assert {"steps", "chunks", "commands_sent", "overruns", "latency_ms", "camera_to_serial_ms"} <= set(s)
