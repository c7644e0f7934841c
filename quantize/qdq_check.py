"""What a quantized component must look like, checked on its graph (no weights read): every layer the precision
policy quantizes has its activation behind Q/DQ and its weight behind a DequantizeLinear of an 8-bit INITIALIZER
(stored compact, not float32 behind a Quantize node); the layers the policy keeps in high precision are untouched."""
from __future__ import annotations

from edge.errors import ImageWAMEdgeError

from .onnx_utils import qdq_counts
from .precision import QUANTIZED_OPS, keep_high_precision, node_scopes


class QuantizationError(ImageWAMEdgeError):
    """Quantization failed or did not quantize what the precision policy asks for."""


EIGHT_BIT = {"int8": "INT8", "fp8": "FLOAT8E4M3FN"}


def modelopt_small_convs(model, precision: str) -> set[str]:
    """Convolutions ModelOpt leaves unquantized by its own rule (I/O channels < 16, small FP8 convs); the streamed
    writer follows the same rule so both give the same layer set."""
    if not any(n.op_type == "Conv" for n in model.graph.node):
        return set()
    import logging

    import onnx_graphsurgeon as gs
    from modelopt.onnx.quantization.graph_utils import find_nodes_from_convs_to_exclude

    quiet = logging.getLogger("modelopt.onnx")  # its INFO lines go to STDOUT: `quantize --json` prints only JSON there
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return set(find_nodes_from_convs_to_exclude(gs.import_onnx(model), quantize_mode=precision))
    finally:
        quiet.setLevel(level)


def expected_quantized(model, component: str, precision: str = "int8") -> tuple[list[str], list[str], list[str]]:
    """(nodes whose weights must be quantized, nodes kept in high precision by our policy, nodes ModelOpt skips)."""
    inits = {i.name for i in model.graph.initializer}
    ops = QUANTIZED_OPS.get(component, ("MatMul", "Gemm"))
    small = modelopt_small_convs(model, precision)
    want, keep, skipped = [], [], []
    for node in model.graph.node:
        if node.op_type not in ops or len(node.input) < 2 or node.input[1] not in inits:
            continue  # activation x activation products (attention) are never quantized
        if keep_high_precision(node):
            keep.append(node.name)
        elif node.name in small:
            skipped.append(node.name)
        else:
            want.append(node.name)
    return want, keep, skipped


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def weight_storage(model, node_name: str, producer: dict | None = None) -> str | None:
    """How a layer's weight is stored: the ONNX type name of the 8-bit initializer behind its DequantizeLinear
    ("INT8", "FLOAT8E4M3FN"), "float behind Q" (Q->DQ of a float weight), or None when it is not dequantized."""
    from onnx import TensorProto

    producer = producer if producer is not None else _producers(model)
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None or len(node.input) < 2:
        return None
    dq = producer.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    src = dq.input[0]
    init = next((i for i in model.graph.initializer if i.name == src), None)
    if init is not None:
        return TensorProto.DataType.Name(init.data_type)
    return "float behind Q" if src in producer and producer[src].op_type == "QuantizeLinear" else None


def weight_is_quantized(model, node_name: str) -> bool:
    return weight_storage(model, node_name) is not None


def check_quantized(fp32_model, q_model, component: str, precision: str) -> dict:
    want, keep, skipped = expected_quantized(fp32_model, component, precision)
    producer = _producers(q_model)
    storage = {n: weight_storage(q_model, n, producer) for n in want + keep}
    q_nodes = {n.name: n for n in q_model.graph.node}
    missing = [n for n in want if storage[n] is None]
    loose = [n for n in want if storage[n] is not None and storage[n] != EIGHT_BIT[precision]]
    bare = [n for n in want if n in q_nodes and (producer.get(q_nodes[n].input[0]) is None
                                                 or producer[q_nodes[n].input[0]].op_type != "DequantizeLinear")]
    leaked = [n for n in keep if storage[n] is not None]
    counts = qdq_counts(q_model)
    scopes = {n.name: node_scopes(n)[-2:] for n in fp32_model.graph.node}

    def names(nodes):
        return ", ".join(f"{n} {scopes.get(n)}" for n in nodes[:5])

    if missing:
        raise QuantizationError(f"{component}: {len(missing)} of {len(want)} weight layers were not quantized: "
                                + names(missing))
    if loose:
        raise QuantizationError(f"{component}: {len(loose)} quantized weight(s) are not stored as "
                                f"{EIGHT_BIT[precision]} ({storage[loose[0]]}): {names(loose)}; the engines directory "
                                "would be as large as FP32")
    if bare:
        raise QuantizationError(f"{component}: {len(bare)} quantized layer(s) read an activation without Q/DQ: "
                                + names(bare))
    if leaked:
        raise QuantizationError(f"{component}: layers the precision policy keeps in high precision were quantized: "
                                + names(leaked))
    if counts["other"]:
        raise QuantizationError(f"{component}: Q/DQ nodes of an unexpected type: {counts}")
    return {"quantized_layers": len(want), "high_precision_layers": len(keep), "skipped_small_layers": len(skipped),
            "weights_stored": EIGHT_BIT[precision], "qdq": counts}
