"""What every `calibrate` step shares: the board and output-path defaults, the images-folder check, and the one way
a step reports (text, or one JSON object with --json). Parsers: edge.cli_util.command, as every subcommand."""
from __future__ import annotations

from pathlib import Path

from edge.cli_util import output

DEFAULT_BOARD = "charuco:9,6,0.035,0.026,DICT_5X5_100"
SPEC_HELP = "ChArUco board: charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT (default: from the session/intrinsics file)"
def emit(args, summary: dict, text: str) -> None:
    """The step's report on stdout: the text, or the summary as JSON with --json."""
    output(args, summary, text)


def board_spec(arg: str | None, *fallbacks):
    """The board from --board, else the first fallback given (session / intrinsics file)."""
    from calib.board import parse_board
    from calib.errors import BoardSpecError

    spec = arg or next((f for f in fallbacks if f), None)
    if not spec:
        raise BoardSpecError("no board given: pass --board charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT")
    return parse_board(spec)


def require_dirs(dirs, flag: str = "--images") -> None:
    """Refuse a missing image folder by name, before anything else is blamed on it (a board or serial that
    would have come from its session file)."""
    from calib.errors import InputFileError

    for d in [dirs] if isinstance(dirs, (str, Path)) else dirs:
        if not Path(d).is_dir():
            raise InputFileError(f"{flag} {d}: no such folder. Pass the folder that holds the board images, or "
                                 f"capture them first: imagewam-edge calibrate capture --out {d}")


def out_path(out: str | None, serial: str | None, kind: str) -> Path:
    """--out, else the per-camera default path of this kind of file."""
    from calib.errors import InputFileError
    from calib.store import calibration_path

    if out:
        return Path(out)
    if not serial:
        raise InputFileError(f"no --out and no camera serial: pass --out FILE or --serial SERIAL ({kind} files are "
                             "stored per camera serial)")
    return calibration_path(serial, kind)


def fmt_T(T) -> str:
    return "\n".join("  [" + ", ".join(f"{v: .6f}" for v in row) + "]" for row in T)
