"""Recordings as real cameras leave them (issue 17): streams that never pair (6 depth frames, then 5 colour frames),
a handful of frames, timestamps starting at t0 > 0, dropped frames, depth-only and colour-only files, other models'
stream geometries. Each is synthesised through pyrealsense2's software device and recorder (.db3)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from drivers.camera.base import Intrinsics  # noqa: E402
from drivers.camera.realsense import RealSenseCamera, RealSenseConfig  # noqa: E402
from drivers.camera.recording import write_synthetic_recording  # noqa: E402
from drivers.camera.recording_scan import pairing, scan_recording  # noqa: E402
from drivers.errors import RecordingEndedError  # noqa: E402
from edge.cli import main  # noqa: E402

W, H, FPS = 16, 12, 30
K = Intrinsics(W, H, 10.0, 10.5, 7.5, 5.5, "brown_conrady", (0.0,) * 5)
PERIOD = 1000.0 / FPS


def _colors(n, base=0):
    return [np.full((H, W, 3), base + i, np.uint8) for i in range(n)]


def _depths(n, base=500):
    return [np.full((H, W), base + i, np.uint16) for i in range(n)]


def _times(n, t0=0.0, skip=()):
    return [t0 + k * PERIOD for k in range(n + len(skip)) if k not in skip]


def _paired_exactly(frames, ids):
    """Every colour frame exact and with its own depth frame (paired by device timestamp, not by arrival)."""
    assert len(frames) == len(ids)
    for f, k in zip(frames, ids):
        assert int(f.color[0, 0, 0]) == k and (f.color == k).all()
        assert f.depth is not None and f.depth.shape == (H, W) and (f.depth == 500 + k).all()


def _info(path, capsys) -> dict:
    assert main(["camera", "info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    out["by"] = {s["type"]: s for s in out["streams"]}
    return out


def _play(path, **cfg) -> list:
    frames = []
    with RealSenseCamera(RealSenseConfig(width=cfg.pop("width", W), height=cfg.pop("height", H), fps=FPS,
                                         playback_file=str(path), align=False, **cfg)) as cam:
        while True:
            try:
                frames.append(cam.read(timeout=3.0))
            except RecordingEndedError:
                return frames


@pytest.fixture(scope="module")
def non_overlapping(tmp_path_factory):
    """An older D435 recording as the issue describes it: 6 depth frames, then 5 colour frames, no overlap."""
    path = tmp_path_factory.mktemp("rec") / "non_overlapping.db3"
    write_synthetic_recording(str(path), _colors(5), _depths(6), color_intrinsics=K, name="Intel RealSense D435",
                              depth_times_ms=_times(6, t0=2000.0), color_times_ms=_times(5, t0=2500.0), paced=True)
    return path


def test_info_reports_each_stream_of_non_overlapping_streams(non_overlapping, capsys):
    out = _info(non_overlapping, capsys)
    color, depth = out["by"]["color"], out["by"]["depth"]
    assert (color["frames"], depth["frames"]) == (5, 6)
    assert color["first_timestamp_ms"] == pytest.approx(2500.0) and depth["first_timestamp_ms"] == pytest.approx(2000.0)
    assert depth["span_s"] == pytest.approx(5 * PERIOD / 1000, abs=1e-3)
    assert color["gaps"] == depth["gaps"] == 0
    assert out["pairing"]["pairable"] is False and "do not overlap" in out["pairing"]["reason"]
    assert main(["camera", "info", str(non_overlapping)]) == 0
    text = capsys.readouterr().out
    assert "CANNOT be paired" in text and "6 frames" in text and "t0 2.000 s" in text


def test_playback_of_unpaired_streams_delivers_colour_with_a_warning(non_overlapping, caplog):
    with caplog.at_level(logging.WARNING, logger="drivers.camera.realsense"):
        frames = _play(non_overlapping, depth=True)
    assert "cannot be paired" in caplog.text and "depth: false" in caplog.text
    assert [f.frame_number for f in frames] == list(range(5))
    assert all(f.depth is None for f in frames)
    for f, c in zip(frames, _colors(5)):
        np.testing.assert_array_equal(f.color, c)
    assert frames[0].device_timestamp_ms == pytest.approx(2500.0)


def test_a_handful_of_frames_from_t0(tmp_path, capsys):
    path = tmp_path / "handful.db3"
    times = _times(3, t0=86_400_123.5)  # a device clock a day in
    write_synthetic_recording(str(path), _colors(3), _depths(3), color_intrinsics=K, color_times_ms=times,
                              depth_times_ms=times, color_numbers=[700, 701, 702], depth_numbers=[700, 701, 702])
    out = _info(path, capsys)
    assert out["by"]["color"]["frames"] == 3 and out["by"]["color"]["first_frame_number"] == 700
    assert out["by"]["depth"]["first_timestamp_ms"] == pytest.approx(86_400_123.5)
    assert out["pairing"]["pairable"] and out["pairing"]["pairs"] == 3
    frames = _play(path, depth=True)
    assert [f.frame_number for f in frames] == [700, 701, 702]
    _paired_exactly(frames, list(range(3)))
    assert frames[0].device_timestamp_ms == pytest.approx(86_400_123.5)


def test_dropped_frames_are_reported_and_played_in_order(tmp_path, capsys):
    path = tmp_path / "dropped.db3"
    numbers = [0, 1, 2, 5, 6, 9]  # 2 + 2 frames lost, in 2 gaps
    times = [n * PERIOD + 500.0 for n in numbers]
    write_synthetic_recording(str(path), _colors(6), _depths(6), color_intrinsics=K, color_times_ms=times,
                              depth_times_ms=times, color_numbers=numbers, depth_numbers=numbers)
    out = _info(path, capsys)
    for kind in ("color", "depth"):
        assert (out["by"][kind]["gaps"], out["by"][kind]["dropped_frames"]) == (2, 4)
    assert "2 gap(s), ~4 frame(s) dropped" in (main(["camera", "info", str(path)]) or capsys.readouterr().out)
    frames = _play(path, depth=True)
    assert [f.frame_number for f in frames] == numbers
    _paired_exactly(frames, list(range(6)))


def test_depth_only_file(tmp_path, capsys, caplog):
    path = tmp_path / "depth_only.db3"
    write_synthetic_recording(str(path), None, _depths(4), depth_intrinsics=K, depth_times_ms=_times(4, t0=100.0))
    out = _info(path, capsys)
    assert list(out["by"]) == ["depth"] and out["by"]["depth"]["frames"] == 4
    assert out["pairing"]["pairable"] is False and "no colour" in out["pairing"]["reason"]
    with caplog.at_level(logging.WARNING, logger="drivers.camera.realsense"):
        frames = _play(path, depth=True)
    assert "no colour frames" in caplog.text
    assert [f.frame_number for f in frames] == [0, 1, 2, 3]
    assert all(f.color is None for f in frames)
    for f, d in zip(frames, _depths(4)):
        np.testing.assert_array_equal(f.depth, d)


def test_colour_only_file(tmp_path, capsys, caplog):
    path = tmp_path / "colour_only.db3"
    write_synthetic_recording(str(path), _colors(4), None, color_intrinsics=K, color_times_ms=_times(4, t0=40.0))
    out = _info(path, capsys)
    assert list(out["by"]) == ["color"] and out["by"]["color"]["frames"] == 4 and out["depth_scale"] is None
    with caplog.at_level(logging.WARNING, logger="drivers.camera.realsense"):
        frames = _play(path, depth=True)
    assert "no depth frames" in caplog.text
    assert [f.frame_number for f in frames] == [0, 1, 2, 3] and all(f.depth is None for f in frames)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="drivers.camera.realsense"):
        assert len(_play(path, depth=False)) == 4
    assert "no depth" not in caplog.text  # asked for colour only: nothing to warn about


@pytest.mark.parametrize("model, color_size, depth_size", [
    ("Intel RealSense D405", (32, 24), (32, 24)),
    ("Intel RealSense D455", (32, 18), (24, 18)),
    ("Intel RealSense L515", (32, 24), (16, 12)),  # L515: depth smaller than colour
])
def test_other_models_stream_geometries(tmp_path, capsys, model, color_size, depth_size):
    (cw, ch), (dw, dh) = color_size, depth_size
    ck = Intrinsics(cw, ch, 20.0, 20.0, cw / 2, ch / 2, "brown_conrady", (0.0,) * 5)
    dk = Intrinsics(dw, dh, 12.0, 12.0, dw / 2, dh / 2, "brown_conrady", (0.0,) * 5)
    path = tmp_path / "model.db3"
    write_synthetic_recording(str(path), [np.full((ch, cw, 3), 9, np.uint8)] * 3,
                              [np.full((dh, dw), 800, np.uint16)] * 3, color_intrinsics=ck, depth_intrinsics=dk,
                              name=model, color_times_ms=_times(3, t0=10.0), depth_times_ms=_times(3, t0=10.0))
    out = _info(path, capsys)
    assert (out["by"]["depth"]["width"], out["by"]["depth"]["height"]) == depth_size
    with RealSenseCamera(RealSenseConfig(width=cw, height=ch, depth_width=dw, depth_height=dh, fps=FPS,
                                         playback_file=str(path), align=True)) as cam:
        f = cam.read(timeout=3.0)
    assert f.color.shape == (ch, cw, 3) and f.depth.shape == (ch, cw)  # aligned into the colour camera


def test_pairing_rule():
    from drivers.camera.recording_scan import StreamScan

    c = StreamScan("color", 0, 30, "rgb8", numbers=[0, 1, 2], times_ms=[0.0, 33.3, 66.7])
    d = StreamScan("depth", 0, 30, "z16", numbers=[0, 1, 2], times_ms=[5.0, 38.0, 70.0])
    assert pairing(c, d)["pairable"] and pairing(c, d)["pairs"] == 3
    far = StreamScan("depth", 0, 30, "z16", numbers=[0, 1], times_ms=[1000.0, 1033.3])
    assert not pairing(c, far)["pairable"] and "do not overlap" in pairing(c, far)["reason"]
    assert "no depth" in pairing(c, None)["reason"]


def test_scan_stops_early_once_streams_pair(tmp_path):
    path = tmp_path / "long.db3"
    write_synthetic_recording(str(path), _colors(40), _depths(40), color_intrinsics=K)
    early = scan_recording(str(path), until_paired=True)
    full = scan_recording(str(path))
    assert full["color"].frames == 40 and full["depth"].frames == 40
    assert early["color"].frames <= 40 and pairing(early["color"], early["depth"])["pairs"] >= 3


# --- ROS1 .bag, as librealsense < 2.55 wrote them (pyrealsense2 2.59 only plays them) ---------------------------
def test_librealsense_259_writes_no_bag_so_the_tests_write_ros1_themselves(tmp_path):
    with pytest.raises(RuntimeError, match="db3"):
        rs.recorder(str(tmp_path / "x.bag"), rs.software_device())


def test_old_ros1_bag_with_lz4_chunks_and_non_overlapping_streams(tmp_path, capsys, caplog):
    """The issue's file: D435, ROS1 .bag with LZ4 chunks, 6 depth frames then 5 colour frames (no overlap)."""
    from tests.drivers.rosbag1_realsense import write_ros1_recording

    path = write_ros1_recording(str(tmp_path / "d435_old.bag"), _colors(5), _depths(6), intrinsics=K,
                                compression="lz4", depth_times_ms=_times(6, t0=5000.0),
                                color_times_ms=_times(5, t0=5400.0))
    out = _info(path, capsys)
    assert out["serial"] == "819612070123"
    assert (out["by"]["depth"]["frames"], out["by"]["color"]["frames"]) == (6, 5)
    assert out["by"]["color"]["first_timestamp_ms"] == pytest.approx(5400.0, abs=1e-3)
    assert out["pairing"]["pairable"] is False and "do not overlap" in out["pairing"]["reason"]
    with caplog.at_level(logging.WARNING, logger="drivers.camera.realsense"):
        frames = _play(path, depth=True)
    assert "cannot be paired" in caplog.text
    assert [f.frame_number for f in frames] == list(range(5)) and all(f.depth is None for f in frames)
    for f, c in zip(frames, _colors(5)):
        np.testing.assert_array_equal(f.color, c)


def test_old_ros1_bag_paired_and_depth_only(tmp_path, capsys):
    from tests.drivers.rosbag1_realsense import write_ros1_recording

    times = _times(4, t0=250.0)
    paired = write_ros1_recording(str(tmp_path / "paired.bag"), _colors(4), _depths(4), intrinsics=K,
                                  compression="none", color_times_ms=times, depth_times_ms=times, depth_scale=0.0001)
    out = _info(paired, capsys)
    assert out["pairing"]["pairable"] and out["depth_scale"] == pytest.approx(0.0001)
    frames = _play(paired, depth=True)
    _paired_exactly(frames, list(range(4)))
    depth_only = write_ros1_recording(str(tmp_path / "depth.bag"), None, _depths(3), intrinsics=K)
    frames = _play(depth_only, depth=True)
    assert len(frames) == 3 and all(f.color is None for f in frames)
    np.testing.assert_array_equal(frames[2].depth, _depths(3)[2])
