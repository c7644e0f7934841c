"""`build` against a RECORDING FAKE of the TensorRT builder API (TensorRT cannot run here: no GPU, no TensorRT):
what OUR code asks the builder for, on TensorRT 10 and 11, not that TensorRT builds these engines."""
import json
import sys
from types import SimpleNamespace

import pytest

from edge.errors import ConfigError


class _Flag:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value


def fake_builder_api(version: str, strongly_typed_flag: bool, calls: list):
    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):  # must never be called: every precision flag is gone in 11
            calls.append(("set_flag", flag))

        def create_timing_cache(self, blob):
            return SimpleNamespace(serialize=lambda: b"cache:" + bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            calls.append(("profile", dict(profile.shapes)))
            return 0

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return SimpleNamespace()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"plan" * 100

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return True

    flags = {"STRONGLY_TYPED": _Flag("STRONGLY_TYPED", 1)} if strongly_typed_flag else {}
    return SimpleNamespace(__version__=version, Builder=Builder, OnnxParser=OnnxParser,
                           Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
                           MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
                           NetworkDefinitionCreationFlag=SimpleNamespace(**flags))


@pytest.mark.parametrize("version,flag,expected", [("10.3.0", True, 2), ("11.4.0", True, 2), ("11.4.0", False, 0)])
def test_build_is_strongly_typed_on_10_and_11(demo_engines, tmp_path, monkeypatch, version, flag, expected):
    from quantize.build import build_engines

    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder_api(version, flag, calls))
    manifest = build_engines(demo_engines, tmp_path / "trt", compute_capability=(8, 7))
    components = json.loads((demo_engines / "manifest.json").read_text())["components"]
    assert [c[1] for c in calls if c[0] == "create_network"] == [expected] * len(components)
    assert not [c for c in calls if c[0] == "set_flag"]  # no BuilderFlag.FP16/BF16/INT8/FP8, no weak typing
    assert manifest["strongly_typed"] is True and manifest["tensorrt"] == version
    profiles = [c[1] for c in calls if c[0] == "profile"]
    prefill_meta = json.loads((tmp_path / "trt" / "prefill.json").read_text())
    assert {k: tuple(map(tuple, v)) for k, v in prefill_meta["profile"].items()} in profiles
    assert (tmp_path / "trt" / "prefill.engine").read_bytes() == b"plan" * 100
    assert (tmp_path / "timing.cache").read_bytes().startswith(b"cache:")


def test_fp16_weak_typing_is_refused_with_the_way_out(demo_engines, tmp_path, monkeypatch):
    from quantize.build import build_engines

    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder_api("10.3.0", True, []))
    with pytest.raises(ConfigError, match="--high-precision fp16"):
        build_engines(demo_engines, tmp_path / "trt", fp16=True, compute_capability=(8, 7))
    assert not (tmp_path / "trt").exists()
