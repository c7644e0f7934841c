"""`policy.backend: remote` in the run config, and the `serve` subcommand on the one console script (fast: no server)."""
import functools
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import CONFIG_DIR, from_dict, from_yaml
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"instruction": "move to the red block", "cameras": [{"kind": "sim", "slot": "main"}],
        "arms": [{"protocol": "dynamixel", "port": "@sim", "ids": [1, 2]}]}


def test_remote_example_config_validates():
    cfg = from_yaml(CONFIG_DIR / "remote.yaml")
    assert cfg.policy.backend == "remote" and cfg.policy.url == "127.0.0.1:8001" and cfg.policy.timeout_s == 2.0
    assert cfg.policy.engines is None  # the server has the engines


@pytest.mark.parametrize("policy, field", [
    ({"backend": "remote"}, "policy.url"),
    ({"backend": "remote", "url": "http://gpu:8001"}, "policy.url"),
    ({"backend": "remote", "url": "gpu:8001", "timeout_s": 0}, "policy.timeout_s"),
    ({"backend": "remote", "url": "gpu:8001", "fallback": "torch", "checkpoint": "c"}, "policy.fallback"),
    ({"backend": "onnxruntime", "engines": "e", "url": "gpu:8001"}, "policy.url"),
    ({"backend": "onnxruntime", "engines": "e", "timeout_s": 1.0}, "policy.timeout_s"),
])
def test_remote_fields_are_checked(policy, field):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        from_dict({**BASE, "policy": policy}, "robot.yaml")


def test_remote_backend_connects_through_the_runtime_and_says_what_to_do_without_a_server(monkeypatch):
    pytest.importorskip("tritonclient.grpc")
    import edge.serve.client as client
    from edge.runtime import load_policy
    from edge.serve.errors import RemotePolicyError
    from edge.serve.launch import free_ports

    cfg = from_dict({**BASE, "policy": {"backend": "remote", "url": f"127.0.0.1:{free_ports(1)[0]}"}}, "robot.yaml")
    monkeypatch.setattr(client, "RemoteConfig", functools.partial(client.RemoteConfig, connect_timeout_s=0.3))
    said = []
    with pytest.raises(RemotePolicyError, match="imagewam-edge serve"):
        load_policy(cfg.policy, cfg.source, said.append)
    assert any("waiting for the policy server" in s for s in said)


def test_serve_is_a_subcommand_with_an_example_and_a_clear_error_without_its_environment(tmp_path):
    env = {"IMAGEWAM_SERVE_ENV": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert out.returncode == 0 and "imagewam-edge serve --engines @default" in out.stdout
    assert "edge/configs/remote.yaml" in out.stdout
    out = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--engines", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 1 and "imagewam-edge serve --install-env" in out.stderr
    assert "Traceback" not in out.stderr
