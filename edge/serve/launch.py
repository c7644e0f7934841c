"""A policy server in a child process group (for a benchmark, a test, or a supervisor of your own): start it in the
serving environment, wait until both models are ready, stop it (SIGTERM, or SIGKILL of the whole group: our process,
tritonserver and its stubs)."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import protocol
from .errors import ServeEnvError

log = logging.getLogger(__name__)


def free_ports(n: int = 3, host: str = "127.0.0.1") -> list[int]:
    """n TCP ports free on `host` right now (handed out by the kernel)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_ready(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Until Triton at `url` reports both models ready; ServeEnvError after `timeout_s` or when `alive()` fails."""
    import tritonclient.grpc as g

    deadline = time.monotonic() + timeout_s
    client = g.InferenceServerClient(url)
    try:
        while time.monotonic() < deadline:
            if not alive():
                raise ServeEnvError(f"the policy server for {url} exited before it was ready; see its log")
            try:
                if client.is_model_ready(protocol.MODEL) and client.is_model_ready(protocol.SPEC_MODEL):
                    return
            except Exception:  # not listening yet: tritonclient raises its own exception type
                pass
            time.sleep(0.2)
    finally:
        client.close()
    raise ServeEnvError(f"the policy server at {url} was not ready after {timeout_s:g} s; see its log")


class ServerProcess:
    """`imagewam-edge serve` (or any command line `command()` returns) as a child process group on loopback."""

    def __init__(self, engines: Optional[str | Path], log_dir: str | Path, ports: Optional[Sequence[int]] = None,
                 instances: int = 1, extra: Sequence[str] = (),
                 command: Optional[Callable[["ServerProcess"], tuple[list, dict]]] = None):
        self.engines, self.log_dir, self.instances, self.extra = engines, Path(log_dir), instances, list(extra)
        self.grpc, self.http, self.metrics = ports or free_ports()
        self.command = command or ServerProcess.serve_command
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def serve_command(self) -> tuple[list, dict]:
        from .env import server_command

        return server_command(["--engines", str(self.engines), "--instances", str(self.instances),
                               "--grpc-port", str(self.grpc), "--http-port", str(self.http), "--metrics-port",
                               str(self.metrics), "--log-file", str(self.log_dir / f"triton-{self.starts}.log"),
                               *self.extra])

    def start(self, timeout_s: float = 120.0, attempts: int = 2) -> "ServerProcess":
        """Start and wait until ready; a start that fails is tried again (`attempts` in all): PyTriton 0.7 with
        several instances can lose a start-up race on a loaded machine (the second instance's stub connects to the
        first one's handshake socket before it listens: ConnectionRefusedError in the model's initialize)."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout_s)
            except ServeEnvError as exc:
                if attempt == attempts:
                    raise
                log.warning("policy server start %d/%d failed (%s); trying again", attempt, attempts,
                            str(exc).splitlines()[0])
        return self

    def _start(self, timeout_s: float) -> "ServerProcess":
        argv, environ = self.command(self)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"server-{self.starts}.out", "w") as out:
            self.proc = subprocess.Popen(argv, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.starts += 1
        try:
            wait_ready(self.url, timeout_s, alive=lambda: self.proc is not None and self.proc.poll() is None)
        except ServeEnvError as exc:
            self.kill()
            out = self.log_dir / f"server-{self.starts - 1}.out"
            tail = "\n".join(out.read_text(errors="replace").splitlines()[-20:]) if out.exists() else ""
            raise ServeEnvError(f"{exc} ({self.log_dir}); the server's last lines:\n{tail}") from None
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group this object started, and reap it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        """A clean stop (SIGTERM: Triton finishes what is in flight)."""
        self.kill(signal.SIGTERM)


def repository_command(repository: str | Path, workdir: str | Path) -> Callable[[ServerProcess], tuple[list, dict]]:
    """A `command` for ServerProcess: Triton's own binary from the serving environment's nvidia-pytriton on a model
    repository (`serve --model-repository`), as a stock container runs it, without docker: the Python-backend stub
    of this Python version copied into a backends directory under `workdir`; the stub runs the serving environment's
    Python (numpy < 2)."""
    from .env import env_dir, require_env

    repository, workdir = Path(repository), Path(workdir)

    def command(srv: ServerProcess) -> tuple[list, dict]:
        python = require_env()
        site = next((env_dir() / "lib").glob("python3*/site-packages"))
        dist = site / "pytriton" / "tritonserver"
        if not (workdir / "bin").exists():
            workdir.mkdir(parents=True, exist_ok=True)
            for name in ("bin", "backends", "caches"):
                shutil.copytree(dist / name, workdir / name)
            version = f"{sys.version_info[0]}.{sys.version_info[1]}"
            shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                        workdir / "backends" / "python")
        environ = dict(os.environ)
        environ["PATH"] = f"{python.parent}:{environ['PATH']}"  # the stub finds its Python (and site-packages) here
        libs = (str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR"), environ.get("LD_LIBRARY_PATH"))
        environ["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        return [str(workdir / "bin" / "tritonserver"), f"--model-repository={repository}",
                f"--backend-directory={workdir / 'backends'}", "--grpc-address=127.0.0.1", "--http-address=127.0.0.1",
                f"--grpc-port={srv.grpc}", f"--http-port={srv.http}", f"--metrics-port={srv.metrics}",
                "--exit-timeout-secs=5"], environ

    return command
