"""ImageWAM Edge on-device runtime."""

__version__ = "0.1.0"
