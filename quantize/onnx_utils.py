"""ONNX graph helpers shared by export, quantization and verification (no torch)."""
from __future__ import annotations

import numpy as np

from edge.manifest import sha256_file  # noqa: F401  (re-exported for the quantize modules)

ONNX_TO_NP = {1: np.float32, 10: np.float16, 11: np.float64, 7: np.int64, 6: np.int32, 9: np.bool_, 16: "bfloat16"}
DOUBLE = 11


def rename_nodes_uniquely(model) -> int:
    """`n00012_MatMul`-style names: ModelOpt's node exclusion matches name PREFIXES, so `node_linear` would also
    exclude every `node_linear_*`. Returns the number of nodes."""
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i:05d}_{node.op_type}"
    return len(model.graph.node)


def float64_nodes(model) -> list[str]:
    """Nodes that produce or cast to float64 (onnxruntime >= 1.24 and TensorRT reject DOUBLE Cos/Sin)."""
    bad = []
    doubles = {vi.name for vi in list(model.graph.value_info) + list(model.graph.output)
               if vi.type.tensor_type.elem_type == DOUBLE}
    doubles |= {init.name for init in model.graph.initializer if init.data_type == DOUBLE}
    for node in model.graph.node:
        if any(a.name == "to" and a.i == DOUBLE for a in node.attribute) or any(o in doubles for o in node.output):
            bad.append(node.name)
        elif node.op_type == "Constant" and any(a.t.data_type == DOUBLE for a in node.attribute if a.name == "value"):
            bad.append(node.name)
    return bad


def tensor_shapes(values) -> list[dict]:
    out = []
    for vi in values:
        tt = vi.type.tensor_type
        out.append({"name": vi.name, "dtype": np.dtype(ONNX_TO_NP.get(tt.elem_type, np.float32)).name
                    if ONNX_TO_NP.get(tt.elem_type) != "bfloat16" else "bfloat16",
                    "shape": [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]})
    return out


def qdq_counts(model) -> dict[str, int]:
    """Q/DQ nodes by zero-point / output type: {"int8": n, "fp8": n, "total": n}."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    counts = {"int8": 0, "fp8": 0, "other": 0, "total": 0}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts["total"] += 1
        zp = node.input[2] if len(node.input) > 2 else ""
        t = inits.get(zp) or consts.get(zp)
        dtype = t.data_type if t is not None else None
        if node.op_type == "DequantizeLinear" and dtype is None:
            src = inits.get(node.input[0])
            dtype = src.data_type if src is not None else None
        if dtype in (TensorProto.INT8, TensorProto.UINT8):
            counts["int8"] += 1
        elif dtype in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2):
            counts["fp8"] += 1
        else:
            counts["other"] += 1
    return counts


def compare(ref: np.ndarray, out: np.ndarray) -> dict:
    """cosine, max abs and relative max abs of `out` against `ref`."""
    a, b = np.asarray(ref, np.float64).ravel(), np.asarray(out, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cos = float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    return {"cosine": cos, "max_abs": max_abs, "rel_max_abs": max_abs / max(float(np.abs(a).max()), 1e-12)}


def _bits(data_type: int) -> int:
    from onnx import TensorProto, helper

    if data_type in (TensorProto.INT4, TensorProto.UINT4) or data_type == getattr(TensorProto, "FLOAT4E2M1", -1):
        return 4
    if data_type == TensorProto.STRING:
        return 0
    return 8 * np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize


def stored_tensors(model) -> dict:
    """The tensors a graph stores (initializers and Constant values, external data included, from their shapes
    alone: nothing is read): {"tensors": n, "elements": n, "bytes": n}."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    elements = [int(np.prod(t.dims, dtype=np.int64)) for t in tensors]
    return {"tensors": len(tensors), "elements": int(sum(elements)),
            "bytes": int(sum((e * _bits(t.data_type) + 7) // 8 for e, t in zip(elements, tensors)))}
