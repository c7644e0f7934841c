"""RealSense driver against recordings made here with pyrealsense2's software device (no camera needed)."""
from __future__ import annotations

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from drivers.camera.base import CameraGroup, Intrinsics  # noqa: E402
from drivers.camera.realsense import RealSenseCamera, RealSenseConfig, recording_streams  # noqa: E402
from drivers.camera.recording import record_live, write_synthetic_recording  # noqa: E402
from drivers.errors import CameraError, CameraNotFoundError, ConfigError, RecordingEndedError  # noqa: E402

W, H, N = 64, 48, 12
COLOR_K = Intrinsics(W, H, 50.0, 51.0, 31.5, 23.5, "brown_conrady", (0.125, 0.0625, 0.0, 0.0, 0.0))
DEPTH_K = Intrinsics(W, H, 40.0, 41.0, 32.0, 24.0, "brown_conrady", (0.0, 0.0, 0.0, 0.0, 0.0))


def _frames(seed):
    rng = np.random.default_rng(seed)
    colors = [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8) for _ in range(N)]
    depths = [rng.integers(300, 4000, size=(H, W), dtype=np.uint16) for _ in range(N)]
    return colors, depths


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rs") / "synthetic.db3"
    colors, depths = _frames(0)
    write_synthetic_recording(str(path), colors, depths, color_intrinsics=COLOR_K, depth_intrinsics=DEPTH_K,
                              depth_scale=0.0001, serial="123456789")
    return str(path), colors, depths


def test_librealsense_259_writes_db3_only(tmp_path):
    dev = rs.software_device()
    with pytest.raises(RuntimeError, match="db3"):
        rs.recorder(str(tmp_path / "x.bag"), dev)


def test_playback_pixel_exact_in_order_with_intrinsics_and_depth_scale(recording):
    path, colors, depths = recording
    cfg = RealSenseConfig(width=W, height=H, fps=30, playback_file=path, align=False)
    with RealSenseCamera(cfg) as cam:
        frames = [cam.read(timeout=2.0) for _ in range(N)]
        with pytest.raises(RecordingEndedError, match="ended"):
            cam.read(timeout=2.0)
        assert cam.serial == "123456789"
        assert cam.intrinsics == COLOR_K
        assert cam.depth_intrinsics == DEPTH_K
        assert cam.depth_scale == pytest.approx(0.0001, rel=1e-6)
        np.testing.assert_allclose(cam.depth_to_color.translation, [0.015, 0, 0], atol=1e-7)
        np.testing.assert_allclose(cam.depth_to_color.rotation, np.eye(3))
    assert [f.frame_number for f in frames] == list(range(N))
    for f, c, d in zip(frames, colors, depths):
        assert f.color.dtype == np.uint8 and f.color.shape == (H, W, 3)
        np.testing.assert_array_equal(f.color, c)
        np.testing.assert_array_equal(f.depth, d)
        assert f.serial == "123456789"
    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)


def test_playback_aligned_depth_has_color_geometry(recording):
    path, colors, depths = recording
    cfg = RealSenseConfig(width=W, height=H, fps=30, playback_file=path, align=True)
    with RealSenseCamera(cfg) as cam:
        f = cam.read(timeout=2.0)
    assert f.frame_number == 0
    assert f.depth.shape == (H, W) and f.depth.dtype == np.uint16
    np.testing.assert_array_equal(f.color, colors[0])
    assert (f.depth > 0).mean() > 0.3  # reprojected through the intrinsics: most pixels land somewhere


def test_recording_end_is_a_stall_and_reconnect_restarts(recording):
    path, colors, _ = recording
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, playback_file=path, depth=False))
    with cam:
        for _ in range(N):
            cam.read(timeout=2.0)
        with pytest.raises(RecordingEndedError, match="reconnect"):
            cam.read(timeout=2.0)
        cam.reconnect()
        again = cam.read(timeout=2.0)
        assert again.frame_number == 0
        np.testing.assert_array_equal(again.color, colors[0])


def test_two_recordings_at_once(recording, tmp_path):
    path, colors, _ = recording
    colors2, depths2 = _frames(1)
    path2 = write_synthetic_recording(str(tmp_path / "second.db3"), colors2, depths2, color_intrinsics=COLOR_K,
                                      serial="987654321")
    cams = [RealSenseCamera(RealSenseConfig(width=W, height=H, playback_file=p, depth=False)) for p in (path, path2)]
    with CameraGroup(cams) as group:
        for n in range(3):
            frames = group.read(timeout=2.0)
            np.testing.assert_array_equal(frames["123456789"].color, colors[n])
            np.testing.assert_array_equal(frames["987654321"].color, colors2[n])


def test_wrong_request_names_the_recording(recording):
    path, _, _ = recording
    with pytest.raises(CameraError, match="request exactly the recorded streams"):
        RealSenseCamera(RealSenseConfig(width=640, height=480, playback_file=path)).connect()


def test_recording_streams_lists_what_was_recorded(recording):
    streams = recording_streams(recording[0])
    by_type = {s["type"]: s for s in streams}
    assert by_type["color"]["format"] == "rgb8" and by_type["color"]["width"] == W
    assert by_type["depth"]["format"] == "z16"
    assert by_type["color"]["intrinsics"]["fx"] == pytest.approx(50.0)


def test_config_validation_names_fields(tmp_path):
    with pytest.raises(ConfigError, match="color_format"):
        RealSenseConfig(color_format="yuyv")
    with pytest.raises(ConfigError, match="unknown field.*fsp"):
        RealSenseConfig.from_dict({"fsp": 30})
    assert RealSenseConfig.from_dict({"serial": 123456}).serial == "123456"
    with pytest.raises(CameraNotFoundError, match="does not exist"):
        RealSenseCamera(RealSenseConfig(playback_file=str(tmp_path / "missing.db3"))).connect()


def test_live_without_camera_gives_clear_errors(tmp_path):
    if rs.context().query_devices().size() > 0:
        pytest.skip("a real camera is connected")
    with pytest.raises(CameraNotFoundError, match="no RealSense camera is connected"):
        RealSenseCamera(RealSenseConfig()).connect()
    with pytest.raises(CameraNotFoundError, match="nothing to record"):
        record_live(str(tmp_path / "out.db3"), 1.0, [])
