"""Helper of the serving tests: skip without the serving environment, except in CI (.ci/run creates it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def serve_env_or_skip() -> Path:
    """The serving environment's python; skipped when it is missing, except in CI."""
    from edge.serve import env
    from edge.serve.errors import ServeEnvError

    try:
        return env.require_env()
    except ServeEnvError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no serving environment: {exc}")
