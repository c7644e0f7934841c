"""Reading a checkpoint's optional `train_config.yaml` (no torch): the training run's config, of which this package
reads `model.*` (cross-checked against the tensor shapes) and its own `edge:` section (variant, embodiment, base,
text_layers, axes_dim, theta, horizon). Fields it does not read are kept as they are; the fields it reads are
type-checked here, so a corrupt file is a CheckpointError naming the file, the field and the fix."""
from __future__ import annotations

import math
from pathlib import Path

from edge.errors import CheckpointError

FILE = "train_config.yaml"

_STR, _INT, _POS_INT, _NUM, _POS_NUM, _INT_LIST = "a string", "an integer", "a positive integer", "a number", \
    "a positive number", "a list of integers"
EDGE_FIELDS = {"variant": _STR, "embodiment": _STR, "base": _STR, "text_layers": _INT_LIST,
               "axes_dim": _INT_LIST, "theta": _POS_NUM, "horizon": _POS_INT}
MODEL_FIELDS = {"proprio_dim": _POS_INT, "qwen_context_len": _POS_INT}  # `variant`/`stack` are read as str()
ACTION_DIT_FIELDS = {"action_dim": _POS_INT, "hidden_dim": _POS_INT, "residual_dim": _POS_INT, "num_heads": _POS_INT,
                     "attn_head_dim": _POS_INT, "num_layers_double": _INT, "num_layers_single": _INT,
                     "mlp_ratio": _POS_NUM}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ok(kind: str, v) -> bool:
    if kind == _STR:
        return isinstance(v, str)
    if kind in (_INT, _POS_INT):
        return _is_int(v) and (kind == _INT or v > 0)
    if kind in (_NUM, _POS_NUM):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (kind == _NUM or v > 0))
    return isinstance(v, list) and bool(v) and all(_is_int(x) and x >= 0 for x in v)  # _INT_LIST


def _section(path: Path, data: dict, key: str, prefix: str) -> dict:
    value = data.get(key)
    if value is None:
        if key in data:
            data[key] = {}  # `edge:` with nothing under it: readers do data.get(key, {}).get(...)
        return data.get(key, {})
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: `{prefix}{key}` must be a mapping, got {type(value).__name__} {value!r}; "
                              f"fix that section or delete it (it is optional)")
    return value


def _check_fields(path: Path, section: dict, spec: dict, prefix: str) -> None:
    for name, kind in spec.items():
        if name in section and section[name] is not None and not _ok(kind, section[name]):
            raise CheckpointError(f"{path}: `{prefix}{name}` must be {kind}, got {section[name]!r}; fix it (the value "
                                  "of the training run) or delete the line to use the default")


def check_train_config(data, path: str | Path) -> dict:
    """The parsed file as a dict ({} for an empty file), with the fields this package reads type-checked."""
    path = Path(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must be a YAML mapping (the training config, e.g. `model: {{...}}`), got "
                              f"{type(data).__name__}; restore it from the training run or delete it (it is optional)")
    _check_fields(path, _section(path, data, "edge", ""), EDGE_FIELDS, "edge.")
    model_prefix = "model." if "model" in data else ""
    model = _section(path, data, "model", "") if "model" in data else data  # flat configs: the fields at the top
    _check_fields(path, model, MODEL_FIELDS, model_prefix)
    _check_fields(path, _section(path, model, "action_dit_config", model_prefix), ACTION_DIT_FIELDS,
                  model_prefix + "action_dit_config.")
    return data


def load_train_config(directory: str | Path) -> dict:
    """DIR/train_config.yaml parsed and checked; {} if the directory has none."""
    import yaml

    path = Path(directory) / FILE
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); restore it from the training run or delete it "
                              "(it is optional)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CheckpointError(f"{path} is not valid YAML{at} ({getattr(exc, 'problem', None) or type(exc).__name__}); "
                              "restore it from the training run, fix the syntax, or delete it (it is optional)") from None
    return check_train_config(data, path)
