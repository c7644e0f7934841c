"""Typed exceptions. Every message says what went wrong, where, and what to do next."""


class ImageWAMEdgeError(Exception):
    """Base of every error this package raises on purpose; the CLI prints its message without a traceback."""


class ConfigError(ImageWAMEdgeError, ValueError):
    """A config file or argument is invalid (the message names the file, the field and the fix)."""


class CheckpointError(ImageWAMEdgeError):
    """A checkpoint directory is incomplete or does not match the model it claims to be."""


class MissingDependencyError(ImageWAMEdgeError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


def require(module: str, extra: str):
    """Import `module` or raise MissingDependencyError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc}); install it with: pip install 'imagewam-edge[{extra}]'"
        ) from exc


class PolicyOutputError(ImageWAMEdgeError):
    """The policy returned actions the robot must not receive (non-finite, or not the declared shape)."""
