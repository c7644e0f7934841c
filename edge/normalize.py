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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); restore it from the training run") from None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); check its permissions or copy it again") from None
    if not isinstance(stats, dict):
        raise CheckpointError(f"{path} must hold a JSON object {{\"state\": ..., \"action\": ...}}, got "
                              f"{type(stats).__name__}; restore it from the training run")
    out = []
    for field, prefix in (("state", "global_"), ("action", "stepwise_" if stepwise_action else "global_")):
        expected = (f"expected {{\"{field}\": {{\"{key}\": {{\"{prefix}min\": [...], \"{prefix}max\": [...], "
                    f"\"{prefix}mean\": [...], \"{prefix}std\": [...]}}}}}}")
        entry = stats.get(field)
        entry = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path}: missing {field}.{key} (or it is not an object) needed for {mode} "
                                  f"normalisation; {expected}")
        _check_finite(entry, f"{field}.{key}", path)
        names = [prefix + n for n in (("min", "max") if mode == "min/max" else ("mean", "std"))] if mode in MODES else []
        missing = [n for n in names if n not in entry]
        if missing:
            raise CheckpointError(f"{path}: missing {field}.{key}.{missing[0]} needed for {mode} normalisation; {expected}")
        arrays = {}
        for n in names:
            try:
                arrays[n] = np.asarray(entry[n], np.float64)
            except (TypeError, ValueError):
                raise CheckpointError(f"{path}: {field}.{key}.{n} must be a list of numbers, got {entry[n]!r:.80}; "
                                      "restore the file from the training run") from None
        if len({a.shape for a in arrays.values()}) > 1:
            raise CheckpointError(f"{path}: {field}.{key}: {' and '.join(names)} have different lengths "
                                  f"{[a.shape for a in arrays.values()]}; restore the file from the training run")
        lo = arrays.get(prefix + "min")
        if lo is not None and np.any(lo > arrays[prefix + "max"]):
            i = _first_index(lo > arrays[prefix + "max"])
            raise CheckpointError(f"{path}: {field}.{key}.{prefix}min{i} > {prefix}max{i}; the statistics are "
                                  "corrupt: recompute them from the training data or restore the file")
        std = arrays.get(prefix + "std")
        if std is not None and np.any(std < 0):
            raise CheckpointError(f"{path}: {field}.{key}.{prefix}std{_first_index(std < 0)} is negative; the "
                                  "statistics are corrupt: recompute them from the training data or restore the file")
        out.append(make_normalizer(entry, mode, prefix))
    return out[0], out[1]


def _first_index(mask: np.ndarray) -> str:
    return "".join(f"[{int(i)}]" for i in np.argwhere(mask)[0])


def _check_finite(value, where: str, path: Path) -> None:
    """Refuse NaN / inf anywhere in a stats entry (Python's json reads NaN and Infinity without complaint)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}", path)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]", path)
    elif isinstance(value, float) and not np.isfinite(value):
        raise CheckpointError(f"{path}: {where} is {value} (statistics must be finite numbers); the training run "
                              "wrote a broken dataset_stats.json: recompute the statistics from the training data "
                              "(or restore the file), e.g. a constant dimension has min == max and std 0, not NaN")
