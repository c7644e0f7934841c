"""`imagewam-edge serve` inside the serving environment: our policy bound into Triton Inference Server with PyTriton
(Triton's own server binary, shipped in `nvidia-pytriton`, runs as a child process; our Python process runs the
policy, one policy per model instance). Triton gives gRPC and HTTP, health and readiness (`/v2/health/ready`,
ServerReady/ModelReady), request queueing for several robots, and metrics.

Runs until SIGINT/SIGTERM; `progress` gets one line per stage (the CLI prints them on stderr)."""
from __future__ import annotations

import logging
import os
import signal
import sysconfig
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import ConfigError, MissingDependencyError
from .errors import ServeEnvError
from . import protocol
from .handler import PolicyHandler, SpecHandler

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt", "torch")


@dataclass(frozen=True)
class ServeConfig:
    engines: Optional[str] = None  # exported engines directory (onnxruntime / tensorrt)
    backend: str = "onnxruntime"
    checkpoint: Optional[str] = None  # release directory (torch backend)
    device: str = "cpu"  # torch backend
    host: str = "127.0.0.1"  # loopback by default; 0.0.0.0 serves other machines (a fleet)
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    instances: int = 1  # model instances = policies loaded = control steps computed at the same time
    threads: int = 0  # onnxruntime intra-op threads per instance (0: its default)
    prompt_cache: Optional[str] = None
    steps: Optional[int] = None
    log_file: Optional[str] = None  # Triton's own log (default: this process's stdout)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.backend == "torch" and not self.checkpoint:
            raise ConfigError("--backend torch serves a checkpoint: give --checkpoint DIR (a release directory)")
        if self.backend != "torch" and not self.engines:
            raise ConfigError(f"--backend {self.backend} serves engines: give --engines DIR (written by "
                              "`imagewam-edge export`), or --engines @default for the embedded default's")
        ports = (self.grpc_port, self.http_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(1 <= p <= 65535 for p in ports):
            raise ConfigError(f"--grpc-port/--http-port/--metrics-port must be three different ports 1..65535, got "
                              f"{ports}")
        if not 1 <= self.instances <= 64:
            raise ConfigError(f"--instances must be 1..64 (one policy each in memory), got {self.instances}")
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0, got {self.threads}")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.grpc_port}"


def load_policies(cfg: ServeConfig, progress: Callable[[str], None]) -> list:
    """One policy per instance, through the one policy loader (edge/loader.py) every command uses."""
    from ..loader import PolicySource, load_policy

    if cfg.backend == "torch":
        source = PolicySource(checkpoint=cfg.checkpoint, backend="torch", prompt_cache=cfg.prompt_cache,
                              steps=cfg.steps, device=cfg.device)
    else:
        source = PolicySource(engines=cfg.engines, backend=cfg.backend, prompt_cache=cfg.prompt_cache,
                              steps=cfg.steps, threads=cfg.threads)
    out = []
    for k in range(cfg.instances):
        progress(f"loading policy instance {k + 1}/{cfg.instances} ({cfg.backend})")
        try:
            out.append(load_policy(source, progress))
        except ImportError as exc:
            if cfg.backend != "torch":
                raise
            raise MissingDependencyError(
                f"--backend torch needs torch in the serving environment ({exc}); install it there with: "
                "<serve env>/bin/python -m pip install torch (the path: `imagewam-edge serve --env-info`)") from exc
    return out


def _python_library_path() -> None:
    """Triton's Python-backend stub links libpython of this minor version: make it this interpreter's (a pyenv or
    conda Python otherwise gets the system's libpython with another patch level, and its stdlib breaks)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)


def _tensors(specs, optional: bool = True) -> list:
    from pytriton.model_config import Tensor

    return [Tensor(name=s[0], dtype=s[1], shape=s[2], **({"optional": s[3]} if optional and len(s) > 3 else {}))
            for s in specs]


def _per_request(handler) -> Callable:
    """A PyTriton inference callable over `handler` (one request at a time: no batching)."""

    def infer(requests):
        return [handler(dict(r.items())) for r in requests]

    return infer


def serve(cfg: ServeConfig, progress: Callable[[str], None] = lambda s: None,
          stop: Optional[threading.Event] = None) -> dict:
    """Load the policies, start Triton, serve until `stop` is set (SIGINT / SIGTERM set it); returns a summary."""
    try:
        from pytriton.model_config import ModelConfig
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise MissingDependencyError(
            f"nvidia-pytriton is not importable here ({exc}): `imagewam-edge serve` runs in its own environment; "
            "create it with `imagewam-edge serve --install-env`") from exc
    stop = stop or threading.Event()
    t0 = time.monotonic()
    policies = load_policies(cfg, progress)
    handlers = [PolicyHandler(p, k) for k, p in enumerate(policies)]
    server_info = {"backend": cfg.backend, "engines": cfg.engines, "checkpoint": cfg.checkpoint,
                   "instances": cfg.instances}
    n_slots = handlers[0].n_slots
    _python_library_path()
    tcfg = TritonConfig(grpc_address=cfg.host, grpc_port=cfg.grpc_port, http_address=cfg.host,
                        http_port=cfg.http_port, metrics_port=cfg.metrics_port, exit_timeout_secs=5,
                        log_file=cfg.log_file)
    progress(f"starting Triton Inference Server on {cfg.host} (gRPC {cfg.grpc_port}, HTTP {cfg.http_port})")
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        with Triton(config=tcfg) as triton:
            triton.bind(protocol.MODEL, [_per_request(h) for h in handlers],
                        inputs=_tensors(protocol.model_inputs(n_slots)), outputs=_tensors(protocol.MODEL_OUTPUTS),
                        config=ModelConfig(batching=False))
            triton.bind(protocol.SPEC_MODEL, _per_request(SpecHandler(handlers[0], server_info)),
                        inputs=_tensors(protocol.SPEC_INPUTS), outputs=_tensors(protocol.SPEC_OUTPUTS),
                        config=ModelConfig(batching=False))
            triton.run()
            progress(f"ready in {time.monotonic() - t0:.1f} s: gRPC {cfg.url} (model {protocol.MODEL!r}); "
                     "Ctrl-C stops")
            while not stop.wait(0.2):
                if not triton.is_alive():
                    raise ServeEnvError("Triton Inference Server exited on its own; its log (above, or --log-file) says why")
            progress("stopping")
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return {"served": sum(h.served for h in handlers), "instances": cfg.instances,
            "seconds": round(time.monotonic() - t0, 1)}
