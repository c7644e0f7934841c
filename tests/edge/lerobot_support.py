"""Import lerobot's dataset API for the tests, or skip with the reason.

lerobot.datasets imports `torchvision.transforms` at module level (for `ToTensor`, used only on `image` features
when frames are read as torch tensors). PyPI offers no CPU build of torchvision: its Linux wheels are CUDA builds
that cannot load against the CPU torch this project installs (`operator torchvision::nms does not exist`), and the
PyTorch CPU index is out of reach here. When no working torchvision is installed, the tests stand in a minimal
`torchvision.transforms.ToTensor` for the time of the module and take it out again afterwards; everything the tests
check (Parquet, MP4 encoding through PyAV, metadata, LeRobotDataset loading) is lerobot's own code.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types

import pytest


class _ToTensor:
    def __call__(self, pic):
        import numpy as np
        import torch

        return torch.from_numpy(np.asarray(pic).copy()).permute(2, 0, 1).float() / 255  # (C, H, W) in [0, 1]


def _stand_in() -> dict:
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    tr.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
    tr.ToTensor = _ToTensor
    tv.transforms = tr
    return {"torchvision": tv, "torchvision.transforms": tr}


@contextlib.contextmanager
def lerobot_dataset_api():
    """Yields lerobot.datasets.lerobot_dataset; skips the caller when lerobot is not installed."""
    try:
        import lerobot  # noqa: F401
    except ImportError:
        pytest.skip("lerobot is not installed (pip install 'imagewam-edge[lerobot]'): the LeRobot interop is "
                    "workstation-only and optional")
    added: dict = {}
    try:
        import torchvision  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]  # a half-imported CUDA torchvision
        added = _stand_in()
        sys.modules.update(added)
    try:
        from lerobot.datasets import lerobot_dataset
    except Exception as exc:
        for name in added:
            sys.modules.pop(name, None)
        pytest.skip(f"lerobot's dataset API does not import here ({type(exc).__name__}: {exc})")
    try:
        yield lerobot_dataset
    finally:
        for name in added:
            sys.modules.pop(name, None)
