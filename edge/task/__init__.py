"""The closed-loop toy task: a planar reaching scene behind the task camera, a scripted expert, success tracking and
the evaluation through the real control loop (no torch here)."""
