"""Subcommands of the offline tools (checkpoint, export, quantize) (filled by the runtime issues)."""
from __future__ import annotations


def register(sub) -> None:  # noqa: D103 - populated as commands land
    pass
