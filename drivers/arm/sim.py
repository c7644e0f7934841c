"""Simulated arm controllers, each in its own process on a pty (a thread under the GIL would add jitter).

Python API (tests, the control loop's embedded default):
    with SimulatedController("dynamixel", ids=[1, 2, 3]) as port:
        link = DynamixelLink(DynamixelConfig(port=port, ids=(1, 2, 3)))
Command line: `python -m drivers.arm.sim --protocol feetech --ids 1,2,3` (or `imagewam-edge arm sim ...`) prints
`PORT <path>` and serves until Ctrl-C / SIGTERM. `--link PATH` also makes a stable symlink to the pty, so a
restarted simulator keeps the path a link was configured with.

Bus faults for the links' ride-through tests: `--drop/--corrupt/--delay-p P --delay-ms MS --seed N` (reply packets,
each on its own: drivers.arm.sim_faults). `--log PATH`: the simulator's own record of goals, torque and watchdog
trips, with the final torque state and positions at SIGTERM/SIGINT (drivers.arm.sim_log.read_sim_log reads it)."""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from typing import Optional, Sequence

from drivers.arm.sim_faults import FaultConfig, ReplyInjector, check_probability
from drivers.arm.sim_log import SimLog
from drivers.errors import ArmLinkError, ConfigError

logger = logging.getLogger(__name__)

PROTOCOLS = ("dynamixel", "feetech", "framed")
_TICK_S = 0.001  # motor model / watchdog tick
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


def serve(server, master: int, stop=lambda: False, return_delay_s: float = 0.0,
          injector: Optional[ReplyInjector] = None, log: Optional[SimLog] = None) -> ReplyInjector:
    """Byte pump: read the master side, feed the server, queue its reply packets through the fault injector (drop /
    corrupt / delay, each packet on its own; `return_delay_s` is added to every reply) and write what is due;
    tick the motor model every ~1 ms. Nothing here sleeps: a late packet is a release time in the injector's queue,
    so the loop keeps reading, ticking and logging. Returns the injector (its counters)."""
    inj = injector if injector is not None else ReplyInjector()
    events = None
    if log is not None:
        events = server.events = []
    while not stop():
        due = inj.next_due()
        timeout = _TICK_S if due is None else min(_TICK_S, max(0.0, due - time.monotonic()))
        r, _, _ = select.select([master], [], [], timeout)
        now = time.monotonic()
        out = server.tick_packets(now)
        if r:
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                data = b""
            except OSError:
                data = b""
            if data:
                out += server.feed_packets(data, now)
        if out:
            inj.push(out, now + return_delay_s)
        if events:
            for ev in events:
                log.write(ev)
            events.clear()
        if inj.pending:
            data = inj.pop_due(time.monotonic())
            if data:
                _write_bus(master, data)
    return inj


def _write_bus(master: int, data: bytes) -> None:
    """Put bytes on the 'bus' without ever blocking the pump: what does not fit in the pty buffer (nobody reads
    the port) is lost, as bytes on a real bus nobody listens to."""
    try:
        os.write(master, data)
    except (BlockingIOError, InterruptedError):
        logger.debug("simulator: %d reply bytes lost, nobody reads the port", len(data))
    except OSError as exc:
        logger.debug("simulator: reply write failed: %s", exc)


def parse_ids(text: str) -> list:
    try:
        ids = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--ids must be comma-separated integers such as 1,2,3, got {text!r}") from None
    if not ids or any(not 0 <= i <= 252 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--ids must be distinct integers 0..252, got {text!r}")
    return ids


def run(protocol: str, ids: Sequence[int], link: Optional[str] = None, announce=print, speed: Optional[float] = None,
        watchdog_ms: int = 200, return_delay_us: float = 0.0, garbage_every: int = 0, corrupt_every: int = 0,
        drop: float = 0.0, corrupt: float = 0.0, delay_p: float = 0.0, delay_ms: float = 0.0, seed: int = 0,
        log: Optional[str] = None, owner_pid: int = 0) -> None:
    """Serve one simulated controller until SIGTERM/SIGINT (runs in the calling process). With `log`, write the
    simulator log (drivers.arm.sim_log), ending with the "end" line on SIGTERM / SIGINT. With `owner_pid`, also stop
    when that process is gone (its owner was killed with SIGKILL and could not stop it: no orphan simulators)."""
    from drivers.arm.sim_servers import make_server

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown --protocol {protocol!r}; use one of {PROTOCOLS}")
    if not return_delay_us >= 0:
        raise ConfigError(f"--return-delay-us must be >= 0 microseconds, got {return_delay_us!r}")
    faults = FaultConfig(drop=drop, corrupt=corrupt, delay_p=delay_p, delay_ms=delay_ms, seed=seed)
    kw = {}
    if speed is not None:
        kw["speed"] = speed
    if protocol == "framed":
        kw.update(watchdog_ms=watchdog_ms, garbage_every=garbage_every, corrupt_every=corrupt_every)
    server = make_server(protocol, ids, **kw)
    simlog = SimLog(log) if log else None
    master, slave, path = open_pty(link)
    os.set_blocking(master, False)
    stopping = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: stopping.append(signal.Signals(signum).name))
    injector = ReplyInjector(faults)
    if simlog:
        simlog.write({"t": round(time.monotonic(), 6), "ev": "start", "protocol": protocol, "ids": list(ids),
                      "faults": faults.as_dict(), "return_delay_us": return_delay_us, "pid": os.getpid()})
    announce(f"PORT {path}")
    owner_gone = owner_watch(owner_pid)

    def stop() -> bool:
        if not stopping and owner_gone():
            stopping.append("owner-exited")
        return bool(stopping)

    try:
        serve(server, master, stop=stop, return_delay_s=return_delay_us * 1e-6,
              injector=injector, log=simlog)
    except KeyboardInterrupt:
        stopping.append("KeyboardInterrupt")
    finally:
        if simlog:
            for ev in server.events or ():
                simlog.write(ev)
            simlog.write({"t": round(time.monotonic(), 6), "ev": "end", "reason": stopping[0] if stopping else "error",
                          **server.end_state(), "injected": injector.summary()})
            simlog.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(master)
        os.close(slave)
        if link and os.path.islink(link) and os.readlink(link) != link:
            try:
                os.unlink(link)
            except OSError:
                pass


def owner_watch(pid: int, every_s: float = 0.5):
    """() -> True once process `pid` no longer exists (checked at most every `every_s`); always False for pid 0."""
    state = {"next": 0.0, "gone": False}

    def gone() -> bool:
        now = time.monotonic()
        if pid and not state["gone"] and now >= state["next"]:
            state["next"] = now + every_s
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                state["gone"] = True
            except PermissionError:  # exists, owned by another user
                pass
        return state["gone"]

    return gone


def run_from_args(a: argparse.Namespace, announce=print) -> None:
    """`run` with the options `add_sim_arguments` defines (for every command line that serves a simulator)."""
    run(a.protocol, parse_ids(a.ids), a.link, announce=announce, speed=a.speed, watchdog_ms=a.watchdog_ms,
        return_delay_us=a.return_delay_us, garbage_every=a.garbage_every, corrupt_every=a.corrupt_every,
        drop=a.drop, corrupt=a.corrupt, delay_p=a.delay_p, delay_ms=a.delay_ms, seed=a.seed, log=a.log,
        owner_pid=getattr(a, "owner_pid", 0) or 0)


class SimulatedController:
    """Start a simulator subprocess; the context manager returns the port path. `kill()` simulates a crash;
    `start()` again brings it back (on the same `link` path if one was given). `stop()` sends SIGTERM and waits,
    so the simulator writes its log's "end" line.

    Reply faults (per reply packet, seeded): `drop`, `corrupt` (one bit flipped), `delay_p` + `delay_ms` (sent
    late; later replies queue behind it). `log`: path of the simulator log (JSON lines, drivers.arm.sim_log)."""

    def __init__(self, protocol: str, ids: Sequence[int] = (1,), link: Optional[str] = None,
                 speed: Optional[float] = None, watchdog_ms: int = 200, return_delay_us: float = 0.0,
                 garbage_every: int = 0, corrupt_every: int = 0, startup_timeout_s: float = 10.0,
                 drop: float = 0.0, corrupt: float = 0.0, delay_p: float = 0.0, delay_ms: float = 0.0,
                 seed: int = 0, log: Optional[str] = None):
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown simulator protocol {protocol!r}; use one of {PROTOCOLS}")
        self.faults = FaultConfig(drop=drop, corrupt=corrupt, delay_p=delay_p, delay_ms=delay_ms, seed=seed)
        self.protocol, self.ids, self.link = protocol, list(ids), link
        self.log = os.path.abspath(log) if log else None
        self.args = ["--protocol", protocol, "--ids", ",".join(map(str, self.ids)), "--watchdog-ms", str(watchdog_ms),
                     "--return-delay-us", str(return_delay_us), "--garbage-every", str(garbage_every),
                     "--corrupt-every", str(corrupt_every)]
        if self.faults.active or seed:
            f = self.faults
            self.args += ["--drop", repr(f.drop), "--corrupt", repr(f.corrupt), "--delay-p", repr(f.delay_p),
                          "--delay-ms", repr(f.delay_ms), "--seed", str(f.seed)]
        if speed is not None:
            self.args += ["--speed", str(speed)]
        if link:
            self.args += ["--link", link]
        if self.log:
            self.args += ["--log", self.log]
        self.args += ["--owner-pid", str(os.getpid())]  # it stops itself if this process is killed outright
        self.startup_timeout_s = startup_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[str] = None

    def start(self) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # its own session: a terminal's Ctrl-C or a service's SIGTERM reaches the run, whose safe stop still needs
        # the controller; the run stops the simulator itself
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "drivers.arm.sim", *self.args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
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
        """SIGKILL: the controller vanishes without cleanup (like a pulled cable); its log gets no "end" line."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._close_streams()
            self.proc = None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then wait up to `timeout_s` for the simulator to write its log's "end" line and exit (SIGKILL
        after that)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s simulator (pid %d) did not exit %g s after SIGTERM; killing it", self.protocol,
                            self.proc.pid, timeout_s)
                self.proc.kill()
                self.proc.wait()
            self._close_streams()
            self.proc = None

    def _close_streams(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drivers.arm.sim", description="simulated arm controller on a pty",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    add_sim_arguments(p)
    a = p.parse_args(argv)
    try:
        run_from_args(a, announce=lambda s: print(s, flush=True))
    except ConfigError as exc:
        p.error(str(exc))
    return 0


_EPILOG = """reply faults (each reply packet on its own; a sync read of 7 servos is 7 packets):
  --drop 0.02 --corrupt 0.01 --delay-p 0.05 --delay-ms 30 --seed 1
simulator log (JSON lines, one per goal write / torque write / watchdog trip, "end" line at SIGTERM/SIGINT):
  --log /tmp/sim.jsonl
  then, in Python: drivers.arm.sim_log.read_sim_log("/tmp/sim.jsonl")["torque"] -> {id: final torque state}
"""


def _probability(text: str) -> float:
    try:
        return check_probability("value", text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1 (e.g. 0.05), got {text!r}") from None


def _milliseconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v <= 60_000.0:
        raise argparse.ArgumentTypeError(f"must be a delay in milliseconds between 0 and 60000, got {text!r}")
    return v


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--ids", default="1,2,3,4,5,6", help="servo / joint ids, comma-separated (default 1..6)")
    p.add_argument("--link", default=None, help="also create this symlink to the pty (a stable port path)")
    p.add_argument("--owner-pid", type=int, default=0, help="stop when this process is gone (set by the code that "
                   "starts the simulator, so a SIGKILLed owner leaves no simulator behind)")
    p.add_argument("--speed", type=float, default=None,
                   help="max speed in raw units/s (default 2000 counts/s for servos, 2e6 urad/s for framed)")
    p.add_argument("--watchdog-ms", type=int, default=200, help="framed: controller watchdog (0 = off)")
    p.add_argument("--return-delay-us", type=float, default=0.0, help="delay before each reply (X-series default 500)")
    p.add_argument("--garbage-every", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)
    g = p.add_argument_group("reply faults", "per reply packet, independently, from a seeded generator")
    g.add_argument("--drop", type=_probability, default=0.0, metavar="P",
                   help="probability that a reply packet is lost (0..1, default 0)")
    g.add_argument("--corrupt", type=_probability, default=0.0, metavar="P",
                   help="probability that one random bit of a reply packet is flipped (0..1, default 0)")
    g.add_argument("--delay-p", type=_probability, default=0.0, metavar="P",
                   help="probability that a reply packet is sent --delay-ms late; later replies queue behind it")
    g.add_argument("--delay-ms", type=_milliseconds, default=0.0, metavar="MS", help="the delay (default 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of the fault generator (default 0)")
    p.add_argument("--log", default=None, metavar="PATH",
                   help="write the simulator log here (JSON lines: goal writes, torque writes, watchdog trips, and "
                        "the final torque state and positions at SIGTERM/SIGINT); see drivers/arm/sim_log.py")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
