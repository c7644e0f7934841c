"""Simulated arm controllers, each in its own process on a pty (a thread under the GIL would add jitter).

Python API (tests, the control loop's embedded default):
    with SimulatedController("dynamixel", ids=[1, 2, 3]) as port:
        link = DynamixelLink(DynamixelConfig(port=port, ids=(1, 2, 3)))
Command line: `python -m drivers.arm.sim --protocol feetech --ids 1,2,3` (or `imagewam-edge arm sim ...`) prints
`PORT <path>` and serves until Ctrl-C / SIGTERM. `--link PATH` also makes a stable symlink to the pty, so a
restarted simulator keeps the path a link was configured with."""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import time
import tty
from typing import Optional, Sequence

from drivers.errors import ArmLinkError, ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = ("dynamixel", "feetech", "framed")
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def open_pty(link: Optional[str] = None) -> tuple[int, int, str]:
    """(master_fd, slave_fd, path). The slave is set raw and kept open so clients may come and go."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    if link:
        tmp = f"{link}.tmp{os.getpid()}"
        os.symlink(path, tmp)
        os.replace(tmp, link)
        path = link
    return master, slave, path


def serve(server, master: int, stop=lambda: False, return_delay_s: float = 0.0) -> None:
    """Byte pump: read the master side, feed the server, write its replies; tick the motor model every ~1 ms."""
    while not stop():
        r, _, _ = select.select([master], [], [], 0.001)
        now = time.monotonic()
        out = server.tick(now)
        if r:
            try:
                data = os.read(master, 4096)
            except OSError:
                data = b""
            if data:
                out += server.feed(data, now)
        if out:
            if return_delay_s:
                time.sleep(return_delay_s)
            os.write(master, out)


def parse_ids(text: str) -> list:
    try:
        ids = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--ids must be comma-separated integers such as 1,2,3, got {text!r}") from None
    if not ids or any(not 0 <= i <= 252 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--ids must be distinct integers 0..252, got {text!r}")
    return ids


def run(protocol: str, ids: Sequence[int], link: Optional[str] = None, announce=print, speed: Optional[float] = None,
        watchdog_ms: int = 200, return_delay_us: float = 0.0, garbage_every: int = 0, corrupt_every: int = 0) -> None:
    """Serve one simulated controller until SIGTERM/SIGINT (runs in the calling process)."""
    from drivers.arm.sim_servers import make_server

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown --protocol {protocol!r}; use one of {PROTOCOLS}")
    kw = {}
    if speed is not None:
        kw["speed"] = speed
    if protocol == "framed":
        kw.update(watchdog_ms=watchdog_ms, garbage_every=garbage_every, corrupt_every=corrupt_every)
    server = make_server(protocol, ids, **kw)
    master, slave, path = open_pty(link)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    announce(f"PORT {path}")
    try:
        serve(server, master, stop=lambda: bool(stopping), return_delay_s=return_delay_us * 1e-6)
    except KeyboardInterrupt:
        pass
    finally:
        os.close(master)
        os.close(slave)
        if link and os.path.islink(link) and os.readlink(link) != link:
            try:
                os.unlink(link)
            except OSError:
                pass


class SimulatedController:
    """Start a simulator subprocess; the context manager returns the port path. `kill()` simulates a crash;
    `start()` again brings it back (on the same `link` path if one was given)."""

    def __init__(self, protocol: str, ids: Sequence[int] = (1,), link: Optional[str] = None,
                 speed: Optional[float] = None, watchdog_ms: int = 200, return_delay_us: float = 0.0,
                 garbage_every: int = 0, corrupt_every: int = 0, startup_timeout_s: float = 10.0):
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown simulator protocol {protocol!r}; use one of {PROTOCOLS}")
        self.protocol, self.ids, self.link = protocol, list(ids), link
        self.args = ["--protocol", protocol, "--ids", ",".join(map(str, self.ids)), "--watchdog-ms", str(watchdog_ms),
                     "--return-delay-us", str(return_delay_us), "--garbage-every", str(garbage_every),
                     "--corrupt-every", str(corrupt_every)]
        if speed is not None:
            self.args += ["--speed", str(speed)]
        if link:
            self.args += ["--link", link]
        self.startup_timeout_s = startup_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[str] = None

    def start(self) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "drivers.arm.sim", *self.args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                line = self.proc.stdout.readline()
                if line.startswith("PORT "):
                    self.port = line.split(" ", 1)[1].strip()
                    return self.port
            if self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        self.stop()
        raise ArmLinkError(f"{self.protocol} simulator did not start within {self.startup_timeout_s} s: {err.strip()}")

    def kill(self) -> None:
        """SIGKILL: the controller vanishes without cleanup (like a pulled cable)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
            self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drivers.arm.sim", description="simulated arm controller on a pty")
    add_sim_arguments(p)
    a = p.parse_args(argv)
    run(a.protocol, parse_ids(a.ids), a.link, announce=lambda s: print(s, flush=True), speed=a.speed,
        watchdog_ms=a.watchdog_ms, return_delay_us=a.return_delay_us, garbage_every=a.garbage_every,
        corrupt_every=a.corrupt_every)
    return 0


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--ids", default="1,2,3,4,5,6", help="servo / joint ids, comma-separated (default 1..6)")
    p.add_argument("--link", default=None, help="also create this symlink to the pty (a stable port path)")
    p.add_argument("--speed", type=float, default=None,
                   help="max speed in raw units/s (default 2000 counts/s for servos, 2e6 urad/s for framed)")
    p.add_argument("--watchdog-ms", type=int, default=200, help="framed: controller watchdog (0 = off)")
    p.add_argument("--return-delay-us", type=float, default=0.0, help="delay before each reply (X-series default 500)")
    p.add_argument("--garbage-every", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
