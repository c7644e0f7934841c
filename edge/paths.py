"""Where the package keeps its caches on this machine (core: no imports above it)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "IMAGEWAM_EDGE_CACHE"


def cache_dir() -> Path:
    """$IMAGEWAM_EDGE_CACHE, else ~/.cache/imagewam-edge."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imagewam-edge"
