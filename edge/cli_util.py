"""Small helpers shared by the subcommands (argument parsing, output)."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .errors import ConfigError


def command(sub, name: str, help: str, example: str, func) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with a copy-pasteable example."""
    parser = sub.add_parser(name, help=help, description=help, epilog="example:\n  " + example,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def parse_vector(text: str, what: str = "--state") -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers like 0.1,-0.2,0.3, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} is empty; give comma-separated numbers like 0.1,-0.2,0.3")
    return np.asarray(values, dtype=np.float64)


def read_image(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise ConfigError(f"image {path} not found") from None
    except UnidentifiedImageError:
        raise ConfigError(f"{path} is not an image PIL can read (PNG, JPEG, ...)") from None


def emit_json(obj) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=_default) + "\n")
    sys.stdout.flush()


def _default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
