"""`quantize --method modelopt`: NVIDIA Model Optimizer's ONNX PTQ of one whole component (calibration through
onnxruntime on the CPU), weights stored in 8 bits (`dq_only=True`).

Use it for models that fit: ModelOpt loads the component with its weights several times and writes 3-4 copies of it
to scratch (measured: ~10x the float32 ONNX size in RAM), so the real FLUX.2-4B prefill (15.5 GB of float32) is out
of reach on a workstation; the default `--method streamed` (quantize/compact.py) writes the same Q/DQ layout one
weight at a time. It is also the path for `--high-precision fp16` (ModelOpt converts the layers it leaves
unquantized). Its scratch files go to a directory beside the output that is removed afterwards."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .precision import QUANTIZED_OPS
from .qdq_check import QuantizationError, check_quantized, expected_quantized


class ListReader:
    """onnxruntime CalibrationDataReader over a list of feeds (+ the get_first/rewind ModelOpt calls)."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self._it = feeds, iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def get_first(self):
        return self.feeds[0]

    def rewind(self):
        self._it = iter(self.feeds)


@contextlib.contextmanager
def _output_to(log: Path | None):
    """ModelOpt's progress bars and log, onnxruntime's calibrator prints and native warnings go to `log` (appended),
    at the file-descriptor level (its logger and tqdm hold their own references to the streams); None: to stderr."""
    if log is None:
        with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrator prints on stdout
            yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):  # streams replaced in Python too
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _scratch_in(folder: Path):
    """ModelOpt's own temporary files (tempfile.mkstemp) go to `folder` for the duration."""
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


def quantize_component(src: Path, dst: Path, component: str, precision: str, feeds: list[dict],
                       high_precision: str = "fp32", log: Path | None = None) -> dict:
    """`log`: where ModelOpt's own output goes (appended, one header per component); None: stderr."""
    import onnx
    from modelopt.onnx.quantization import quantize

    fp32 = onnx.load(str(src), load_external_data=False)
    _, keep, _ = expected_quantized(fp32, component, precision)
    external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in fp32.graph.initializer)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"{component}-", dir=dst.parent))
    try:  # ModelOpt rewrites its input file in place (seen: the FP32 denoise_step.onnx changed): give it a copy
        for f in src.parent.glob(f"{src.name}*"):
            shutil.copy(f, work / f.name)
        if log is not None:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} ModelOpt {precision} PTQ of {component} "
                        f"({len(feeds)} calibration feeds) ===\n")
        with _output_to(log), _scratch_in(work):
            quantize(str(work / src.name), quantize_mode=precision, calibration_data_reader=ListReader(feeds),
                     calibration_eps=["cpu"], output_path=str(dst), high_precision_dtype=high_precision,
                     disable_mha_qdq=True, dq_only=True,
                     op_types_to_quantize=list(QUANTIZED_OPS.get(component, ("MatMul", "Gemm"))),
                     nodes_to_exclude=keep, use_external_data_format=external,
                     log_level="INFO" if log is not None else "ERROR")
    except Exception as exc:
        where = f" (ModelOpt's log: {log})" if log is not None else ""
        raise QuantizationError(f"ModelOpt {precision} PTQ of {component} failed: {type(exc).__name__}: {exc}"
                                f"{where}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    q = onnx.load(str(dst), load_external_data=False)
    info = check_quantized(fp32, q, component, precision)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    if log is not None:
        info["log"] = str(log)
    return info
