"""Small helpers shared by the subcommands (argument parsing, output)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path

import numpy as np

from .errors import ConfigError


JSON_HELP = ("print exactly one JSON object on stdout and nothing else there; no progress lines (warnings and errors "
             "still go to stderr); a file is written only by a flag that names one (--report, --summary, --out)")
ENGINES = "--engines"  # the one name of an engines directory on every subcommand


def command(sub, name: str, help: str, example: str | list[str], func=None, *, json: bool = False,
            description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with copy-pasteable example(s); `func(args) -> int` (the exit code)
    runs it; `json=True` adds --json with the one meaning it has everywhere (JSON_HELP)."""
    examples = [example] if isinstance(example, str) else list(example)
    parser = sub.add_parser(name, help=help, description=description or help,
                            epilog=("example:\n  " if len(examples) == 1 else "examples:\n  ") + "\n  ".join(examples),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if func is not None:
        parser.set_defaults(func=func)
    if json:
        add_json(parser)
    return parser


def setup_logging(verbose: int = 0) -> None:
    """Logging on stderr: WARNING, INFO with -v, DEBUG with -vv (stdout stays the command's report)."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def json_file_hint(argv: list[str], unknown: list[str]) -> str:
    """The fix for `--json FILE`, the old spelling of `--report FILE` (bench, eval): `--json` takes no value now."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--json" and argv[i + 1] in unknown:
            return (f"; `--json` takes no file (it prints one JSON object on stdout): write the file with "
                    f"`--report {argv[i + 1]}` (`run`: `--summary`)")
    return ""


def run_command(func, args, verbose: int = 0) -> int:
    """Run a handler by the exit-code convention (docs/cli.md): what it returns (0 ok, 3 a check failed); 1 and one
    `error: ...` line on stderr for an error the package raised on purpose (every one derives from the one root,
    drivers and calib too; its message carries the fix; the traceback with -v); 130 on Ctrl-C."""
    from .errors import ImageWAMEdgeError

    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except ImageWAMEdgeError as exc:
        if verbose:
            raise
        sys.stderr.write(f"error: {exc}\n")
        return 1


def group(sub, name: str, help: str, examples: str | list[str], *, dest: str, description: str | None = None,
          metavar: str = "SUBCOMMAND"):
    """A command with subcommands of its own (`camera info`, `calibrate intrinsics`): (its parser, its subparsers).
    Given without a subcommand it prints its help and exits with 2."""
    parser = command(sub, name, help, examples, description=description)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return parser, parser.add_subparsers(dest=dest, metavar=metavar)


def add_json(parser) -> None:
    """--json: exactly one JSON object on stdout (write it with `emit_json`), the same on every subcommand."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def add_config(parser, *, required: bool = False, note: str = "") -> None:
    """--config FILE: the run config (one robot YAML), the same flag wherever one is read."""
    parser.add_argument("--config", required=required, metavar="FILE",
                        help="run config: one robot YAML (examples: edge/configs/*.yaml)" + note)


class _Deprecated(argparse.Action):
    """A renamed flag: still works (stores into the new flag's dest) and says the new name on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        super().__init__(option_strings, dest, **kw)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stderr.write(f"warning: {option_string} is deprecated; use {self.new} (same meaning)\n")
        setattr(namespace, self.dest, values)


def add_engines(parser, help: str, *, required: bool = False, flag: str = ENGINES, dest: str = "engines",
                old: tuple[str, ...] = ("--onnx",), metavar: str = "DIR") -> None:
    """The engines-directory flag (`--engines DIR`; `flag` for a second one, e.g. --reference-engines), with the
    old spellings `old` kept as hidden deprecated aliases that still work."""
    target = parser.add_mutually_exclusive_group(required=required) if old and required else parser
    target.add_argument(flag, dest=dest, metavar=metavar, help=help)
    for name in old:
        target.add_argument(name, dest=dest, metavar=metavar, help=argparse.SUPPRESS, action=_Deprecated, new=flag)


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


def output(args, result: dict, text) -> None:
    """A command's result by the conventions: one JSON object on stdout with --json, else the text report (a string,
    or a function making it); with --report FILE also the same object written to FILE."""
    if getattr(args, "json", False):
        emit_json(result)
    else:
        print(text() if callable(text) else text)
    if getattr(args, "report", None):
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=_default))


def _default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)  # paths, enums: as `--report FILE` writes them


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
