"""ImageWAM Edge on-device runtime."""
