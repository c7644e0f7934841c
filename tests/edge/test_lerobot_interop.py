"""LeRobot v3 interop: a recording -> `recording export --format lerobot` -> loaded with lerobot's LeRobotDataset
-> read back by `quantize --calibration DATASET` (quantize.ptq.load_observations)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError, MissingDependencyError
from edge.recording import RecordingWriter, iter_observations
from tests.edge.lerobot_support import lerobot_dataset_api

REPO = Path(__file__).resolve().parents[2]
H, W = 32, 48


@pytest.fixture(scope="module")
def lr():
    with lerobot_dataset_api() as api:
        yield api


def _smooth_image(seed: int) -> np.ndarray:
    """A gradient with an offset: compresses well, so MP4 (lossy) frames stay close to the originals."""
    yy, xx = np.mgrid[0:H, 0:W]
    r = (xx * 5 + seed * 20) % 256
    g = (yy * 7 + seed * 10) % 256
    b = np.full((H, W), (seed * 37) % 256)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _write_recording(root: Path, episodes=(("pick the cube", 4), ("open the drawer", 3))) -> Path:
    w = RecordingWriter(root, canvas="sim", slots=["front", "wrist"], state_dim=5, action_dim=5,
                        extra={"control_hz": 100.0, "action_hz": 10.0})
    t = 100.0
    for e, (instruction, n) in enumerate(episodes):
        w.start_episode(instruction)
        for k in range(n):
            s = e * 10 + k
            state = np.arange(5, dtype=np.float32) * 0.25 + s  # float32-exact values (the dataset stores float32)
            w.add([_smooth_image(s), _smooth_image(s + 50)], state, actions=np.full((4, 5), s, np.float32),
                  sent=np.full(5, s + 0.5, np.float32), t=t)
            t += 0.1
    w.close()
    return root


def _same_observations(a, b, exact: bool):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.instruction, x.episode, x.step) == (y.instruction, y.episode, y.step)
        if exact:
            np.testing.assert_array_equal(x.state, y.state)
        else:  # the dataset stores float32 (LeRobot's convention); the loop records float64
            np.testing.assert_allclose(x.state, y.state, rtol=1e-6, atol=1e-7)
        assert len(x.images) == len(y.images)
        for i, j in zip(x.images, y.images):
            assert i.shape == j.shape and j.dtype == np.uint8
            if exact:
                np.testing.assert_array_equal(i, j)
            else:  # MP4 (AV1) is lossy
                assert np.abs(i.astype(int) - j.astype(int)).mean() < 6


def test_export_images_round_trip_through_lerobot_and_calibration(lr, tmp_path):
    from edge.recording_lerobot import export_lerobot
    from quantize.ptq import load_observations

    rec = _write_recording(tmp_path / "rec")
    (rec / "episode_0001" / "step_000003.npz").write_bytes(b"PK\x03\x04 cut by a power loss")  # truncated tail
    out = export_lerobot(rec, tmp_path / "ds", video=False)
    assert (out["episodes"], out["frames"], out["fps"]) == (2, 7, 10)
    assert out["cameras"] == ["observation.images.front", "observation.images.wrist"]

    ds = lr.LeRobotDataset("local/ds", root=tmp_path / "ds")  # lerobot's own loader
    assert ds.meta.info["codebase_version"].startswith("v3")
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (2, 7, 10)
    assert ds.meta.camera_keys == ["observation.images.front", "observation.images.wrist"]
    assert sorted(ds.meta.tasks.index) == ["open the drawer", "pick the cube"]
    item = ds[5]  # episode 1, frame 1
    np.testing.assert_allclose(item["observation.state"].numpy(), np.arange(5) * 0.25 + 11)
    np.testing.assert_allclose(item["action"].numpy(), np.full(5, 11.5))
    assert item["task"] == "open the drawer"
    assert tuple(item["observation.images.front"].shape) == (3, H, W)  # lerobot's CHW float frames

    recorded = list(iter_observations(rec))
    _same_observations(recorded, list(iter_observations(tmp_path / "ds")), exact=True)
    cal, held, kind = load_observations(None, calibration=str(tmp_path / "ds"))
    ref_cal, ref_held, _ = load_observations(None, calibration=str(rec))
    assert kind == "recorded"
    _same_observations(ref_cal, cal, exact=True)
    _same_observations(ref_held, held, exact=True)


def test_run_record_export_video_cli_load_and_calibrate(lr, tmp_path):
    """The whole path as a user runs it: `run --record` -> `recording export --format lerobot` (MP4) -> lerobot ->
    quantize's calibration reader."""
    from quantize.ptq import load_observations

    rec, out = tmp_path / "rec", tmp_path / "ds"
    run = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--seconds", "3", "--record", str(rec)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    from edge.commands_recording import recording_export
    import argparse

    args = argparse.Namespace(recording=str(rec), out=str(out), repo_id="lab/day1", fps=None, mapping=None,
                              images=False, json=True)
    assert recording_export(args) == 0
    ds = lr.LeRobotDataset("lab/day1", root=out)
    recorded = list(iter_observations(rec))
    assert ds.num_frames == len(recorded) >= 2
    assert ds.meta.video_keys == ["observation.images.main"]
    assert list(out.glob("videos/observation.images.main/chunk-*/file-*.mp4"))
    _same_observations(recorded, list(iter_observations(out)), exact=False)
    if len(recorded) >= 4:
        cal, held, _ = load_observations(None, calibration=str(out))
        assert len(cal) + len(held) == len(recorded)


def test_declared_mapping_maps_keys_both_ways(lr, tmp_path):
    from edge.recording_lerobot import LeRobotMapping, export_lerobot, iter_lerobot_observations

    rec = _write_recording(tmp_path / "rec", episodes=(("wave", 3),))
    mapping = LeRobotMapping(state="observation.joints", action="action.joints",
                             cameras=("observation.images.top", "observation.images.hand"))
    export_lerobot(rec, tmp_path / "ds", mapping=mapping, video=False, fps=5)
    ds = lr.LeRobotDataset("local/ds", root=tmp_path / "ds")
    assert {"observation.joints", "action.joints", "observation.images.top"} <= set(ds.meta.features)
    assert ds.fps == 5
    # a foreign dataset: declare the keys in meta/imagewam_mapping.json; here the cameras swapped
    (tmp_path / "ds" / "meta" / "imagewam_mapping.json").write_text(json.dumps(
        {"state": "observation.joints", "cameras": ["observation.images.hand", "observation.images.top"]}))
    swapped = list(iter_observations(tmp_path / "ds"))
    original = list(iter_observations(rec))
    np.testing.assert_array_equal(swapped[0].images[0], original[0].images[1])
    with pytest.raises(ConfigError, match="observation.images.side"):
        list(iter_lerobot_observations(tmp_path / "ds", mapping=LeRobotMapping(
            state="observation.joints", cameras=("observation.images.side",))))
    with pytest.raises(ConfigError, match=r"names 3 camera key.*records 2 image"):
        export_lerobot(rec, tmp_path / "ds2", mapping=LeRobotMapping(cameras=("a", "b", "c")))


def test_mapping_file_and_dataset_version_errors(tmp_path):
    from edge.lerobot_dataset import LeRobotMapping, dataset_info

    (tmp_path / "m.yaml").write_text("state: observation.state\ncameras: observation.images.top\n")
    with pytest.raises(ConfigError, match="cameras.*list"):
        LeRobotMapping.load(tmp_path / "m.yaml")
    (tmp_path / "m.json").write_text('{"state": "s", "camera": []}')
    with pytest.raises(ConfigError, match="unknown field.*camera"):
        LeRobotMapping.load(tmp_path / "m.json")
    old = tmp_path / "old" / "meta"
    old.mkdir(parents=True)
    (old / "info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(ConfigError, match="convert_dataset_v21_to_v30"):
        dataset_info(old.parent)
    with pytest.raises(ConfigError, match="v2.1"):
        list(iter_observations(old.parent))


def test_missing_lerobot_names_the_extra(tmp_path, monkeypatch):
    import builtins

    from edge.recording_lerobot import export_lerobot

    real_import = builtins.__import__

    def no_lerobot(name, *a, **kw):
        if name.startswith("lerobot"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **kw)

    rec = _write_recording(tmp_path / "rec", episodes=(("wave", 2),))
    monkeypatch.setattr(builtins, "__import__", no_lerobot)
    with pytest.raises(MissingDependencyError, match=r"imagewam-edge\[lerobot\]"):
        export_lerobot(rec, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
