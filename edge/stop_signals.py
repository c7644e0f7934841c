"""SIGINT, SIGTERM and SIGHUP all ask for the same safe stop.

SIGTERM is what systemd (the default KillSignal), `docker stop` and `kill` send; SIGHUP comes when the terminal
goes away; SIGINT is Ctrl-C. The first signal sets `event` (the control loop stops at its next tick and runs
its safe stop) or, while `raising` is on (set-up: loading a policy, opening devices, none of which polls an event),
raises `StopRequested` so the set-up unwinds through its ExitStack. Every later signal is only counted: a second
Ctrl-C can never interrupt the torque handling of the safe stop. Handlers are installed only from the main thread
and restored on exit, or with `ignore_after` (the `run` command, about to write its summary and exit) replaced by
SIG_IGN, so a late Ctrl-C cannot cut the summary short."""
from __future__ import annotations

import signal
import threading
from typing import Optional

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


class StopRequested(BaseException):
    """A stop signal arrived during set-up. A BaseException, as KeyboardInterrupt: the `except Exception` of the
    drivers and backends (which turn a failure into their own typed error) must not swallow or rename it."""


class StopSignals:
    def __init__(self, event: Optional[threading.Event] = None, raising: bool = False, ignore_after: bool = False):
        self.event = event or threading.Event()
        self.raising = raising
        self.ignore_after = ignore_after  # on exit, ignore these signals instead of restoring the old handlers
        self.name: str = ""  # the first signal's name ("SIGTERM"), "" when none
        self.count = 0
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        self.count += 1
        if self.count > 1:
            return  # later signals never interrupt the stop in progress
        self.name = signal.Signals(signum).name
        self.event.set()
        if self.raising:
            self.raising = False
            raise StopRequested(f"stopped by {self.name} during set-up")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, signal.SIG_IGN if self.ignore_after else h)
        self._old.clear()

    @property
    def installed(self) -> bool:
        return bool(self._old)
