"""Device precision for the layers left unquantized: a BF16 (default) or FP16 copy of an engines directory's ONNX
for strongly typed TensorRT builds (TensorRT 11 takes every layer's type from the graph), written weight by weight.

The quantized engines directory stays FP32 outside its Q/DQ nodes: the accuracy gate runs it with onnxruntime on the
CPU. `imagewam-edge build --high-precision bf16|fp16` converts a copy just before TensorRT parses it:
- every float32 initializer becomes BF16/FP16 (the 8-bit MatMul/Conv weights stay 8-bit), the Q/DQ scales too
  (QuantizeLinear/DequantizeLinear-19 take bfloat16/float16 scales; a DequantizeLinear's output type is its scale's),
  and every float tensor computed outside an FP32 island follows;
- FP32 islands (FP32_OPS, modules whose name scope names a norm, and the angle math feeding Sin/Cos) keep float32,
  with Casts on the edges that cross; their parameters stay float32 (the only float32 initializers left);
- the graph inputs and outputs stay float32 (a Cast after each input, one before each output), so the engines'
  I/O contract and edge/backends are unchanged.
Memory: the graph is read without its weights; each initializer is read from the source's external data by offset,
converted and appended to the copy's data file before the next is read (quantize/compact.py's reader and writer):
the peak is one float32 weight and its 16-bit copy whatever the model size.
FP16 is refused where the calibration ranges say it would overflow (quantize/fp16_check.py).
ONNX's type rules give Conv (and InstanceNormalization, Sin, Cos) bfloat16 only from opset 22; the autoencoder is
exported at opset 18 (what TensorRT 10.3 parses), and TensorRT's parser takes BF16 Conv whatever the opset
(onnx-tensorrt operators.md), so its BF16 copy passes onnx.checker but not strict type inference: onnxruntime refuses
it, the numpy reference evaluator runs it (tests/quantize/test_lowprec.py).
Not checked here (no TensorRT): whether TensorRT's attention fusion (MatMul -> Softmax -> MatMul with BF16/FP16/INT8
matmul inputs) still fires with the Casts around the FP32 Softmax (ModelOpt inserts such Casts itself for FP8
attention with mha_accumulation_dtype="fp32"); if a device profile shows unfused attention, convert with
fp32_ops=FP32_OPS - {"Softmax"} (TensorRT's softmax kernels accumulate in FP32 either way)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge.errors import ImageWAMEdgeError

HIGH_PRECISIONS = ("bf16", "fp16", "fp32")
DEFAULT_HIGH_PRECISION = "bf16"
QDQ_OPSET = 19  # bfloat16/float16 Q/DQ scales
# ops computed in float32 whatever the device precision: normalisation statistics, softmax, the sinusoid angles
FP32_OPS = frozenset({"LayerNormalization", "InstanceNormalization", "GroupNormalization", "RMSNormalization",
                      "BatchNormalization", "LpNormalization", "Softmax", "LogSoftmax", "Sin", "Cos",
                      "ReduceMean", "Pow", "Sqrt", "Reciprocal", "ConstantOfShape"})  # ConstantOfShape: FP32 in TensorRT
HEAVY_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})  # never pulled into an FP32 island
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
TYPE_AGNOSTIC = frozenset({"Shape", "Size"})  # read a float tensor's shape only: no Cast needed
FLOAT32_INPUTS = {("Resize", 1), ("Resize", 2)}  # inputs kept float32 (Resize roi and scales, as ModelOpt AutoCast)


class LowPrecisionError(ImageWAMEdgeError):
    """The graph cannot be converted to the requested device precision."""


def elem_type(name: str) -> int:
    from onnx import TensorProto

    return {"bf16": TensorProto.BFLOAT16, "fp16": TensorProto.FLOAT16}[name]


def np_type(name: str):
    import ml_dtypes

    return {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}[name]


def check_high_precision(name: str) -> None:
    if name not in HIGH_PRECISIONS:
        raise LowPrecisionError(f"--high-precision {name}: one of {', '.join(HIGH_PRECISIONS)}")


def _in_norm_scope(node) -> bool:
    from .precision import node_scopes

    return any("norm" in s.rsplit(".", 1)[-1].lower() for s in node_scopes(node)[-2:])


@dataclass
class Plan:
    """Per node: FP32 island or low; per float32 initializer: converted or kept; the Casts to insert."""

    fp32_nodes: set[int]  # indices into graph.node
    float_tensors: set[str]  # every tensor typed float32 in the source graph
    low_inits: set[str] = field(default_factory=set)
    fp32_inits: set[str] = field(default_factory=set)  # declared FP32 island parameters
    scales: set[str] = field(default_factory=set)  # Q/DQ scales (converted with the rest)


def _types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = {i.name: i.data_type for i in model.graph.initializer}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    return out


def plan_conversion(model, fp32_ops: frozenset[str] = FP32_OPS) -> Plan:
    """Decide the FP32 islands and what becomes of every float32 initializer (graph-only model). `fp32_ops`: the op
    types computed in float32 (default FP32_OPS; the Sin/Cos angle math and norm-scoped modules always are)."""
    from onnx import TensorProto

    types = _types(model)
    untyped = [o for n in model.graph.node for o in n.output if o and o not in types]
    if untyped:
        raise LowPrecisionError(f"the types of {len(untyped)} tensor(s) are unknown ({', '.join(untyped[:3])}): export "
                                "the graph again (the exporter writes value_info for every tensor)")
    floats = {k for k, v in types.items() if v == TensorProto.FLOAT}
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    fp32 = {i for i, n in enumerate(nodes) if n.op_type in fp32_ops or (n.op_type not in HEAVY_OPS | QDQ_OPS
                                                                      and _in_norm_scope(n))}
    # the angle math of sinusoidal embeddings: everything float upstream of a Sin/Cos up to inputs or weighted layers
    stack = [i for i, n in enumerate(nodes) if n.op_type in ("Sin", "Cos")]
    while stack:
        for t in nodes[stack.pop()].input:
            j = producer.get(t)
            if t in floats and j is not None and j not in fp32 and nodes[j].op_type not in HEAVY_OPS | QDQ_OPS:
                fp32.add(j)
                stack.append(j)
    plan = Plan(fp32, floats)
    wants: dict[str, set[bool]] = {}
    for i, n in enumerate(nodes):
        for k, t in enumerate(n.input):
            if t in floats and n.op_type not in TYPE_AGNOSTIC:
                wants.setdefault(t, set()).add(i in fp32 or (n.op_type, k) in FLOAT32_INPUTS)
                if n.op_type in QDQ_OPS and k == 1:
                    plan.scales.add(t)
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            (plan.fp32_inits if True in wants.get(init.name, {False}) else plan.low_inits).add(init.name)
    return plan


def rewrite_graph(model, plan: Plan, low: str) -> dict:
    """Retype the graph in place (initializers already converted by the caller): Casts where an edge crosses
    between float32 and the low type, float32 graph inputs/outputs, Cast/Constant attributes, value_info."""
    from onnx import TensorProto, helper, numpy_helper

    lt = elem_type(low)
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}

    def is_low(t: str) -> bool:  # the type tensor t has after conversion (float tensors only)
        if t in producer:
            return producer[t] not in plan.fp32_nodes
        return t in plan.low_inits  # graph inputs and island parameters stay float32

    casts: dict[tuple[str, bool], str] = {}
    cast_nodes = []

    def cast(t: str, to_low: bool) -> str:
        key = (t, to_low)
        if key not in casts:
            casts[key] = f"{t}__{low if to_low else 'fp32'}"
            cast_nodes.append((producer.get(t, -1), helper.make_node(
                "Cast", [t], [casts[key]], name=f"{t}__cast_{low if to_low else 'fp32'}", to=lt if to_low else TensorProto.FLOAT)))
        return casts[key]

    crossing = 0
    for i, n in enumerate(nodes):
        want_low = i not in plan.fp32_nodes
        for k, t in enumerate(n.input):
            if t not in plan.float_tensors or n.op_type in TYPE_AGNOSTIC:
                continue
            wl = want_low and (n.op_type, k) not in FLOAT32_INPUTS
            if is_low(t) != wl:
                n.input[k] = cast(t, wl)
                crossing += 1
        if want_low:
            _retype_attributes(n, lt, low, numpy_helper)
    # graph outputs stay float32: the producer writes NAME__low, a Cast writes NAME
    renamed = {}
    for out in model.graph.output:
        if out.name in plan.float_tensors and out.name in producer and is_low(out.name):
            renamed[out.name] = f"{out.name}__{low}"
    for n in nodes:
        for k, t in enumerate(n.input):
            if t in renamed:
                n.input[k] = renamed[t]
        for k, t in enumerate(n.output):
            if t in renamed:
                n.output[k] = renamed[t]
    for old, new in renamed.items():
        cast_nodes.append((producer[old], helper.make_node("Cast", [new], [old], name=f"{old}__cast_output",
                                                           to=TensorProto.FLOAT)))
    # each Cast right after its producer (graph inputs and initializers: at the head): still topologically sorted
    after: dict[int, list] = {}
    for idx, node in cast_nodes:
        after.setdefault(idx, []).append(node)
    ordered = list(after.get(-1, []))
    for i, n in enumerate(nodes):
        ordered.append(n)
        ordered.extend(after.get(i, []))
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    for vi in model.graph.value_info:
        if vi.name in plan.float_tensors and is_low(vi.name):
            vi.type.tensor_type.elem_type = lt
        if vi.name in renamed:
            vi.name = renamed[vi.name]
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < QDQ_OPSET and plan.scales:
            imp.version = QDQ_OPSET
    return {"casts": len(cast_nodes), "crossing_edges": crossing,
            "fp32_nodes": sorted(nodes[i].name for i in plan.fp32_nodes)}


def _retype_attributes(node, lt: int, low: str, numpy_helper) -> None:
    from onnx import TensorProto

    for a in node.attribute:
        if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
            a.i = lt
        elif node.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(a.t).astype(np_type(low))
            a.t.CopyFrom(_tensor(a.t.name, arr, lt))


def _tensor(name: str, arr: np.ndarray, data_type: int):
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=data_type, dims=list(arr.shape))
    t.raw_data = np.ascontiguousarray(arr).tobytes()
    return t


def convert_component(src: Path, dst: Path, low: str, check: Callable[[str, np.ndarray, bool], None] | None = None,
                      progress: Callable[[str], None] = lambda s: None, fp32_ops: frozenset[str] = FP32_OPS) -> dict:
    """Write `dst` (+ `dst.data` when the source has external data) from the graph `src` with the layers outside the
    FP32 islands in `low` ("bf16" | "fp16"). `check(name, converted, is_scale)` sees each converted initializer
    (quantize/fp16_check.py refuses overflow/underflow there). Returns what was converted and kept."""
    import onnx
    from onnx import TensorProto

    from .compact import DataWriter, SourceTensors

    if low not in ("bf16", "fp16"):
        raise LowPrecisionError(f"convert to {low!r}: one of bf16, fp16")
    t0 = time.monotonic()
    model = onnx.load(str(src), load_external_data=False)
    plan = plan_conversion(model, fp32_ops)
    external = any(i.data_location == TensorProto.EXTERNAL for i in model.graph.initializer)
    source = SourceTensors(model, src.parent)
    writer = DataWriter(dst.with_name(dst.name + ".data") if external else None)
    lt, nt = elem_type(low), np_type(low)
    new_inits, stats = [], {"converted": 0, "kept_fp32": 0, "other": 0, "bytes_in": 0, "bytes_out": 0}
    try:
        for init in model.graph.initializer:
            array = source.read(init.name)
            stats["bytes_in"] += array.nbytes
            if init.name in plan.low_inits:
                with np.errstate(over="ignore"):  # an FP16 overflow becomes inf, which `check` names
                    conv = array.astype(nt)
                if check is not None:
                    check(init.name, conv, init.name in plan.scales)
                new_inits.append(writer.tensor(init.name, conv, lt))
                stats["converted"] += 1
                stats["bytes_out"] += conv.nbytes
                del conv
            else:
                new_inits.append(writer.tensor(init.name, array, init.data_type))
                stats["kept_fp32" if init.name in plan.fp32_inits else "other"] += 1
                stats["bytes_out"] += array.nbytes
            del array
    finally:
        writer.close()
    del model.graph.initializer[:]
    model.graph.initializer.extend(new_inits)
    info = rewrite_graph(model, plan, low)
    dst.unlink(missing_ok=True)
    onnx.save(model, str(dst))
    progress(f"      {dst.stem}: {stats['converted']} initializers to {low}, {stats['kept_fp32']} kept fp32 (islands), "
             f"{len(info['fp32_nodes'])} fp32 nodes, {info['casts']} casts, {time.monotonic() - t0:.1f} s")
    return {**stats, "high_precision": low, "casts": info["casts"], "fp32_islands": info["fp32_nodes"],
            "fp32_initializers": sorted(plan.fp32_inits), "seconds": round(time.monotonic() - t0, 2)}
