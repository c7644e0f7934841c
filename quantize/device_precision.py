"""An engines directory's ONNX typed for the device: every component converted to BF16/FP16 outside its FP32 islands
(quantize/lowprec.py), FP16 only after the calibration-range check (quantize/fp16_check.py); metadata and manifest
follow. `imagewam-edge build` calls it on a copy in its staging directory (quantize/build.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from .export import write_manifest
from .fp16_check import check_fp16_ranges, fp16_weight_check
from .lowprec import DEFAULT_HIGH_PRECISION, FP32_OPS, LowPrecisionError, check_high_precision, convert_component


def convert_engines_dir(src: str | Path, dst: str | Path, high_precision: str = DEFAULT_HIGH_PRECISION,
                        progress: Callable[[str], None] = lambda s: None, fp32_ops: frozenset[str] = FP32_OPS) -> dict:
    """A copy of the ONNX engines directory `src` at `dst` (created; must not exist) with every listed component
    converted to `high_precision`; metadata and manifest follow (manifest "high_precision"). FP16 is checked against
    the calibration ranges first (quantize/fp16_check.py) and refused naming the layer that would overflow.
    Returns per component what convert_component reports."""
    check_high_precision(high_precision)
    if high_precision == "fp32":
        raise LowPrecisionError("fp32 needs no conversion: build from the directory itself")
    src, dst = Path(src), Path(dst)
    manifest = json.loads((src / "manifest.json").read_text())
    components = list(manifest.get("components", []))
    if high_precision == "fp16":
        check_fp16_ranges(src, components)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "manifest.json" and not any(f.name.startswith(c + ".onnx") for c in components):
            shutil.copy(f, dst / f.name)
    report = {}
    for comp in components:
        check = fp16_weight_check(comp) if high_precision == "fp16" else None
        report[comp] = convert_component(src / f"{comp}.onnx", dst / f"{comp}.onnx", high_precision, check, progress,
                                         fp32_ops)
        meta_path = dst / f"{comp}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            meta["high_precision"] = high_precision
            meta_path.write_text(json.dumps(meta, indent=1))
    extra = {k: v for k, v in manifest.items() if k not in ("kind", "precision", "files", "created")}
    write_manifest(dst, "onnx", manifest.get("precision", "fp32"), {**extra, "high_precision": high_precision,
                                                                    "converted_from": str(src.resolve())})
    return report
