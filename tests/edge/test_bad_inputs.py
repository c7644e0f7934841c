"""Issue 12, part 8: every bad user file gives a typed error naming the file, the field and the fix (the CLI prints
it as `error: ...` with exit code 1), never a traceback; NaN/inf statistics are refused; --state takes spaces."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.errors import CheckpointError, ConfigError


def _cli_error(argv: list[str], capsys) -> str:
    """Run the console script; it must fail with exit code 1 and one `error: ...` line (no traceback)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def _png(path: Path, size=(32, 24)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("content, field", [
    ("joints: [{id: 1, offset: 2048\n  - broken", "not valid YAML at line"),
    ("- 1\n- 2\n", "must be a YAML mapping"),
    ("joints:\n  - {id: 1, offset: 2048}\n  - {id: 2, offset: abc}\n", "field `joints[1].offset` must be int"),
    ("joints:\n  - {offset: 2048}\n", "field `joints[0].id` is missing"),
    ("joints:\n  - {id: 1, units_per_rad: .nan}\n", "field `joints[0].units_per_rad` must be finite"),
])
def test_corrupt_arm_calibration_yaml(tmp_path, content, field):
    from drivers.arm.calibration_file import load_joint_mapping
    from drivers.errors import ConfigError as DriverConfigError

    path = tmp_path / "arm_calibration.yaml"
    path.write_text(content)
    with pytest.raises(DriverConfigError) as info:
        load_joint_mapping(path, ids=[1, 2])
    assert str(path) in str(info.value) and field in str(info.value)
    path.write_text("joints:\n  - {id: 1, offset: 2000, direction: -1}\n  - {id: 2}\n")  # a good file loads
    assert load_joint_mapping(path, ids=[1, 2]).ids == [1, 2]
    with pytest.raises(DriverConfigError, match=r"ids \[1, 2\] do not match the arm's ids \[1, 3\]"):
        load_joint_mapping(path, ids=[1, 3])


@pytest.mark.parametrize("content, field", [
    ("model: {proprio_dim: 8\nedge: [", "is not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("edge: {theta: fast}\n", "`edge.theta` must be a positive number"),
    ("model: {action_dit_config: {hidden_dim: '64'}}\n", "`model.action_dit_config.hidden_dim` must be a positive integer"),
    ("edge: 3\n", "`edge` must be a mapping"),
])
def test_corrupt_train_config_yaml(tmp_path, capsys, content, field):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "train_config.yaml").write_text(content)
    err = _cli_error(["prompts", "add", "--checkpoint", str(ckpt), "--prompt-cache", str(tmp_path / "p.npz"),
                      "--instruction", "pick"], capsys)
    assert str(ckpt / "train_config.yaml") in err and field in err
    from quantize.train_config import load_train_config

    with pytest.raises(CheckpointError, match="train_config.yaml"):
        load_train_config(ckpt)


@pytest.mark.parametrize("damage, field", [
    ("truncate", "not a readable .npz file"),
    ("no-index", "has no `index` array"),
    ("bad-json", "`index` is not valid JSON"),
    ("bad-entry", "`index[0]` needs string fields `key` and `instruction`"),
])
def test_truncated_prompt_cache(tmp_path, capsys, damage, field):
    from edge.prompt_cache import PromptCache

    path = tmp_path / "prompts.npz"
    cache = PromptCache(path)
    cache.put("pick up the red block", "enc", np.ones((5, 16), np.float32))
    cache.save()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "no-index":
        np.savez(path, emb_x=np.ones(3))
    elif damage == "bad-json":
        np.savez(path, index=np.array('[{"key": "abc", '))
    else:
        np.savez(path, index=np.array(json.dumps([["not", "an", "entry"]])))
    err = _cli_error(["prompts", "list", "--prompt-cache", str(path)], capsys)
    assert str(path) in err and field in err and "prompts add" in err
    with pytest.raises(ConfigError, match="prompt cache"):
        PromptCache(path)


def test_truncated_png_on_infer(tmp_path, capsys):
    good = _png(tmp_path / "good.png").read_bytes()
    bad = tmp_path / "cam.png"
    bad.write_bytes(good[: len(good) // 2])
    err = _cli_error(["infer", "--engines", str(tmp_path / "none"), "--image", str(bad), "--instruction", "pick",
                      "--state", "0,0,0"], capsys)
    assert f"--image {bad} is truncated or corrupt" in err


def test_truncated_png_in_calibration_images(tmp_path, capsys):
    pytest.importorskip("cv2")
    views = tmp_path / "views"
    views.mkdir()
    good = _png(views / "view_000.png").read_bytes()
    (views / "view_001.png").write_bytes(good[: len(good) // 2])
    err = _cli_error(["calibrate", "intrinsics", "--images", str(views), "--board", "charuco:9,6,0.035,0.026,DICT_5X5_100",
                      "--out", str(tmp_path / "intrinsics.yaml")], capsys)
    assert str(views / "view_001.png") in err and "re-capture" in err


def test_verify_without_manifest(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    engines = tmp_path / "trt"
    engines.mkdir()
    err = _cli_error(["verify", "--engines", str(engines)], capsys)
    assert str(engines / "manifest.json") in err and "not found" in err and "imagewam-edge build" in err


def test_flash_host_without_rsync(tmp_path, capsys, monkeypatch):
    bundle = tmp_path / "robot-bundle"
    bundle.mkdir()
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # neither rsync nor ssh on PATH
    err = _cli_error(["flash", str(bundle), "--host", "robot@jetson"], capsys)
    assert "`flash --host` needs rsync" in err and "sudo apt-get install rsync" in err


@pytest.mark.parametrize("where, value, key", [
    ("action", float("nan"), "action.default.global_min[3]"),
    ("state", float("inf"), "state.default.global_min[3]"),
])
def test_nan_or_inf_in_dataset_stats(tmp_path, where, value, key):
    from edge.normalize import load_normalizers

    entry = {"global_min": [-1.0] * 5, "global_max": [1.0] * 5, "global_mean": [0.0] * 5, "global_std": [0.5] * 5}
    stats = {"action": {"default": json.loads(json.dumps(entry))}, "state": {"default": json.loads(json.dumps(entry))}}
    stats[where]["default"]["global_min"][3] = value
    path = tmp_path / "dataset_stats.json"
    path.write_text(json.dumps(stats))  # Python writes NaN / Infinity, and reads them back without complaint
    with pytest.raises(CheckpointError) as info:
        load_normalizers(path, "min/max")
    msg = str(info.value)
    assert str(path) in msg and key in msg and "recompute the statistics" in msg


def test_space_separated_state(tmp_path, capsys):
    from edge.cli_util import parse_vector

    for text in ("0.1 -0.2 0.3", "0.1,-0.2,0.3", "0.1, -0.2, 0.3", " [0.1  -0.2\t0.3] "):
        np.testing.assert_allclose(parse_vector(text), [0.1, -0.2, 0.3])
    with pytest.raises(ConfigError, match="non-finite"):
        parse_vector("0.1 nan 0.3")
    image = _png(tmp_path / "cam.png")
    err = _cli_error(["infer", "--engines", str(tmp_path / "none"), "--image", str(image), "--instruction", "pick",
                      "--state", "0.1 0.2 x"], capsys)
    assert "--state must be numbers separated by commas or spaces" in err and "'0.1 0.2 x'" in err


def test_run_with_a_corrupt_arm_calibration_names_the_file_and_field(tmp_path):
    """Through the runtime that `run --config` uses: the arm calibration is checked before any device opens."""
    import dataclasses

    from edge.config import from_yaml
    from edge.default import DEFAULT_CONFIG
    from edge.errors import ConfigError
    from edge.runtime import make_link

    cal = tmp_path / "arm_cal.yaml"
    cal.write_text("joints:\n  - {id: 1, offset: twelve}\n")
    cfg = from_yaml(DEFAULT_CONFIG)
    arm = dataclasses.replace(cfg.arms[0], ids=(1,), calibration=str(cal))
    with pytest.raises(ConfigError, match=r"arms\[0\].*arm_cal.yaml.*offset"):
        make_link(arm, "/dev/ttyUSB-none", 0, "robot.yaml")


@pytest.mark.parametrize("key,value", [("max_step", 10.0), ("max_velocity", 100.0)])
def test_a_safety_limit_that_limits_nothing_is_refused(tmp_path, key, value):
    import yaml

    from edge.config import from_yaml
    from edge.default import DEFAULT_CONFIG
    from edge.errors import ConfigError

    data = yaml.safe_load(open(DEFAULT_CONFIG).read())
    data["arms"][0]["safety"][key] = value
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"robot.yaml: field `arms\[0\].safety.{key}`.*no limit at all"):
        from_yaml(path)
