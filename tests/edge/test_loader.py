"""One policy loader (edge/loader.py) behind run, infer, eval, bench and bench --compare."""
import numpy as np
import pytest

from edge.errors import ConfigError
from edge.loader import PolicySource, load_policy

OBS = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": "pick up the red block"}


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of --engines DIR"),
    ({"engines": "e", "checkpoint": "c"}, "exactly one of --engines DIR"),
    ({"checkpoint": "c", "backend": "onnxruntime"}, "runs exported engines: pass --engines DIR"),
    ({"engines": "e", "backend": "torch"}, "runs a checkpoint: pass --checkpoint DIR"),
    ({"engines": "e", "device": "cuda"}, "apply to the torch backend"),
    ({"checkpoint": "c", "dtype": "float8"}, "--dtype 'float8'"),
    ({"engines": "e", "steps": 0}, "--steps must be >= 1"),
    ({"engines": "e", "backend": "tflite"}, "choose one of"),
])
def test_a_source_that_cannot_work_is_refused_with_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PolicySource(**kwargs)


def test_engines_and_checkpoint_give_the_same_actions(demo_checkpoint, demo_engines):
    engines = load_policy(PolicySource(engines=str(demo_engines), steps=10))
    torch_policy = load_policy(PolicySource(checkpoint=str(demo_checkpoint), prompt_cache=str(demo_engines / "prompts.npz")))
    a = engines.infer(OBS, seed=0)["actions_normalized"]
    b = torch_policy.infer(OBS, seed=0)["actions_normalized"]
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert torch_policy.backend.name == "torch" and engines.backend.name == "onnxruntime"


def test_every_checkpoint_option_reaches_the_torch_backend(demo_checkpoint):
    torch = pytest.importorskip("torch")
    policy = load_policy(PolicySource(checkpoint=str(demo_checkpoint), dtype="bfloat16", steps=4))
    assert policy.backend.dtype == torch.bfloat16 and policy.spec.steps == 4
    with pytest.raises(ConfigError, match="only special value is @default"):
        load_policy(PolicySource(engines="@nightly"))
