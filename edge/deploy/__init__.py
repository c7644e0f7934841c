"""Deployment onto a Jetson: the bundle (one versioned artifact), flash (install it on the device) and doctor."""
