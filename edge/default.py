"""The embedded default (`imagewam-edge run` without --config): the tiny demo checkpoint exported to ONNX and run
through onnxruntime on the CPU, a simulated camera and a simulated Dynamixel controller in its own process on a pty.

Set up on first use and cached under $IMAGEWAM_EDGE_CACHE (default ~/.cache/imagewam-edge): writing the demo
checkpoint and exporting it needs torch once (~30 s on 2 cores); later runs load the cached engines without torch."""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Callable

from .config import CONFIG_DIR

log = logging.getLogger(__name__)

CACHE_ENV = "IMAGEWAM_EDGE_CACHE"
LAYOUT = "default-v1"  # bump when the default's checkpoint or export changes
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
DEFAULT_INSTRUCTION = "pick up the red block"
DEMO = {"embodiment": "sim", "state_dim": 7, "action_dim": 7}  # 6 joints + gripper, one 64x64 camera canvas


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imagewam-edge"


def default_engines_dir() -> Path:
    return cache_dir() / LAYOUT / "engines"


def _ready(engines: Path) -> bool:
    return (engines / "policy.json").is_file() and (engines / "prompts.npz").is_file()


def ensure_default_engines(progress: Callable[[str], None] = lambda s: None,
                           instructions: tuple = (DEFAULT_INSTRUCTION,)) -> Path:
    """The cached default engines directory, created on first use (one process at a time: a file lock)."""
    engines = default_engines_dir()
    if _ready(engines):
        return engines
    root = engines.parent
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(engines):  # another process finished it while we waited
            return engines
        from .errors import require

        require("torch", "export")  # only this one-time setup needs torch
        from quantize.export import export_checkpoint
        from quantize.variants import write_demo

        progress(f"first run: writing the tiny demo checkpoint to {root / 'checkpoint'}")
        checkpoint = write_demo("flux2-tiny", root / "checkpoint", **DEMO)
        progress("first run: exporting it to ONNX (about 30 s; cached for the next runs)")
        export_checkpoint(checkpoint, engines, instructions=list(instructions), progress=progress)
    return engines
