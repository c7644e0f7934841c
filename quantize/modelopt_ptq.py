"""`quantize --method modelopt`: NVIDIA Model Optimizer's ONNX PTQ of one whole component (calibration through
onnxruntime on the CPU), weights stored in 8 bits (`dq_only=True`).

Use it for models that fit: ModelOpt loads the component with its weights several times and writes 3-4 copies of it
to scratch (measured: ~10x the float32 ONNX size in RAM), so the real FLUX.2-4B prefill (15.5 GB of float32) is out
of reach on a workstation; the default `--method streamed` (quantize/compact.py) writes the same Q/DQ layout one
weight at a time. It is also the path for `--high-precision fp16` (ModelOpt converts the layers it leaves
unquantized). Its scratch files go to a directory beside the output that is removed afterwards."""
from __future__ import annotations

import contextlib
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
def _scratch_in(folder: Path):
    """ModelOpt's own temporary files (tempfile.mkstemp) go to `folder` for the duration."""
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


def quantize_component(src: Path, dst: Path, component: str, precision: str, feeds: list[dict],
                       high_precision: str = "fp32") -> dict:
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
        with contextlib.redirect_stdout(sys.stderr), _scratch_in(work):  # ORT's calibrator prints on stdout
            quantize(str(work / src.name), quantize_mode=precision, calibration_data_reader=ListReader(feeds),
                     calibration_eps=["cpu"], output_path=str(dst), high_precision_dtype=high_precision,
                     disable_mha_qdq=True, dq_only=True,
                     op_types_to_quantize=list(QUANTIZED_OPS.get(component, ("MatMul", "Gemm"))),
                     nodes_to_exclude=keep, use_external_data_format=external, log_level="ERROR")
    except Exception as exc:
        raise QuantizationError(f"ModelOpt {precision} PTQ of {component} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    q = onnx.load(str(dst), load_external_data=False)
    info = check_quantized(fp32, q, component, precision)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info
