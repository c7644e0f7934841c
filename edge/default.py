"""The embedded default (`imagewam-edge run` without --config): the tiny ImageWAM trained on the closed-loop toy task
(shipped in edge/assets/toy_checkpoint, written by scripts/train_toy.py) exported to ONNX and run through onnxruntime
on the CPU, the task camera (edge/task) and a simulated Dynamixel controller in its own process on a pty.

Set up on first use and cached under $IMAGEWAM_EDGE_CACHE (default ~/.cache/imagewam-edge): copying the checkpoint and
exporting it needs torch once (~30 s on 2 cores); later runs load the cached engines without torch."""
from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Callable

from .config import CONFIG_DIR, DEFAULT_CONFIG  # noqa: F401  (re-exported)
from .paths import CACHE_ENV, cache_dir  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

LAYOUT = "default-v3"  # bump when the default's checkpoint or export changes (v2: the trained toy-task checkpoint; v3: its
# image encoder pretrained on the task's scenes: 100/100 held-out kinematic episodes)
DEFAULT_INSTRUCTION = "move to the red block"
TOY_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "toy_checkpoint"
# the task's instructions, and the old demo instruction (still the `bench` default)
INSTRUCTIONS = ("move to the red block", "move to the green block", "move to the blue block", "pick up the red block")


def default_engines_dir() -> Path:
    return cache_dir() / LAYOUT / "engines"


def _ready(engines: Path) -> bool:
    return (engines / "policy.json").is_file() and (engines / "prompts.npz").is_file()


def ensure_default_engines(progress: Callable[[str], None] = lambda s: None,
                           instructions: tuple = INSTRUCTIONS) -> Path:
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
        import shutil

        from quantize.export import export_checkpoint

        if not (TOY_CHECKPOINT / "model.pt").is_file():
            from .errors import CheckpointError

            raise CheckpointError(f"{TOY_CHECKPOINT} is missing from the installation; reinstall the package or "
                                  "write it with `python scripts/train_toy.py --out edge/assets/toy_checkpoint`")
        checkpoint = root / "checkpoint"
        progress(f"first run: copying the trained toy-task checkpoint to {checkpoint}")
        if checkpoint.exists():
            shutil.rmtree(checkpoint)
        shutil.copytree(TOY_CHECKPOINT, checkpoint)
        progress("first run: exporting it to ONNX (about 30 s; cached for the next runs)")
        export_checkpoint(checkpoint, engines, instructions=list(instructions), progress=progress)
    return engines
