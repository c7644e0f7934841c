"""This process's memory, in MiB (bench, bench --compare): /proc on Linux, psutil or getrusage elsewhere."""
from __future__ import annotations

import resource
import sys


def _proc_status_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc/self/status (Linux), in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float:
    """Resident memory now (MiB): /proc on Linux, psutil elsewhere, else the peak so far (never NaN)."""
    mb = _proc_status_mb("VmRSS")
    if mb is not None:
        return mb
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB): VmHWM on Linux, getrusage elsewhere (KiB on Linux, B on macOS)."""
    mb = _proc_status_mb("VmHWM")
    if mb is not None:
        return mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0
