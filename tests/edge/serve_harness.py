"""A real Triton server for the serving tests: `python -m edge.serve.main` in the serving environment (PyTriton), or
Triton's own binary (from the same nvidia-pytriton) on a model repository, as a stock container runs it; each in its
own process group on loopback, killed by that group's id."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


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


def free_ports(n: int = 3) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """One Triton server process group; `start()` waits until both models are ready."""

    def __init__(self, engines: Path, log_dir: Path, ports: list[int] | None = None, instances: int = 1,
                 repository: Path | None = None):
        self.engines, self.log_dir, self.instances, self.repository = Path(engines), Path(log_dir), instances, repository
        self.grpc, self.http, self.metrics = ports or free_ports()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def _command(self) -> tuple[list, dict]:
        from edge.serve import env

        ports = ["--grpc-port", str(self.grpc), "--http-port", str(self.http), "--metrics-port", str(self.metrics)]
        if self.repository is None:
            return env.server_command(["--engines", str(self.engines), "--instances", str(self.instances), *ports,
                                       "--log-file", str(self.log_dir / f"triton-{self.starts}.log")])
        return stock_triton_command(self.repository, self.log_dir / "stock-triton", self.grpc, self.http, self.metrics)

    def start(self, timeout: float = 90.0) -> "Server":
        argv, environ = self._command()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"server-{self.starts}.out", "w")
        self.proc = subprocess.Popen(argv, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as g

        from edge.serve import protocol

        deadline = time.monotonic() + timeout
        client = g.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.log_dir}")
                try:
                    if client.is_model_ready(protocol.MODEL) and client.is_model_ready(protocol.SPEC_MODEL):
                        return
                except Exception:
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        self.kill()
        raise RuntimeError(f"the server was not ready after {timeout:g} s; see {self.log_dir}")

    def kill(self, sig=signal.SIGKILL) -> None:
        """Kill the whole process group this test started (our process, tritonserver, its stubs)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def stock_triton_command(repository: Path, workdir: Path, grpc: int, http: int, metrics: int) -> tuple[list, dict]:
    """Triton's binary from the serving environment's nvidia-pytriton, run on a model repository the way a stock
    container runs it (the Python-backend stub of this Python version copied into a backends directory)."""
    import sys

    from edge.serve import env

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
    import sysconfig

    environ = dict(os.environ)
    environ["PATH"] = f"{python.parent}:{environ['PATH']}"  # the stub runs the environment's Python (numpy < 2)
    libs = (str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR"), environ.get("LD_LIBRARY_PATH"))
    environ["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    return [str(workdir / "bin" / "tritonserver"), f"--model-repository={repository}",
            f"--backend-directory={workdir / 'backends'}", "--grpc-address=127.0.0.1", "--http-address=127.0.0.1",
            f"--grpc-port={grpc}", f"--http-port={http}", f"--metrics-port={metrics}", "--exit-timeout-secs=5"], environ
