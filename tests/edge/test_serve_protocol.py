"""The serving path without a server (fast): the tensor protocol both sides share, the validated configs, the
error mapping, the model repository written for a stock Triton container, the serving environment's checks, and a
client that finds no server."""
import ast
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.serve import protocol

ROOT = Path(__file__).resolve().parents[2]


def test_request_round_trip_keeps_every_value():
    rng = np.random.default_rng(0)
    obs = {"images": [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (8, 8, 3), np.uint8)],
           "state": rng.standard_normal(7), "instruction": "pick up the red block ünïcode"}
    noise = rng.standard_normal((16, 7)).astype(np.float32)
    arrays = protocol.request_arrays(obs, 2, noise=noise, seed=5)
    assert set(arrays) == {"image_0", "image_1", "state", "instruction", "seed", "noise"}
    back, n, seed = protocol.obs_from_arrays(arrays, 2)
    assert seed == 5 and np.array_equal(n, noise) and back["instruction"] == obs["instruction"]
    assert all(np.array_equal(a, b) for a, b in zip(back["images"], obs["images"]))
    assert np.array_equal(back["state"], obs["state"])
    # no seed, no noise: the optional inputs are left out; NO_SEED means "none" too
    arrays = protocol.request_arrays(obs, 2)
    assert "seed" not in arrays and "noise" not in arrays
    assert protocol.obs_from_arrays({**arrays, "seed": np.array([protocol.NO_SEED])}, 2)[2] is None
    with pytest.raises(ConfigError, match="takes 1 camera image"):
        protocol.request_arrays(obs, 1)


def test_response_is_lossless_and_carries_the_server_timings():
    actions = np.random.default_rng(1).standard_normal((16, 7)).astype(np.float32)
    out = protocol.response_arrays({"actions": actions, "actions_normalized": actions, "timings_ms": {"total": 3.0},
                                    "step_ms": [0.1, 0.2], "transfer_bytes": {"h2d": {}}}, server_ms=4.0)
    assert out["actions"].dtype == np.float64 and np.array_equal(out["actions"].astype(np.float32), actions)
    info = protocol.decode_json(out["info"])
    assert info == {"timings_ms": {"total": 3.0}, "step_ms": [0.1, 0.2], "transfer_bytes": {"h2d": {}},
                    "server_ms": 4.0}


def test_remote_config_is_validated():
    from edge.serve.client import RemoteConfig

    assert RemoteConfig("127.0.0.1:8001").timeout_s == 2.0
    RemoteConfig("gpu-server.local:8001", timeout_s=0.5)
    for bad in ("127.0.0.1", "http://x:8001", "", "host:port"):
        with pytest.raises(ConfigError, match="host:port"):
            RemoteConfig(bad)
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        RemoteConfig("127.0.0.1:8001", timeout_s=0)


def test_server_errors_become_typed_errors_with_the_servers_message():
    from edge.serve.client import server_error
    from edge.serve.errors import RemotePolicyError

    class Exc:
        def __init__(self, m):
            self.m = m

        def message(self):
            return self.m

    wrapped = ("Failed to process the request(s) for model 'imagewam_0_0', message: TritonModelException: Model "
               "execute error: Traceback (most recent call last):\n  File \"x.py\", line 1\n"
               "edge.errors.ConfigError: state must be 7 finite values, got [0.0]\n\n\nAt:\n  model.py(501): execute\n")
    e = server_error(Exc(wrapped))
    assert isinstance(e, ConfigError) and "state must be 7 finite values" in str(e)
    e = server_error(Exc("ConfigError: instruction 'x' is not in the prompt cache"))  # the Python-backend form
    assert isinstance(e, ConfigError)
    e = server_error(Exc("RuntimeError: CUDA out of memory"))
    assert isinstance(e, RemotePolicyError) and "RuntimeError: CUDA out of memory" in str(e)


def test_serve_config_is_validated():
    from edge.serve.server import ServeConfig

    assert ServeConfig(engines="e").url == "127.0.0.1:8001"
    assert ServeConfig(engines="e", host="0.0.0.0", grpc_port=9001).url == "127.0.0.1:9001"
    for kw, match in (({}, "give --engines"), ({"backend": "torch"}, "--checkpoint"),
                      ({"engines": "e", "grpc_port": 8000}, "three different ports"),
                      ({"engines": "e", "instances": 0}, "--instances"), ({"engines": "e", "backend": "x"}, "one of")):
        with pytest.raises(ConfigError, match=match):
            ServeConfig(**kw)


def test_model_repository_matches_the_protocol(tmp_path):
    from edge.serve.model_repo import write_model_repository
    from edge.serve.server import ServeConfig

    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "policy.json").write_text(
        '{"variant": "flux2", "action_dim": 7, "state_dim": 7, "text_width": 96, "head_dim": 32, '
        '"axes_dim": [8, 8, 8, 8], "theta": 2000.0, "embodiment": "sim", "text_encoder": "t"}')
    repo = write_model_repository(ServeConfig(engines=str(engines), instances=3), tmp_path / "repo")
    cfg = (repo / "imagewam" / "config.pbtxt").read_text()
    names = [line.split('"')[1] for line in cfg.splitlines() if line.strip().startswith("name:")][1:]
    assert names == [s[0] for s in protocol.model_inputs(1)] + [s[0] for s in protocol.MODEL_OUTPUTS]
    assert 'backend: "python"' in cfg and "count: 3" in cfg and cfg.count("optional: true") == 2
    assert str(engines) in cfg and "max_batch_size: 0" in cfg
    for model in ("imagewam", "imagewam_spec"):
        ast.parse((repo / model / "1" / "model.py").read_text())  # valid Python
    assert "tritonserver --model-repository" in (repo / "README.md").read_text()
    with pytest.raises(ConfigError, match="torch"):
        write_model_repository(ServeConfig(backend="torch", checkpoint="c"), tmp_path / "r2")


def test_missing_serving_environment_says_how_to_create_it(tmp_path, monkeypatch):
    from edge.serve import env
    from edge.serve.errors import ServeEnvError

    monkeypatch.setenv(env.ENV_VAR, str(tmp_path / "none"))
    assert env.env_dir() == tmp_path / "none" and not env.is_ready()
    with pytest.raises(ServeEnvError, match="imagewam-edge serve --install-env"):
        env.server_command(["--engines", "x"])


def test_serve_requirements_file_lists_the_environment():
    from edge.serve.env import REQUIREMENTS

    lines = [l.strip() for l in (ROOT / "requirements" / "serve.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert tuple(lines) == REQUIREMENTS


def test_source_links_point_at_this_installation(tmp_path, monkeypatch):
    from edge.serve import env

    monkeypatch.setenv(env.ENV_VAR, str(tmp_path / "env"))
    links = env.source_dir()
    assert (links / "edge").resolve() == (ROOT / "edge").resolve()
    assert env.source_dir() == links  # idempotent


def test_no_server_fails_fast_with_the_fix():
    pytest.importorskip("tritonclient.grpc")
    from edge.serve.client import RemoteConfig, RemotePolicy
    from edge.serve.errors import RemotePolicyError
    from edge.serve.launch import free_ports

    port = free_ports(1)[0]
    said = []
    t = time.monotonic()
    with pytest.raises(RemotePolicyError, match="imagewam-edge serve"):
        RemotePolicy(RemoteConfig(f"127.0.0.1:{port}", timeout_s=0.2, connect_timeout_s=0.5), said.append)
    assert time.monotonic() - t < 5.0 and said and "waiting for the policy server" in said[0]


def test_handler_serves_the_torch_backend_like_the_policy_itself(demo_checkpoint):
    """`serve --backend torch`: the policies the server loads, one request through the handler (no Triton) equals the
    policy called directly; the spec handler answers policy.json (the torch policy has its text encoder: a new
    instruction is encoded, not refused)."""
    from edge.serve.handler import PolicyHandler, SpecHandler
    from edge.serve.server import ServeConfig, load_policies

    said = []
    policy, = load_policies(ServeConfig(backend="torch", checkpoint=str(demo_checkpoint)), said.append)
    assert said == ["loading policy instance 1/1 (torch)"]
    handler = PolicyHandler(policy)
    rng = np.random.default_rng(2)
    obs = {"images": [rng.integers(0, 256, (s.height, s.width, 3), dtype=np.uint8) for s in policy.canvas.slots],
           "state": rng.uniform(-0.5, 0.5, policy.spec.state_dim), "instruction": "pick up the red block"}
    out = handler(protocol.request_arrays(obs, len(policy.canvas.slots), seed=4))
    np.testing.assert_array_equal(out["actions"], np.asarray(policy.infer(obs, seed=4)["actions"], np.float64))
    assert protocol.decode_json(out["info"])["server_ms"] > 0 and handler.served == 1
    spec = SpecHandler(handler, {"backend": "torch"})
    doc = protocol.decode_json(spec({"instruction": protocol.encode_text("pick up the red block")})["spec"])
    assert doc["spec"] == policy.spec.to_dict() and doc["protocol"] == protocol.PROTOCOL
    spec({"instruction": protocol.encode_text("never seen before")})
