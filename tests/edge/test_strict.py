"""The one strict config reader (edge/strict.py): what a user sees when a config mapping is wrong, and that the
defaults are the dataclass's own."""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Optional

import pytest

from edge.config import RatesConfig, from_dict
from edge.errors import ConfigError
from edge.strict import FieldError, build, setting


@dataclass(frozen=True)
class Inner:
    gain: float = setting(1.0, minimum=0.0)
    mode: str = setting("fast", choices=("fast", "slow"))


@dataclass(frozen=True)
class Outer:
    name: str = setting(example="arm")
    ids: tuple[int, ...] = (1,)
    inner: Inner = Inner()
    serial: Optional[str] = setting(None, number_as_text=True)
    file: Optional[str] = setting(None, path=True)

    def __post_init__(self):
        if len(set(self.ids)) != len(self.ids):
            raise FieldError(self, "ids", f"must be distinct, got {list(self.ids)}")


def test_defaults_come_from_the_dataclass_and_values_are_converted(tmp_path):
    o = build(Outer, {"name": "a", "ids": [1, 2], "inner": {"gain": 2}, "serial": 123456789, "file": "x.yaml"},
              "robot.yaml", base=tmp_path)
    assert o.ids == (1, 2) and isinstance(o.ids, tuple)
    assert o.inner == Inner(gain=2.0) and isinstance(o.inner.gain, float) and o.inner.mode == "fast"
    assert o.serial == "123456789" and o.file == str(tmp_path / "x.yaml")
    assert build(Outer, {"name": "a", "file": "@default"}, "robot.yaml", base=tmp_path).file == "@default"
    # an empty section (YAML `rates:`) is every default, the same the dataclass gives
    assert build(RatesConfig, None, "robot.yaml", "rates") == RatesConfig()


def test_unknown_key_names_the_file_the_section_a_close_name_and_the_known_ones():
    with pytest.raises(ConfigError) as e:
        build(Outer, {"name": "a", "inner": {"gian": 1}}, "robot.yaml", "arms[0]")
    msg = str(e.value)
    assert msg.startswith("robot.yaml: unknown field `arms[0].inner.gian` (did you mean `gain`?)"), msg
    assert "known in `arms[0].inner`: gain, mode" in msg


@pytest.mark.parametrize("data, expect", [
    ({}, "robot.yaml: field `name` is missing; e.g. `name: arm`"),
    ({"name": True}, "field `name` must be a string, got the boolean True: YAML reads unquoted on/off"),
    ({"name": "a", "ids": [1, "2"]}, "field `ids` must be a list of int, got [1, '2']"),
    ({"name": "a", "inner": {"gain": -1}}, "field `inner.gain` must be >= 0.0"),
    ({"name": "a", "inner": {"gain": float("nan")}}, "field `inner.gain` must be finite"),
    ({"name": "a", "inner": {"mode": "medium"}}, "field `inner.mode` must be one of ['fast', 'slow']"),
    ({"name": "a", "inner": 3}, "field `inner` must be a mapping (Inner fields), got 3"),
    ({"name": "a", "ids": [1, 1]}, "robot.yaml: field `ids` must be distinct, got [1, 1]"),
    ([1, 2], "robot.yaml: it must be a mapping"),
])
def test_wrong_values_name_the_field_and_what_it_must_be(data, expect):
    with pytest.raises(ConfigError) as e:
        build(Outer, data, "robot.yaml")
    assert expect in str(e.value), str(e.value)


def test_a_run_config_typo_gets_a_did_you_mean():
    good = {"instruction": "pick", "policy": {"engines": "e"}, "cameras": [{"kind": "sim", "slot": "main"}],
            "arms": [{"protocol": "dynamixel", "port": "@sim", "ids": [1, 2]}]}
    for mutate, expect in [
        (lambda d: d["policy"].update(backnd="onnxruntime"), "`policy.backnd` (did you mean `backend`?)"),
        (lambda d: d["cameras"][0].update(widht=64), "`cameras[0].widht` (did you mean `width`?)"),
        (lambda d: d["arms"][0].update(safety={"max_stpe": 0.1}), "`arms[0].safety.max_stpe` (did you mean `max_step`?)"),
    ]:
        d = copy.deepcopy(good)
        mutate(d)
        with pytest.raises(ConfigError) as e:
            from_dict(d, "robot.yaml")
        assert str(e.value).startswith("robot.yaml: unknown field ") and expect in str(e.value), str(e.value)


def test_direct_construction_keeps_the_class_checks():
    with pytest.raises(ConfigError, match=r"Outer.ids must be distinct"):
        Outer(name="a", ids=(2, 2))
    assert [f.name for f in fields(Outer)][:2] == ["name", "ids"]
