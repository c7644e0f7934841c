"""Typed errors of the serving path (subclasses of the package's base: the CLI prints them without a traceback)."""
from __future__ import annotations

from ..errors import ImageWAMEdgeError


class ServeEnvError(ImageWAMEdgeError):
    """The serving environment (nvidia-pytriton, numpy < 2) is missing or broken; the message gives the command."""


class RemotePolicyError(ImageWAMEdgeError):
    """The policy server could not answer (unreachable past the retry budget, or it refused the request)."""


class RemoteUnavailable(RemotePolicyError):
    """No answer within the deadline or no server at the address: retried (reconnecting) within the budget."""
