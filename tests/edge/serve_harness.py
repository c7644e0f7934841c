"""Helpers of the serving tests: skip without the serving environment (not in CI), and Triton's own binary (from the
serving environment's nvidia-pytriton) on a model repository, the way a stock container runs it."""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from edge.serve.launch import ServerProcess  # noqa: F401  (the tests import it from here)


def serve_env_or_skip() -> Path:
    """The serving environment's python; skipped when it is missing, except in CI (.ci/run creates it)."""
    from edge.serve import env
    from edge.serve.errors import ServeEnvError

    try:
        return env.require_env()
    except ServeEnvError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no serving environment: {exc}")


def stock_triton(repository: Path, workdir: Path):
    """A `command` for ServerProcess: tritonserver --model-repository (the Python-backend stub of this Python version
    copied into a backends directory, as the stock container has it)."""
    from edge.serve import env

    def command(srv: ServerProcess):
        python = env.require_env()
        site = next((env.env_dir() / "lib").glob("python3*/site-packages"))
        dist = site / "pytriton" / "tritonserver"
        if not (workdir / "bin").exists():
            workdir.mkdir(parents=True, exist_ok=True)
            for name in ("bin", "backends", "caches"):
                shutil.copytree(dist / name, workdir / name)
            version = f"{sys.version_info[0]}.{sys.version_info[1]}"
            shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                        workdir / "backends" / "python")
        environ = dict(os.environ)
        environ["PATH"] = f"{python.parent}:{environ['PATH']}"  # the stub runs the environment's Python (numpy < 2)
        libs = (str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR"), environ.get("LD_LIBRARY_PATH"))
        environ["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        return [str(workdir / "bin" / "tritonserver"), f"--model-repository={repository}",
                f"--backend-directory={workdir / 'backends'}", "--grpc-address=127.0.0.1", "--http-address=127.0.0.1",
                f"--grpc-port={srv.grpc}", f"--http-port={srv.http}", f"--metrics-port={srv.metrics}",
                "--exit-timeout-secs=5"], environ

    return command
