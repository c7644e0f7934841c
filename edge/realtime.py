"""Real-time scheduling for the control thread (Linux SCHED_FIFO), best effort.

On a 2-core host running inference beside the loop, the control thread under the normal scheduler wakes up to
several milliseconds late; under SCHED_FIFO it preempts the inference threads at once (measured here at 200 Hz with
the policy running: write lateness p99 3.2 ms -> 0.13 ms, scripts/bench_loop_overhead.py). It needs CAP_SYS_NICE or
an RLIMIT_RTPRIO: root, `LimitRTPRIO=99` in the systemd unit, or `docker run --cap-add SYS_NICE --ulimit rtprio=99`.
Without it the loop runs at normal priority and says so in its summary (`realtime`).

The loop's other Python threads (the inference worker, the recorder, the cameras' capture threads) get nice -10:
they share the GIL with the control thread, and one preempted by another process while it holds the GIL would stall
the control thread however high its priority (priority inversion through the GIL). Measured here with 3 CPU hogs beside the
loop (load 5-6): inference mean 31-108 ms -> 5-6 ms, command write lateness p99 up to 10.7 ms -> 0.10-1.1 ms."""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def set_realtime(priority: int) -> dict:
    """Put the calling thread under SCHED_FIFO at `priority` (1..99; 0 = leave it). Returns what was obtained:
    {"policy": "SCHED_FIFO", "priority": p} or {"policy": "SCHED_OTHER", "reason": why}."""
    if priority <= 0:
        return {"policy": "SCHED_OTHER", "reason": "rates.realtime_priority is 0"}
    if not hasattr(os, "sched_setscheduler"):
        return {"policy": "SCHED_OTHER", "reason": "no SCHED_FIFO on this platform"}
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(int(priority)))
    except (PermissionError, OSError) as exc:
        log.warning("control thread stays at normal priority (SCHED_FIFO %d refused: %s); commands may be late on "
                    "a busy host. Grant it with LimitRTPRIO=99 (systemd) or --cap-add SYS_NICE --ulimit rtprio=99 "
                    "(docker)", priority, exc)
        return {"policy": "SCHED_OTHER", "reason": f"SCHED_FIFO refused: {exc}"}
    return {"policy": "SCHED_FIFO", "priority": int(priority)}


def raise_threads(threads, nice: int = -10) -> dict:
    """Raise the given Python threads (the loop's own: the inference worker, the recorder, the cameras' capture
    threads) to nice `nice`: they share the GIL with the control thread, and one preempted by another process while
    it holds the GIL stalls the control thread however high its priority (priority inversion through the GIL); a
    larger CPU share makes that rare. Not SCHED_FIFO: an inference call that spin-waits (onnxruntime's pool, a CUDA
    sync) would then own a whole core and starve the rest of the machine (seen here: a simulated controller starved,
    state 300 ms stale). {"threads": n raised, "nice": nice, "tids": [...]}; `restore_threads(tids)` undoes it."""
    tids, reason = [], None
    for t in threads:
        tid = getattr(t, "native_id", None)
        if tid is None or not t.is_alive():
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, tid, int(nice))
            tids.append(tid)
        except (PermissionError, OSError) as exc:  # refused (no privilege) or the thread just ended
            reason = str(exc)
    out = {"threads": len(tids), "nice": int(nice), "tids": tids}
    if reason and not tids:
        out["reason"] = f"nice {nice} refused: {reason}"
    return out


def restore_threads(tids) -> None:
    """Back to nice 0 for the threads `tids` (gone ones are skipped)."""
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 0)
        except OSError:
            pass


def clear_realtime() -> None:
    """Back to the normal scheduler for the calling thread (no-op when it is already there)."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
