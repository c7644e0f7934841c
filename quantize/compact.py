"""Compact Q/DQ ONNX, written one weight at a time: INT8 / FP8 weights STORED in 8 bits.

For every layer the precision policy quantizes (a MatMul / Gemm / Conv with a weight initializer):
    weight  W (float32)  ->  W_q (INT8 or FLOAT8E4M3FN initializer) -> DequantizeLinear(scale per output channel)
    input   x            ->  QuantizeLinear(x, s, 0) -> DequantizeLinear(s, 0)   (one pair per activation tensor)
the layout NVIDIA Model Optimizer writes with `dq_only=True` and TensorRT builds strongly typed networks from
(symmetric, zero points 0, per-channel weights, per-tensor activations, opset >= 19 for FP8).

Memory: the source graph is read without its weights; each initializer is read from the source's external data file
by offset, converted (or copied) and appended to the output's data file before the next is read, so the peak is one
float32 weight and its 8-bit copy whatever the model size. No scratch copies of the model are written.
Activation ranges come from quantize/calibrate.py."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edge.errors import ImageWAMEdgeError

QMAX = {"int8": 127.0, "fp8": 448.0}  # symmetric ranges: INT8 [-127, 127] (TensorRT), FP8 E4M3 max normal
QDQ_OPSET = 19  # FLOAT8E4M3FN Q/DQ (ModelOpt writes int8 and fp8 graphs at >= 19 too)
INLINE_BYTES = 4096  # smaller tensors stay inside the .onnx (scales, zero points, biases of small layers)
ALIGNMENT = 65536  # data offsets onnxruntime can map in place


class CompactWriteError(ImageWAMEdgeError):
    """The compact quantized graph could not be written (a weight, a range or a file is missing or wrong)."""


def _elem(precision: str):
    from onnx import TensorProto

    return TensorProto.INT8 if precision == "int8" else TensorProto.FLOAT8E4M3FN


def weight_axis(node, rank: int) -> int:
    """The output-channel axis of a layer's weight: Conv [O, I, kh, kw] -> 0; Gemm B [K, N] -> 1 ([N, K] with
    transB -> 0); MatMul B [..., K, N] -> the last."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1


def quantize_weight(w: np.ndarray, axis: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel quantization along `axis` -> (8-bit values as stored: int8 or uint8 bytes of
    float8_e4m3fn, float32 scales [w.shape[axis]])."""
    qmax = QMAX[precision]
    others = tuple(d for d in range(w.ndim) if d != axis)
    amax = np.abs(w).max(axis=others) if others else np.abs(w)
    scale = (amax / qmax).astype(np.float32)
    scale[~(scale > 0)] = 1.0  # an all-zero channel: any scale reproduces it
    shape = [1] * w.ndim
    shape[axis] = -1
    scaled = w / scale.reshape(shape)
    if precision == "int8":
        return np.clip(np.rint(scaled), -qmax, qmax).astype(np.int8), scale
    import ml_dtypes

    return np.clip(scaled, -qmax, qmax).astype(ml_dtypes.float8_e4m3fn).view(np.uint8), scale


class SourceTensors:
    """The initializers of a graph-only ModelProto, read one at a time (external data by offset, no mapping)."""

    def __init__(self, model, folder: Path):
        self.folder = folder
        self.inits = {i.name: i for i in model.graph.initializer}

    def read(self, name: str) -> np.ndarray:
        from onnx import TensorProto, helper, numpy_helper

        init = self.inits[name]
        if init.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(init)
        info = {e.key: e.value for e in init.external_data}
        path = self.folder / info["location"]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        count = int(np.prod(init.dims, dtype=np.int64))
        try:
            data = np.fromfile(path, dtype=dtype, count=count, offset=int(info.get("offset", 0)))
        except (OSError, ValueError) as exc:
            raise CompactWriteError(f"{path}: cannot read weight {name!r} ({type(exc).__name__}: {exc}); the engines "
                                    "directory is incomplete: export it again") from None
        if data.size != count:
            raise CompactWriteError(f"{path}: weight {name!r} is truncated ({data.size} of {count} values); export the "
                                    "engines again")
        return data.reshape(tuple(init.dims))


class DataWriter:
    """Appends tensors to `<file>.data` (aligned) and returns TensorProtos that reference them; small ones inline."""

    def __init__(self, path: Path | None):
        self.path, self.offset = path, 0
        self.file = open(path, "wb") if path is not None else None

    def tensor(self, name: str, array: np.ndarray, data_type: int):
        from onnx import TensorProto

        t = TensorProto(name=name, data_type=data_type, dims=list(array.shape))
        raw = np.ascontiguousarray(array)
        if self.file is None or raw.nbytes <= INLINE_BYTES:
            t.raw_data = raw.tobytes()
            return t
        pad = -self.offset % ALIGNMENT
        self.file.write(b"\0" * pad)
        self.offset += pad
        self.file.write(memoryview(raw.reshape(-1).view(np.uint8)))
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(self.offset)), ("length", str(raw.nbytes))):
            t.external_data.add(key=key, value=value)
        self.offset += raw.nbytes
        return t

    def close(self) -> None:
        if self.file is not None:
            self.file.flush()
            self.file.close()


@dataclass
class _Plan:
    nodes: list  # the layers to quantize (NodeProto)
    weights: dict[str, tuple[int, int]]  # weight initializer -> (axis, rank)
    drop: set[str]  # float32 weights no other node reads: replaced by their 8-bit copy
    activations: list[str]  # activation tensors to Q/DQ, in order


def _plan(model, nodes: list[str]) -> _Plan:
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    missing = [n for n in nodes if n not in by_name]
    if missing:
        raise CompactWriteError(f"layers to quantize not in the graph: {missing[:5]}")
    chosen = [by_name[n] for n in nodes]
    weights, activations = {}, []
    for node in chosen:
        if len(node.input) < 2 or node.input[1] not in inits:
            raise CompactWriteError(f"{node.name} ({node.op_type}) has no weight initializer to quantize")
        rank = len(inits[node.input[1]].dims)
        axis = weight_axis(node, rank)
        if weights.setdefault(node.input[1], (axis, rank)) != (axis, rank):
            raise CompactWriteError(f"weight {node.input[1]} is read along two different channel axes")
        if node.input[0] not in activations:
            activations.append(node.input[0])
    chosen_ids = {id(n) for n in chosen}
    other_uses = {i for n in model.graph.node if id(n) not in chosen_ids for i in n.input}
    other_uses |= {i for n in chosen for i in list(n.input)[2:]} | {o.name for o in model.graph.output}
    return _Plan(chosen, weights, {w for w in weights if w not in other_uses}, activations)


def write_compact_qdq(src: Path, dst: Path, nodes: list[str], amax: dict[str, float], precision: str,
                      external: bool | None = None, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Write `dst` (+ `dst.data` when `external`; default: as the source) from the float32 graph `src` with the
    layers `nodes` quantized to `precision` ("int8" | "fp8"), activations scaled by `amax` (tensor -> max |x| from
    calibration). Returns {"quantized_layers", "weights_bytes", "source_weights_bytes", "seconds"}."""
    import onnx
    from onnx import TensorProto, helper

    if precision not in QMAX:
        raise CompactWriteError(f"precision {precision!r}: one of {sorted(QMAX)}")
    t0 = time.monotonic()
    model = onnx.load(str(src), load_external_data=False)
    plan = _plan(model, nodes)
    no_range = [a for a in plan.activations if not (np.isfinite(amax.get(a, np.nan)) and amax[a] > 0)]
    if no_range:
        raise CompactWriteError(f"{src.name}: no usable calibration range for {len(no_range)} activation(s) "
                                f"({', '.join(no_range[:3])}): calibrate on observations that reach every layer")
    if external is None:
        external = any(i.data_location == TensorProto.EXTERNAL for i in model.graph.initializer)
    source = SourceTensors(model, src.parent)
    data_path = dst.with_name(dst.name + ".data") if external else None
    writer = DataWriter(data_path)
    elem, qmax = _elem(precision), QMAX[precision]
    zero_type = TensorProto.INT8 if precision == "int8" else TensorProto.FLOAT8E4M3FN
    new_inits, written, source_bytes, last = [], 0, 0, time.monotonic()
    try:
        total = len(model.graph.initializer)
        for i, init in enumerate(model.graph.initializer, 1):
            array = source.read(init.name)
            source_bytes += array.nbytes
            if init.name in plan.weights:
                axis, _ = plan.weights[init.name]
                q, scale = quantize_weight(array.astype(np.float32, copy=False), axis, precision)
                new_inits.append(writer.tensor(init.name + "_quantized", q, elem))
                new_inits.append(writer.tensor(init.name + "_scale", scale, TensorProto.FLOAT))
                new_inits.append(writer.tensor(init.name + "_zero_point", np.zeros(scale.shape, q.dtype), zero_type))
                written += q.nbytes + scale.nbytes
                if init.name not in plan.drop:
                    new_inits.append(writer.tensor(init.name, array, init.data_type))
                    written += array.nbytes
            else:
                new_inits.append(writer.tensor(init.name, array, init.data_type))
                written += array.nbytes
            del array
            if time.monotonic() - last > 10 or i == total:
                last = time.monotonic()
                progress(f"      {dst.name}: {i}/{total} tensors, {source_bytes / 1e9:.2f} GB read, "
                         f"{written / 1e9:.2f} GB written, {last - t0:.0f} s")
    finally:
        writer.close()
    for a in plan.activations:
        new_inits.append(helper.make_tensor(a + "_act_scale", TensorProto.FLOAT, [],
                                            [np.float32(amax[a] / qmax)]))
        new_inits.append(helper.make_tensor(a + "_act_zero_point", zero_type, [], b"\0", raw=True))
    _rewire(model, plan, new_inits)
    _bump_opset(model)
    dst.unlink(missing_ok=True)
    onnx.save(model, str(dst))  # the graph only: every large tensor already sits in dst.data
    return {"quantized_layers": len(plan.nodes), "weights_bytes": written, "source_weights_bytes": source_bytes,
            "activations": len(plan.activations), "seconds": round(time.monotonic() - t0, 2)}


def _rewire(model, plan: _Plan, new_inits: list) -> None:
    """Insert the activation Q/DQ nodes just before the first layer that reads them, and the weight DQ nodes at the
    head of the graph (still topologically sorted: they read initializers only). onnxruntime orders execution by a
    depth-first walk back from the outputs that visits a node's higher-indexed inputs first: a weight DQ indexed just
    before its layer ran before everything upstream of that layer, so every float32 weight was dequantized at the
    start of the run and held to the end (the 4B prefill: 23.8 GB); indexed lowest, each runs just before its layer
    and its float32 copy is freed after it."""
    from onnx import helper

    chosen = {id(n) for n in plan.nodes}
    emitted: set[str] = set()
    nodes, head = [], []
    for node in model.graph.node:
        if id(node) in chosen:
            x, w = node.input[0], node.input[1]
            if "x:" + x not in emitted:
                emitted.add("x:" + x)
                nodes.append(helper.make_node("QuantizeLinear", [x, x + "_act_scale", x + "_act_zero_point"],
                                              [x + "_act_quantized"], name=f"{node.name}_act_QuantizeLinear"))
                nodes.append(helper.make_node("DequantizeLinear", [x + "_act_quantized", x + "_act_scale",
                                              x + "_act_zero_point"], [x + "_act_dequantized"],
                                              name=f"{node.name}_act_DequantizeLinear"))
            if "w:" + w not in emitted:
                emitted.add("w:" + w)
                axis, rank = plan.weights[w]
                head.append(helper.make_node("DequantizeLinear", [w + "_quantized", w + "_scale", w + "_zero_point"],
                                              [w + "_dequantized"], name=f"{node.name}_w_DequantizeLinear",
                                              axis=axis))
            node.input[0] = x + "_act_dequantized"
            node.input[1] = w + "_dequantized"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(head + nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(new_inits)
    keep = {i.name for i in new_inits}
    kept_info = [vi for vi in model.graph.value_info if vi.name not in plan.drop or vi.name in keep]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_info)


def _bump_opset(model) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < QDQ_OPSET:
            imp.version = QDQ_OPSET
