"""Normalisation of states and actions from the checkpoint's `dataset_stats.json` (official layout:
`{"action"|"state": {"default": {"global_min": [...], "global_max": [...], "global_mean", "global_std", ...}}}`).

min/max maps [min, max] -> [-1, 1] (dimensions with a range below 1e-4 only shift); z-score divides by std+1e-8;
normalised values are clamped to +-5, as the official normaliser."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError

MODES = ("min/max", "z-score")
CLAMP = 5.0


@dataclass(frozen=True)
class Normalizer:
    scale: np.ndarray  # [D] float64
    offset: np.ndarray  # [D] float64
    mode: str

    @property
    def dim(self) -> int:
        return int(self.scale.shape[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} values, got {x.shape[-1]}")
        return np.clip(x * self.scale + self.offset, -CLAMP, CLAMP).astype(np.float32)

    def backward(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if y.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} values, got {y.shape[-1]}")
        return ((y - self.offset) / self.scale).astype(np.float32)


def make_normalizer(stats: dict, mode: str, prefix: str = "global_") -> Normalizer:
    if mode == "min/max":
        lo, hi = np.asarray(stats[prefix + "min"], np.float64), np.asarray(stats[prefix + "max"], np.float64)
        rng = hi - lo
        small = rng < 1e-4
        scale = np.where(small, 1.0, 2.0 / np.where(small, 1.0, rng))
        offset = np.where(small, -lo, -1.0 - scale * lo)
    elif mode == "z-score":
        mean, std = np.asarray(stats[prefix + "mean"], np.float64), np.asarray(stats[prefix + "std"], np.float64)
        scale, offset = 1.0 / (std + 1e-8), -mean / (std + 1e-8)
    else:
        raise ValueError(f"normalisation mode must be one of {MODES}, got {mode!r}")
    return Normalizer(scale=scale, offset=offset, mode=mode)


def load_normalizers(path: str | Path, mode: str, key: str = "default", stepwise_action: bool = False):
    """Returns (state_normalizer, action_normalizer) from dataset_stats.json."""
    path = Path(path)
    try:
        stats = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: the checkpoint directory must hold dataset_stats.json "
                              "(the normalisation statistics written at training time)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); restore it from the training run") from None
    out = []
    for field, prefix in (("state", "global_"), ("action", "stepwise_" if stepwise_action else "global_")):
        try:
            entry = stats[field][key]
            out.append(make_normalizer(entry, mode, prefix))
        except KeyError as exc:
            raise CheckpointError(
                f"{path}: missing {field}.{key}.{exc.args[0] if exc.args else ''} needed for {mode} normalisation; "
                f"expected {{\"{field}\": {{\"{key}\": {{\"{prefix}min\": [...], \"{prefix}max\": [...], "
                f"\"{prefix}mean\": [...], \"{prefix}std\": [...]}}}}}}") from None
    return out[0], out[1]
