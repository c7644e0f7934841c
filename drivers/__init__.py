"""Cameras (RealSense live and recorded, simulated) and arm links (Dynamixel, Feetech, framed protocol,
simulated controllers). Heavy SDKs are imported lazily inside the drivers."""
