"""Small helpers shared by the subcommands (argument parsing, output)."""
from __future__ import annotations

import argparse
import json
import math
import re
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
    """Numbers separated by commas and/or spaces ("0.1,-0.2,0.3", "0.1 -0.2 0.3", "0.1, -0.2, 0.3"); finite only."""
    parts = [v for v in re.split(r"[,\s]+", text.strip().strip("[]()")) if v != ""]
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise ConfigError(f"{what} must be numbers separated by commas or spaces, like 0.1,-0.2,0.3, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} is empty; give numbers separated by commas or spaces, like 0.1,-0.2,0.3")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"{what} has non-finite value(s) at index(es) {bad} in {text!r}; give finite numbers")
    return np.asarray(values, dtype=np.float64)


def read_image(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))  # decodes the whole file: a truncated one fails here
    except FileNotFoundError:
        raise ConfigError(f"--image {path} not found; check the path") from None
    except UnidentifiedImageError:
        raise ConfigError(f"--image {path} is not an image PIL can read (PNG, JPEG, ...); pass an RGB image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # truncated / corrupt data
        raise ConfigError(f"--image {path} is truncated or corrupt ({exc}); save or copy the image again") from None


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


def add_torch_device_args(p: argparse.ArgumentParser, example: str, default: str | None = "cpu",
                          note: str = "") -> None:
    """--device and --compile for the torch backend (passed to quantize.torch_backend.load_torch_policy)."""
    p.add_argument("--device", default=default, metavar="cpu|cuda|cuda:N",
                   help="torch backend: where the control step runs (default: " + (default or "the config's") + "); "
                   "cuda keeps the K/V on the GPU with CUDA graphs over the prefill and the denoise loop" + note +
                   f". Example: {example} --device cuda")
    p.add_argument("--compile", action="store_true",
                   help="torch backend: torch.compile inside the CUDA graphs (fuses small kernels; minutes of "
                   f"compilation on the first control step per shape){note}. Example: {example} --device cuda --compile")


def torch_device_options(args, backend: str) -> dict:
    """{"device", "compile"} for a torch policy; refused for the engine backends (they run where they were built)."""
    device, compile_ = getattr(args, "device", None) or "cpu", bool(getattr(args, "compile", False))
    if backend != "torch" and (device != "cpu" or compile_):
        raise ConfigError(f"--device/--compile apply to the torch backend (--checkpoint DIR, --backend torch); "
                          f"--backend {backend} runs its engines where they were built: drop --device/--compile")
    return {"device": device, "compile": compile_}
