"""Real-time frame pacing for cameras that render their frames (the simulated camera, the toy task's scene)."""
from __future__ import annotations

import time
from typing import Optional


class FramePacer:
    """Frame deadlines every 1/fps s from `start()`. A late grab skips the missed periods instead of bunching frames
    up, as a real sensor drops frames when nobody reads them."""

    def __init__(self, fps: float):
        self.period = 1.0 / float(fps)
        self.next = time.monotonic()

    def start(self) -> None:
        self.next = time.monotonic()

    def wait(self, timeout_s: float) -> Optional[int]:
        """Sleep until the next deadline -> the number of whole periods missed before it (0 when on time); None after
        sleeping `timeout_s` when the deadline lies further away (no frame yet)."""
        wait = self.next - time.monotonic()
        if wait > timeout_s:
            time.sleep(max(0.0, timeout_s))
            return None
        if wait > 0:
            time.sleep(wait)
        missed = max(0, int((time.monotonic() - self.next) / self.period))
        self.next += (missed + 1) * self.period
        return missed
