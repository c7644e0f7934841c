"""Device precision for the unquantized layers (quantize/lowprec.py, quantize/fp16_check.py): BF16/FP16 copies of
the INT8 demo engines, checked on the CPU. BF16 runs through onnx.reference.ReferenceEvaluator (numpy): onnxruntime's
CPU provider has no bfloat16 DequantizeLinear/MatMul kernels; FP16 runs through onnxruntime's CPU provider."""
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from quantize.fp16_check import fp16_limit
from quantize.device_precision import convert_engines_dir
from quantize.lowprec import LowPrecisionError, convert_component

COMPONENTS = ("vision_encoder", "prefill", "denoise_step")


@pytest.fixture(scope="module")
def int8_engines(demo_engines, tmp_path_factory):
    """The demo engines quantized to INT8 (compact Q/DQ, FP32 elsewhere) + one captured feed per component."""
    from edge.engines import load_engine_policy
    from quantize.ptq import capture_inputs, quantize_from_feeds, synthetic_observations

    fp32 = load_engine_policy(demo_engines)
    try:
        feeds, _ = capture_inputs(fp32, synthetic_observations(3, fp32, seed=3))
    finally:
        fp32.backend.close()
    out = tmp_path_factory.mktemp("lowprec") / "int8"
    report = quantize_from_feeds(demo_engines, "int8", out, feeds, [], {"kind": "synthetic"}, gate=False)
    return out if report["out"] == str(out) else None, {c: f[0] for c, f in feeds.items()}


def _cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run_ort(path, feed):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _qdq_weights(model):
    """MatMul/Gemm/Conv -> the data type of the initializer behind its weight input (through a DequantizeLinear)."""
    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1:
            w = dq.get(n.input[1], n.input[1])
            if w in inits:
                out[n.name] = inits[w].data_type
    return out


def test_bf16_copy_keeps_8bit_weights_fp32_islands_and_float32_io(int8_engines, tmp_path):
    src, feeds = int8_engines
    report = convert_engines_dir(src, tmp_path / "bf16", "bf16")
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["high_precision"] == "bf16" and manifest["precision"] == "int8"
    for comp in COMPONENTS:
        before = onnx.load(str(src / f"{comp}.onnx"), load_external_data=False)
        after = onnx.load(str(tmp_path / "bf16" / f"{comp}.onnx"))
        onnx.checker.check_model(after)  # structure, attributes, topological order
        # every 8-bit MatMul/Gemm weight is still 8-bit; the float ones are bf16 now
        w_before, w_after = _qdq_weights(before), _qdq_weights(after)
        assert w_before.keys() == w_after.keys()
        for layer, dtype in w_before.items():
            assert w_after[layer] == (dtype if dtype in (TensorProto.INT8, TensorProto.FLOAT8E4M3FN)
                                      else TensorProto.BFLOAT16), layer
        if comp != "vision_encoder":
            assert TensorProto.INT8 in w_after.values()
        # no float32 initializer outside the declared FP32 islands
        islands = set(report[comp]["fp32_islands"])
        readers = {}
        for n in after.graph.node:
            for t in n.input:
                readers.setdefault(t, set()).add(n.name)
        f32 = [i.name for i in after.graph.initializer if i.data_type == TensorProto.FLOAT]
        assert sorted(f32) == report[comp]["fp32_initializers"]
        for name in f32:
            assert readers[name] <= islands, (comp, name, readers[name] - islands)
        assert any(i.data_type == TensorProto.BFLOAT16 for i in after.graph.initializer)
        # Q/DQ scales follow the high precision type
        inits = {i.name: i.data_type for i in after.graph.initializer}
        for n in after.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                assert inits[n.input[1]] == TensorProto.BFLOAT16, n.name
        # engine I/O unchanged: same names, float32
        for a, b in ((before.graph.input, after.graph.input), (before.graph.output, after.graph.output)):
            assert [(v.name, v.type.tensor_type.elem_type) for v in a] == [(v.name, v.type.tensor_type.elem_type) for v in b]
    # the norms, softmax and the timestep sinusoid are the FP32 islands
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "bf16" / "denoise_step.onnx")).graph.node}
    island_ops = {ops[n] for n in report["denoise_step"]["fp32_islands"]}
    assert {"LayerNormalization", "Softmax", "Sin", "Cos", "ReduceMean"} <= island_ops
    assert not island_ops & {"MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear"}


def test_bf16_and_fp16_outputs_match_the_float32_graph(int8_engines, demo_engines, tmp_path):
    """BF16 through the ONNX reference evaluator, FP16 through onnxruntime. Against the float32 export the copies
    agree to the format's precision; against the INT8 graph (float32 outside Q/DQ) the activations' INT8 rounding
    turns the 16-bit differences into occasional one-step flips, hence the looser bound."""
    from onnx.reference import ReferenceEvaluator

    src, feeds = int8_engines
    dst = tmp_path / "vision-bf16.onnx"  # the unquantized autoencoder: ~20 BF16 convolutions deep (0.99987 here)
    convert_component(demo_engines / "vision_encoder.onnx", dst, "bf16")
    ref = _run_ort(demo_engines / "vision_encoder.onnx", feeds["vision_encoder"])
    assert _cosine(ref[0], ReferenceEvaluator(onnx.load(str(dst))).run(None, feeds["vision_encoder"])[0]) > 0.9995
    for comp in ("prefill", "denoise_step"):
        feed = feeds[comp]
        for base, bound in ((demo_engines, {"bf16": 0.9999, "fp16": 0.99999}), (src, {"bf16": 0.999, "fp16": 0.999})):
            ref = _run_ort(base / f"{comp}.onnx", feed)
            for low in ("bf16", "fp16"):
                dst = tmp_path / f"{base.name}-{low}-{comp}.onnx"
                convert_component(base / f"{comp}.onnx", dst, low)
                out = (ReferenceEvaluator(onnx.load(str(dst))).run(None, feed) if low == "bf16" else _run_ort(dst, feed))
                for r, o in zip(ref, out):
                    assert o.dtype == np.float32 and o.shape == r.shape
                    assert _cosine(r, o) > bound[low], (comp, base.name, low, _cosine(r, o))


def test_fp16_is_refused_naming_the_layer_whose_range_overflows(int8_engines, tmp_path):
    src, _ = int8_engines
    work = tmp_path / "int8"
    shutil.copytree(src, work)
    # no calibration range for the (unquantized) vision encoder: nothing shows FP16 is safe there
    with pytest.raises(LowPrecisionError, match="vision_encoder has no calibration ranges.*bf16"):
        convert_engines_dir(work, tmp_path / "fp16", "fp16")
    assert not (tmp_path / "fp16").exists()
    # measured ranges for it (ranges.json), and one prefill activation whose calibrated range, read back from its
    # QuantizeLinear scale (amax = scale * 127), is crafted beyond FP16's headroom
    (work / "ranges.json").write_text(json.dumps({"vision_encoder": {"pixels": 1.0}}))
    prefill = onnx.load(str(work / "prefill.onnx"), load_external_data=False)
    q = next(n for n in prefill.graph.node if n.op_type == "QuantizeLinear")
    layer = next(n.name for n in prefill.graph.node if q.output[0].replace("_quantized", "_dequantized") in n.input)
    scale = next(i for i in prefill.graph.initializer if i.name == q.input[1])
    scale.CopyFrom(onnx.numpy_helper.from_array(np.array(2 * fp16_limit() / 127, np.float32), scale.name))
    onnx.save(prefill, str(work / "prefill.onnx"))
    with pytest.raises(LowPrecisionError) as err:
        convert_engines_dir(work, tmp_path / "fp16", "fp16")
    msg = str(err.value)
    assert f"layer {layer}" in msg and repr(q.input[0]) in msg and "prefill" in msg and "--high-precision bf16" in msg
    assert f"{2 * fp16_limit():.4g}" in msg
    # a measured range in ranges.json overrides it: within range, converted (FP16 weights/scales checked on the way)
    ranges = {"vision_encoder": {"pixels": 1.0}, "prefill": {q.input[0]: 10.0}}
    (work / "ranges.json").write_text(json.dumps(ranges))
    report = convert_engines_dir(work, tmp_path / "fp16", "fp16")
    assert set(report) == set(COMPONENTS)
    model = onnx.load(str(tmp_path / "fp16" / "denoise_step.onnx"), load_external_data=False)
    assert {i.data_type for i in model.graph.initializer} <= {TensorProto.FLOAT16, TensorProto.INT8, TensorProto.INT64,
                                                               TensorProto.FLOAT}


def test_fp16_refuses_a_weight_beyond_its_range(tmp_path):
    from onnx import helper, numpy_helper

    from quantize.fp16_check import fp16_weight_check

    w = np.ones((4, 4), np.float32)
    w[1, 2] = 1e6
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "big_weight"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(w, "big_weight")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(tmp_path / "m.onnx"))
    with pytest.raises(LowPrecisionError, match="weight 'big_weight' exceeds FP16"):
        convert_component(tmp_path / "m.onnx", tmp_path / "m16.onnx", "fp16", fp16_weight_check("m"))
    convert_component(tmp_path / "m.onnx", tmp_path / "mbf.onnx", "bf16")  # BF16 has float32's range
    model = onnx.load(str(tmp_path / "mbf.onnx"))
    assert [i.data_type for i in model.graph.initializer] == [TensorProto.BFLOAT16]
    assert [n.op_type for n in model.graph.node] == ["Cast", "MatMul", "Cast"]  # float32 I/O kept by Casts


def test_verify_judges_a_bf16_build_by_the_bf16_gate():
    from quantize.precision import gate_for
    from quantize.verify import gate_name

    assert gate_name({"precision": "int8", "high_precision": "bf16"}) == "int8"
    assert gate_name({"precision": "fp32", "high_precision": "bf16"}) == "bf16"
    assert gate_name({"precision": "fp32"}) == "fp16"  # an FP32 (or FP16) build: the strict gate
    assert gate_for("bf16").tokens_cosine < gate_for("fp16").tokens_cosine  # 8 mantissa bits, not 11
