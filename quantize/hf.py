"""Quiet the Hugging Face libraries' progress bars (stdout/stderr stay readable; --json output stays clean)."""
from __future__ import annotations

import logging


def quiet() -> None:
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:
        pass
    try:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
    except ImportError:
        pass
