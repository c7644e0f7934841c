from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.camera.base import CameraGroup
from drivers.camera.sim import SimCamera, SimCameraConfig, render
from drivers.errors import CameraError, CameraStalledError, ConfigError


def test_render_is_deterministic_and_changes_over_time():
    cfg = SimCameraConfig(width=96, height=64, seed=3)
    c0, d0 = render(cfg, 10)
    c1, d1 = render(SimCameraConfig(width=96, height=64, seed=3), 10)
    assert c0.shape == (64, 96, 3) and c0.dtype == np.uint8
    assert d0.shape == (64, 96) and d0.dtype == np.uint16
    np.testing.assert_array_equal(c0, c1)
    np.testing.assert_array_equal(d0, d1)
    assert (render(cfg, 20)[0] != c0).any(), "scene must move"
    assert (render(SimCameraConfig(width=96, height=64, seed=4), 10)[0] != c0).any(), "seed must matter"
    assert render(SimCameraConfig(width=96, height=64, depth=False), 0)[1] is None


def test_sim_camera_keep_all_in_order_and_identical_to_render():
    cfg = SimCameraConfig(width=64, height=48, real_time=False, serial="simA")
    with SimCamera(cfg) as cam:
        frames = [cam.read(timeout=2.0) for _ in range(12)]
    assert [f.frame_number for f in frames] == list(range(12))
    assert all(f.serial == "simA" for f in frames)
    ts = [f.timestamp for f in frames]
    assert ts == sorted(ts) and abs(ts[-1] - time.monotonic()) < 5
    np.testing.assert_array_equal(frames[7].color, render(cfg, 7)[0])


def test_sim_camera_real_time_rate_and_read_latest():
    cfg = SimCameraConfig(width=64, height=48, fps=50)
    with SimCamera(cfg) as cam:
        first = cam.read(timeout=1.0)
        t0 = time.monotonic()
        last = first
        for _ in range(10):
            last = cam.read(timeout=1.0)
        elapsed = time.monotonic() - t0
        assert last.frame_number > first.frame_number
        assert 0.12 < elapsed < 0.6, elapsed  # ~10 periods of 20 ms
        latest = cam.read_latest(max_age=0.1)
        assert latest.frame_number >= last.frame_number
        with pytest.raises(CameraStalledError, match="no frame younger"):
            cam.read_latest(max_age=1e-9)


def test_read_before_connect_and_bad_config():
    with pytest.raises(CameraError, match="connect"):
        SimCamera(SimCameraConfig()).read()
    with pytest.raises(ConfigError, match="fps"):
        SimCameraConfig(fps=0)
    with pytest.raises(ConfigError, match="unknown field.*colour"):
        SimCameraConfig.from_dict({"colour": 1})


def test_camera_group_reads_each_camera():
    cams = [SimCamera(SimCameraConfig(width=32, height=24, real_time=False, serial=f"s{i}", seed=i)) for i in range(2)]
    with CameraGroup(cams) as group:
        frames = group.read(timeout=2.0)
    assert set(frames) == {"s0", "s1"}
    assert (frames["s0"].color != frames["s1"].color).any()
