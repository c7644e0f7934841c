"""The torch backend from the command line and the run config: --device / --compile, `policy.device`, and the
`policy.fallback: torch` that runs the checkpoint when the engines cannot be loaded (tensorrt is not installed here,
so `backend: tensorrt` fails to load, as a missing or mismatched engine would on a device)."""
import copy
import logging

import numpy as np
import pytest

from edge.cli import main
from edge.config import from_dict
from edge.errors import ConfigError, MissingDependencyError

GOOD = {
    "instruction": "pick up the red block",
    "policy": {"backend": "onnxruntime", "engines": "engines"},
    "cameras": [{"kind": "sim", "slot": "main", "width": 64, "height": 48}],
    "arms": [{"protocol": "dynamixel", "port": "@sim", "ids": [1, 2, 3]}],
}
OBS = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": "pick up the red block"}


def config(tmp_path, **policy):
    d = copy.deepcopy(GOOD)
    d["policy"] = policy
    return from_dict(d, "robot.yaml", tmp_path)


def test_config_says_torch_on_cuda_and_a_torch_fallback(tmp_path):
    cfg = config(tmp_path, backend="torch", checkpoint="ckpt", device="cuda", compile=True)
    assert cfg.policy.torch_device() == "cuda" and cfg.policy.compile and cfg.policy.fallback is None
    assert config(tmp_path, backend="torch", checkpoint="ckpt").policy.torch_device() == "cpu"
    fb = config(tmp_path, backend="tensorrt", engines="trt", checkpoint="ckpt", fallback="torch").policy
    assert fb.fallback == "torch" and fb.torch_device() == "cuda" and fb.checkpoint == str(tmp_path / "ckpt")
    assert config(tmp_path, backend="tensorrt", engines="e", checkpoint="c", fallback="torch",
                  device="cuda:1").policy.torch_device() == "cuda:1"


@pytest.mark.parametrize("policy, field, hint", [
    ({"backend": "tensorrt", "engines": "e", "fallback": "torch"}, "policy.checkpoint", "fallback: torch"),
    ({"backend": "torch", "checkpoint": "c", "fallback": "torch"}, "policy.fallback", "nothing to fall back"),
    ({"backend": "tensorrt", "engines": "e", "checkpoint": "c", "fallback": "onnxruntime"}, "policy.fallback",
     "one of ['torch']"),
    ({"backend": "onnxruntime", "engines": "e", "device": "cuda"}, "policy.device", "fallback: torch"),
    ({"backend": "tensorrt", "engines": "e", "compile": True}, "policy.compile", "backend: torch"),
    ({"backend": "torch", "checkpoint": "c", "device": "gpu"}, "policy.device", "cpu, cuda or cuda:N"),
    ({"backend": "torch", "checkpoint": "c", "compile": "yes"}, "policy.compile", "must be bool"),
])
def test_bad_torch_device_config_names_the_field(tmp_path, policy, field, hint):
    with pytest.raises(ConfigError) as e:
        config(tmp_path, **policy)
    assert f"`{field}`" in str(e.value) and hint in str(e.value)


def test_fallback_to_torch_when_the_tensorrt_engines_cannot_be_loaded(demo_engines, demo_checkpoint, tmp_path, caplog):
    pytest.importorskip("torch")
    from edge.runtime import load_policy

    cfg = config(tmp_path, backend="tensorrt", engines=str(demo_engines), checkpoint=str(demo_checkpoint),
                 fallback="torch", device="cpu")
    messages = []
    with caplog.at_level(logging.ERROR, logger="edge.runtime"):
        policy = load_policy(cfg.policy, cfg.source, messages.append)
    assert policy.backend.name == "torch" and str(policy.backend.device) == "cpu"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "tensorrt engines" in text and str(demo_engines) in text and "MissingDependencyError" in text
    assert "TensorRT is not importable" in text and "falling back to the torch backend on cpu" in text
    assert str(demo_checkpoint) in text
    assert any("fallback: torch on cpu" in m for m in messages)
    # the fallback is the checkpoint itself: the same actions as the engines exported from it
    from edge.engines import load_engine_policy

    ref = load_engine_policy(demo_engines).infer(OBS, seed=3)["actions"]
    np.testing.assert_allclose(policy.infer(OBS, seed=3)["actions"], ref, atol=1e-4)


def test_no_fallback_raises_the_load_error(demo_engines, tmp_path):
    from edge.runtime import load_policy

    cfg = config(tmp_path, backend="tensorrt", engines=str(demo_engines))
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        load_policy(cfg.policy, cfg.source)


def test_cuda_without_cuda_names_the_fix():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from quantize.variants import check_torch_device

    with pytest.raises((MissingDependencyError, ConfigError)) as e:
        check_torch_device("cuda")
    assert "--device cpu" in str(e.value)
    assert ("CPU-only build" in str(e.value)) == (torch.version.cuda is None)
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        check_torch_device("gpu0")


def test_cli_torch_device_flags(demo_checkpoint, demo_engines, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from PIL import Image

    img = tmp_path / "cam.png"
    Image.fromarray(np.full((224, 224, 3), 90, np.uint8)).save(img)
    infer = ["infer", "--image", str(img), "--image", str(img), "--instruction", "pick up the red block",
             "--state", "0,0,0,0,0,0,0,0", "--json"]
    # engine backends run where they were built: --device / --compile are refused with the fix
    assert main(infer + ["--engines", str(demo_engines), "--device", "cuda"]) == 1
    assert "apply to the torch backend" in capsys.readouterr().err
    assert main(["bench", "--engines", str(demo_engines), "--compile", "--iterations", "1"]) == 1
    assert "apply to the torch backend" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(infer + ["--checkpoint", str(demo_checkpoint), "--device", "cuda"]) == 1
        assert "--device cpu" in capsys.readouterr().err
    assert main(infer + ["--checkpoint", str(demo_checkpoint), "--device", "cpu"]) == 0
    capsys.readouterr()
    # `run --device` on a config without the torch backend
    cfg = tmp_path / "robot.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({**GOOD, "policy": {"backend": "onnxruntime", "engines": str(demo_engines)}}))
    assert main(["run", "--config", str(cfg), "--device", "cuda", "--seconds", "1"]) == 1
    assert "policy.fallback: torch" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["infer", "bench", "run", "eval"])
def test_device_flags_have_help_with_an_example(cmd, capsys):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--device", "--compile"):
        assert flag in out
    assert "--device cuda --compile" in out and "Example: imagewam-edge" in out
