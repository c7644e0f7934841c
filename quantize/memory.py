"""Process memory: the peak and current resident set, handing freed heap pages back to the OS, the memory the
kernel says is available, and onnxruntime sessions that hold their weights once. No torch: the quantizer and the
export share these."""
from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()


_LIBC: list = []


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim). Without it, writing a 9 GB model.pt tensor by
    tensor after transformers/diffusers are imported grew the RSS from 0.4 to 1.4 GiB (freed tensors kept by the
    allocator); with it after every tensor the peak stays at one tensor (measured: 0.58 GiB)."""
    import ctypes

    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    import gc

    gc.collect()
    trim_heap()


def low_memory_session(path: Path, weights_bytes: int = 0, model: bytes | None = None):
    """An onnxruntime CPU session that holds the weights once: no pre-packed copies, no arena. onnxruntime maps
    external data from the file; with basic optimisations it folds the weight transposes into new (anonymous)
    tensors and drops the mapped originals (the lowest peak: ~1x the float32 weights, measured), which is chosen
    while the weights fit in 60% of the available memory; beyond that, no optimisation: the weights stay in the
    file mapping, which the kernel can page out and back, so a smaller machine is slower instead of killed.
    `model`: a serialised graph to run instead of the file's (e.g. with extra outputs); its external data are
    still read from beside `path`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_prepacking", "1")
    so.enable_cpu_mem_arena = False
    fits = weights_bytes < 0.6 * available_memory_bytes()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if fits
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if model is None:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(Path(path).parent))
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def available_memory_bytes() -> int:
    """MemAvailable (Linux), else a large number (no limit known)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50
