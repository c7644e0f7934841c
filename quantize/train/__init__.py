"""Training on the CPU: the tiny ImageWAM of the closed-loop toy task (toy.py)."""
