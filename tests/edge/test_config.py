import copy
import subprocess
import sys

import pytest
import yaml

from edge.config import example_configs, from_dict, from_yaml
from edge.errors import ConfigError

GOOD = {
    "instruction": "pick up the red block",
    "policy": {"backend": "onnxruntime", "engines": "engines"},
    "cameras": [{"kind": "sim", "slot": "main", "width": 64, "height": 48}],
    "arms": [{"protocol": "dynamixel", "port": "@sim", "ids": [1, 2, 3]}],
}


def test_every_example_config_validates():
    names = {p.name for p in example_configs()}
    assert {"default.yaml", "libero_dynamixel_2rs.yaml", "so100_feetech_1rs.yaml", "robotwin_dual_framed.yaml"} <= names
    for p in example_configs():
        cfg = from_yaml(p)
        assert cfg.instruction and cfg.cameras and 1 <= len(cfg.arms) <= 2
    dual = from_yaml(next(p for p in example_configs() if p.name == "robotwin_dual_framed.yaml"))
    assert [a.protocol for a in dual.arms] == ["framed", "framed"] and dual.rates.control_hz == 200


def test_defaults_and_relative_paths(tmp_path):
    cfg = from_dict(GOOD, "robot.yaml", tmp_path)
    assert cfg.policy.engines == str(tmp_path / "engines")  # relative to the config file
    assert cfg.rates.control_hz == 100 and cfg.chunking.blend == "crossfade" and cfg.fault.torque == "hold"
    assert cfg.arms[0].simulated


def bad(mutate):
    d = copy.deepcopy(GOOD)
    mutate(d)
    with pytest.raises(ConfigError) as e:
        from_dict(d, "robot.yaml")
    return str(e.value)


@pytest.mark.parametrize("mutate, field, hint", [
    (lambda d: d.pop("instruction"), "instruction", "missing"),
    (lambda d: d["arms"][0].update(baudrate=12345), "arms[0].baudrate", "1000000"),
    (lambda d: d["arms"][0].update(ids=[1, 1]), "arms[0].ids", "distinct"),
    (lambda d: d["arms"][0].update(protocol="canbus"), "arms[0].protocol", "dynamixel"),
    (lambda d: d["arms"][0].update(safety={"max_velocity": [1.0, 2.0]}), "arms[0].safety.max_velocity", "3 joints"),
    (lambda d: d["arms"][0].update(safety={"max_step": -1}), "arms[0].safety.max_step", "> 0"),
    (lambda d: d.update(rates={"control_hz": 0}), "rates.control_hz", ">= 1"),
    (lambda d: d.update(rates={"contol_hz": 100}), "rates.contol_hz", "spelling"),
    (lambda d: d.update(fault={"torque": False}), "fault.torque", "quote it"),
    (lambda d: d.update(chunking={"blend": "average"}), "chunking.blend", "crossfade"),
    (lambda d: d["policy"].pop("engines"), "policy.engines", "imagewam-edge export"),
    (lambda d: d["policy"].update(backend="torch"), "policy.checkpoint", "release directory"),
    (lambda d: d["cameras"][0].update(fps=0), "cameras[0]", "fps"),
    (lambda d: d["cameras"].append(dict(d["cameras"][0])), "cameras", "same canvas slot"),
    (lambda d: d.update(arms=d["arms"] * 3), "arms", "one or two"),
])
def test_bad_config_names_the_file_and_field(mutate, field, hint):
    msg = bad(mutate)
    assert "robot.yaml" in msg and f"`{field}`" in msg and hint in msg, msg


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found.*default.yaml"):
        from_yaml(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("instruction: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        from_yaml(p)
    p.write_text(yaml.safe_dump({**GOOD, "arms": [{"protocol": "feetech", "ids": [1]}]}))
    with pytest.raises(ConfigError, match=r"broken.yaml: field `arms\[0\].port` is missing; e.g."):
        from_yaml(p)


def test_cli_prints_the_message_without_traceback(tmp_path):
    p = tmp_path / "robot.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "rates": {"control_hz": "fast"}}))
    r = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(p)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "error:" in r.stderr and "`rates.control_hz` must be float" in r.stderr and "Traceback" not in r.stderr
