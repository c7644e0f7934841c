"""A simulated controller runs in its own session (so a Ctrl-C meant for the run does not kill it before the safe
stop); when its owner is killed outright (SIGKILL) it must not live on as an orphan."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OWNER = """
import sys, time
sys.path.insert(0, {root!r})
from drivers.arm.sim import SimulatedController
sim = SimulatedController("dynamixel", ids=[1, 2])
sim.start()
print(sim.proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill 0: it has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_simulator_whose_owner_is_killed_stops_itself():
    owner = subprocess.Popen([sys.executable, "-c", OWNER.format(root=str(ROOT))], stdout=subprocess.PIPE, text=True)
    try:
        sim_pid = int(owner.stdout.readline())
        assert _alive(sim_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 15
        while _alive(sim_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(sim_pid), "the simulator outlived its SIGKILLed owner"
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.stdout.close()
