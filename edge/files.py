"""Reading the small JSON files of engines directories, bundles and base releases with errors that name the file
and the fix (a missing file, invalid JSON or the wrong top-level type is never a traceback)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError


def read_json_object(path: str | Path, fix: str, error: type[Exception] = ConfigError) -> dict:
    """The JSON object in `path`; `fix` says how to get a good file (e.g. "rebuild it with `imagewam-edge build`")."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path} not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path} cannot be read ({type(exc).__name__}: {exc}); {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON ({exc}; truncated or hand-edited?); {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object, got {type(data).__name__}; {fix}")
    return data


def require_keys(data: dict, keys: list[str], path: str | Path, fix: str, error: type[Exception] = ConfigError) -> None:
    """Refuse a JSON object that lacks a field the reader needs, naming the first missing one."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise error(f"{path}: field `{missing[0]}` is missing; {fix}")
