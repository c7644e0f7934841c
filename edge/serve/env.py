"""The serving environment: `nvidia-pytriton` (Triton's server binary with its Python backend) pins numpy < 2, so the
server runs in its own virtual environment, created on request (`imagewam-edge serve --install-env`, ~1 minute,
~0.5 GB) and never by the main install. Our own code is not installed there: each launch points the environment at
this installation's packages (symlinks in the environment, on PYTHONPATH), so the server always runs the same code
as the robot side. The robot side needs only `tritonclient[grpc]` (numpy 2 is fine) in the main environment.

Location: $IMAGEWAM_SERVE_ENV, else ~/.cache/imagewam-edge/serve-env (not under $IMAGEWAM_EDGE_CACHE: it is a tool
installation, not a cache of engines)."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import ServeEnvError

ENV_VAR = "IMAGEWAM_SERVE_ENV"
# the serving environment's packages (requirements/serve.txt lists the same, for a container or a manual install)
REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy>=1.24,<2", "onnxruntime>=1.20", "pyyaml>=6", "pillow>=9")
MARKER = ".imagewam-serve-ok"
PACKAGES = ("edge", "quantize")  # linked into the environment (quantize: the torch backend, when torch is there)


def env_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imagewam-edge" / "serve-env"


def env_python(root: Path | None = None) -> Path:
    return (root or env_dir()) / "bin" / "python"


def _requirements_key(requirements: Sequence[str]) -> str:
    return "\n".join(requirements) + "\n"


def is_ready(root: Path | None = None, requirements: Sequence[str] = REQUIREMENTS) -> bool:
    root = root or env_dir()
    marker = root / MARKER
    return env_python(root).exists() and marker.is_file() and marker.read_text() == _requirements_key(requirements)


def require_env(root: Path | None = None) -> Path:
    """The serving environment's python, or ServeEnvError with the command that creates it."""
    root = root or env_dir()
    if not is_ready(root):
        state = "is missing" if not root.exists() else "is incomplete or for other requirements"
        raise ServeEnvError(f"the serving environment {root} {state}: create it with `imagewam-edge serve "
                            f"--install-env` (about 1 minute, 0.5 GB: nvidia-pytriton, numpy < 2, onnxruntime), or "
                            f"point ${ENV_VAR} at one")
    return env_python(root)


def install_env(progress: Callable[[str], None] = lambda s: None, root: Path | None = None,
                requirements: Sequence[str] = REQUIREMENTS, extra: Sequence[str] = ()) -> Path:
    """Create the serving environment (one process at a time: a lock; built beside, then renamed into place)."""
    root = root or env_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_ready(root, requirements) and not extra:
            progress(f"serving environment {root} is ready")
            return env_python(root)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.monotonic()
        base = getattr(sys, "_base_executable", None) or sys.executable
        progress(f"creating the serving environment in {root} (python {sys.version.split()[0]})")
        _run([base, "-m", "venv", str(tmp)], "python -m venv")
        progress(f"installing {', '.join(list(requirements) + list(extra))} (about a minute)")
        _run([str(env_python(tmp)), "-m", "pip", "install", "-q", *requirements, *extra], "pip install")
        (tmp / MARKER).write_text(_requirements_key(requirements))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)  # a venv run as `bin/python -m ...` does not care where it was created
        progress(f"serving environment ready in {time.monotonic() - t0:.0f} s")
    return env_python(root)


def _run(cmd: list, what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise ServeEnvError(f"{what} failed (exit {proc.returncode}) while creating the serving environment:\n"
                            + "\n".join(tail) + "\nfix the cause above (network, disk space) and run "
                            "`imagewam-edge serve --install-env` again")


def source_dir(root: Path | None = None) -> Path:
    """A directory in the environment with links to this installation's packages (PYTHONPATH of the server)."""
    root = root or env_dir()
    here = Path(__file__).resolve().parents[2]  # the directory holding the `edge` package
    links = root / "src" / hashlib.sha1(str(here).encode()).hexdigest()[:12]
    links.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        target, link = here / name, links / name
        if not target.is_dir():
            continue
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        tmp = links / f".{name}.{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return links


def server_command(args: Sequence[str], root: Path | None = None) -> tuple[list[str], dict]:
    """(argv, environment) that run `python -m edge.serve.main ARGS` in the serving environment."""
    python = require_env(root)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source_dir(root))  # only our packages: nothing of the main environment (numpy 2)
    env.pop("PYTHONHOME", None)
    return [str(python), "-m", "edge.serve.main", *args], env


def describe(root: Path | None = None) -> dict:
    root = root or env_dir()
    return {"path": str(root), "python": str(env_python(root)), "ready": is_ready(root),
            "requirements": list(REQUIREMENTS), "this_python_libdir": sysconfig.get_config_var("LIBDIR")}
