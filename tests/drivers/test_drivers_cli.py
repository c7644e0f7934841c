from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from drivers.arm.sim import SimulatedController
from edge.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech", "framed"])
def test_arm_check_json(protocol, capsys):
    with SimulatedController(protocol, ids=[1, 2, 3]) as port:
        rc = main(["arm", "check", "--protocol", protocol, "--port", port, "--ids", "1,2,3", "-n", "20", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["ids"] == [1, 2, 3]
    assert out["present"] == ([2048] * 3 if protocol != "framed" else [0] * 3)
    assert 0 < out["rtt_ms"]["p50"] <= out["rtt_ms"]["p99"] < 100


def test_arm_check_missing_port_is_a_clear_error(capsys):
    rc = main(["arm", "check", "--protocol", "dynamixel", "--port", "/dev/does-not-exist", "--ids", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "/dev/does-not-exist" in err and "Traceback" not in err


def test_arm_sim_command_prints_port_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "arm", "sim", "--protocol", "feetech", "--ids", "4,5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT ")
        port = line.split()[1]
        from drivers.arm.feetech import FeetechConfig, FeetechLink
        with FeetechLink(FeetechConfig(port=port, ids=(4, 5), timeout_s=0.5)) as link:  # a simulator on a busy machine
            assert link.read_state().raw.tolist() == [2048, 2048]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_camera_info_on_a_recording(tmp_path, capsys):
    pytest.importorskip("pyrealsense2")
    from drivers.camera.base import Intrinsics
    from drivers.camera.recording import write_synthetic_recording

    k = Intrinsics(32, 24, 30.0, 31.0, 15.5, 11.5, "brown_conrady", (0.0,) * 5)
    colors = [np.full((24, 32, 3), i, np.uint8) for i in range(7)]
    depths = [np.full((24, 32), 500 + i, np.uint16) for i in range(7)]
    path = write_synthetic_recording(str(tmp_path / "r.db3"), colors, depths, color_intrinsics=k, depth_scale=0.00025,
                                     serial="42")
    assert main(["camera", "info", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["serial"] == "42" and out["depth_scale"] == pytest.approx(0.00025)
    by = {s["type"]: s for s in out["streams"]}
    assert by["color"]["frames"] == 7 and by["depth"]["frames"] == 7
    assert by["color"]["intrinsics"]["fx"] == 30.0 and by["color"]["format"] == "rgb8"
    assert main(["camera", "info", path]) == 0
    assert "7 frames" in capsys.readouterr().out


def test_camera_record_without_camera(tmp_path, capsys):
    rs = pytest.importorskip("pyrealsense2")
    if rs.context().query_devices().size() > 0:
        pytest.skip("a camera is connected")
    rc = main(["camera", "record", "--out", str(tmp_path / "x.db3"), "--seconds", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "no RealSense camera is connected" in err


@pytest.mark.parametrize("argv", [["camera", "info"], ["camera", "record"], ["arm", "sim"], ["arm", "check"]])
def test_every_help_has_an_example(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    assert "example" in capsys.readouterr().out
