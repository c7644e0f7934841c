"""May a component's unquantized layers run in FP16? A check on the calibration ranges, done before converting.

The ranges are the ones calibration measured (quantize/calibrate.py: max |x| per activation tensor over the
calibration observations). They are saved in the quantized graph itself, as each activation QuantizeLinear's scale
(scale = amax / qmax, qmax 127 for INT8, 448 for FP8), so amax = scale * qmax needs no other file; a `ranges.json`
beside the graphs ({component: {tensor: amax}}) adds to or overrides them (for ranges measured another way).
Coverage: the tensors calibration measures, i.e. the input of every quantized layer (normalised/modulated hidden
states, attention outputs, MLP hidden activations). The residual stream and attention logits are not measured, which
is why BF16 (float32's exponent range) is the default and FP16 needs asking for.
Refused, naming the component, layer, tensor and range: any range above FP16_MAX / FP16_HEADROOM; a component with
no ranges at all (nothing to check on); a weight that overflows FP16; a Q/DQ scale below FP16's smallest normal."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from .lowprec import LowPrecisionError

FP16_MAX = 65504.0
FP16_HEADROOM = 4.0  # calibrated ranges must stay under FP16_MAX / 4: unseen inputs and the layer's output growth
FP16_MIN_NORMAL = 2.0 ** -14
QMAX_BY_ZERO_POINT = {"INT8": 127.0, "FLOAT8E4M3FN": 448.0, "UINT8": 255.0}
SUGGEST = "build with --high-precision bf16 (the default: float32's exponent range) instead"


def fp16_limit() -> float:
    return FP16_MAX / FP16_HEADROOM


def recorded_ranges(model) -> dict[str, tuple[float, list[str]]]:
    """tensor -> (max |x| from calibration, the layers that read it) from the activation Q/DQ scales of a
    graph-only model."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    out: dict[str, tuple[float, list[str]]] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or n.input[1] not in inits or n.input[0] in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        zp = inits.get(n.input[2])
        qmax = QMAX_BY_ZERO_POINT.get(TensorProto.DataType.Name(zp.data_type) if zp is not None else "UINT8")
        if qmax is None or scale.size != 1:
            continue
        layers = [c for q in n.output for dq in _dq_outputs(model, q) for c in consumers.get(dq, [])]
        out[n.input[0]] = (float(scale.reshape(-1)[0]) * qmax, layers or [n.name])
    return out


def _dq_outputs(model, q_out: str) -> list[str]:
    return [o for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input and n.input[0] == q_out
            for o in n.output]


def check_fp16_ranges(onnx_dir: Path, components: list[str], ranges_file: str = "ranges.json") -> dict:
    """Refuse FP16 (LowPrecisionError naming the layer, tensor and range) unless every component's recorded
    activation ranges stay under fp16_limit(). Returns {component: {"tensors": n, "max": amax, "tensor": name}}."""
    import onnx

    extra = {}
    if (onnx_dir / ranges_file).exists():
        extra = json.loads((onnx_dir / ranges_file).read_text())
    report = {}
    for comp in components:
        model = onnx.load(str(onnx_dir / f"{comp}.onnx"), load_external_data=False)
        ranges = recorded_ranges(model)
        for name, amax in extra.get(comp, {}).items():
            ranges[name] = (float(amax), ranges.get(name, (0.0, [f"the layers reading {name}"]))[1])
        del model
        if not ranges:
            raise LowPrecisionError(f"--high-precision fp16: {comp} has no calibration ranges (no activation Q/DQ in "
                                    f"{comp}.onnx and no {ranges_file} entry), so nothing shows FP16 will not "
                                    f"overflow there; {SUGGEST}, or add measured ranges to {onnx_dir / ranges_file}")
        too_big = sorted(((a, t, layers) for t, (a, layers) in ranges.items() if not a < fp16_limit()), reverse=True)
        if too_big:
            amax, tensor, layers = too_big[0]
            raise LowPrecisionError(
                f"--high-precision fp16 would overflow in {comp}: layer {layers[0]} reads {tensor!r} with calibrated "
                f"max |x| = {amax:.4g}, above {fp16_limit():.0f} (FP16 max {FP16_MAX:.0f} / headroom {FP16_HEADROOM:g})"
                + (f"; {len(too_big) - 1} more tensor(s) too" if len(too_big) > 1 else "") + f"; {SUGGEST}")
        top = max(ranges.items(), key=lambda kv: kv[1][0])
        report[comp] = {"tensors": len(ranges), "max": top[1][0], "tensor": top[0]}
    return report


def fp16_weight_check(component: str) -> Callable[[str, np.ndarray, bool], None]:
    """For lowprec.convert_component: refuse a weight that overflows FP16 or a Q/DQ scale that underflows it."""

    def check(name: str, converted: np.ndarray, is_scale: bool) -> None:
        if converted.size and not np.isfinite(converted).all():
            raise LowPrecisionError(f"--high-precision fp16: {component} weight {name!r} exceeds FP16's range "
                                    f"({FP16_MAX:.0f}); {SUGGEST}")
        if is_scale and converted.size and float(np.abs(converted.astype(np.float32)).min()) < FP16_MIN_NORMAL:
            raise LowPrecisionError(f"--high-precision fp16: {component} Q/DQ scale {name!r} falls below FP16's "
                                    f"smallest normal ({FP16_MIN_NORMAL:.3g}), losing precision in the layer's "
                                    f"dequantization; {SUGGEST}")

    return check
