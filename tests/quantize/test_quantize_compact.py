"""Compact, memory-bounded quantization (quantize/compact.py, calibrate.py, bounded_backend.py): weights stored in
8 bits, the peak memory of quantizing a real-WIDTH component measured in a subprocess against its weight bytes,
onnxruntime runs the result, the gate passes, and the FP32 engines run one component at a time when asked."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.cli import main
from quantize.compact import CompactWriteError, write_compact_qdq
from quantize.qdq_check import QuantizationError, check_quantized, weight_storage

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WIDTH, HIDDEN, BLOCKS = 3072, 9216, 2  # FLUX.2-4B's hidden width and MLP width (ratio 3)
STORED = {"int8": TensorProto.INT8, "fp8": TensorProto.FLOAT8E4M3FN}


@pytest.fixture(scope="module")
def mlp_component(tmp_path_factory):
    """A float32 component at FLUX.2-4B width: BLOCKS residual MLP blocks 3072 -> 9216 -> 3072 (453 MB of weights,
    external data, nodes named as the exporter names them), plus a high-precision embedder the policy keeps."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("mlp")
    nodes, inits, x = [], [], "x"
    emb = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) * WIDTH ** -0.5
    inits.append(helper.make_tensor("img_in.weight", TensorProto.FLOAT, emb.shape, emb.tobytes(), raw=True))
    node = helper.make_node("MatMul", [x, "img_in.weight"], ["h0"], name="n00000_MatMul")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'img_in']")  # an embedder: kept FP32
    nodes.append(node)
    x = "h0"
    for b in range(BLOCKS):
        for j, (k, n) in enumerate(((WIDTH, HIDDEN), (HIDDEN, WIDTH))):
            w = rng.standard_normal((k, n), dtype=np.float32) * k ** -0.5
            inits.append(helper.make_tensor(f"blocks.{b}.mlp.{j}.weight", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True))
        i = len(nodes)
        nodes += [helper.make_node("MatMul", [x, f"blocks.{b}.mlp.0.weight"], [f"u{b}"], name=f"n{i:05d}_MatMul"),
                  helper.make_node("Relu", [f"u{b}"], [f"r{b}"], name=f"n{i + 1:05d}_Relu"),
                  helper.make_node("MatMul", [f"r{b}", f"blocks.{b}.mlp.1.weight"], [f"d{b}"], name=f"n{i + 2:05d}_MatMul"),
                  helper.make_node("Add", [x, f"d{b}"], [f"h{b + 1}"], name=f"n{i + 3:05d}_Add")]
        x = f"h{b + 1}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", WIDTH])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, "T", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = folder / "prefill.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="prefill.onnx.data", size_threshold=1024)
    weights = sum(int(np.prod(t.dims)) * 4 for t in inits)
    return path, weights, len(nodes) // 4 * 2


QUANTIZE = """
import json, sys
from pathlib import Path
import numpy as np
import onnx, onnxruntime  # libraries loaded before the peak is reset
from quantize.ptq import quantize_component_compact

def status(key):  # bytes
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024

src, dst, precision = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(1)
feeds = [{"x": rng.standard_normal((1, 64, 3072), dtype=np.float32)} for _ in range(3)]
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM
before = status("VmRSS:")
info = quantize_component_compact(src, dst, "prefill", precision, feeds)
print(json.dumps({"grew": status("VmHWM:") - before, "info": info}))
"""


@pytest.fixture(scope="module")
def quantized_mlp(mlp_component, tmp_path_factory):
    src, _, _ = mlp_component
    out = {}
    for precision in ("int8", "fp8"):
        dst = tmp_path_factory.mktemp(precision) / "prefill.onnx"
        res = subprocess.run([sys.executable, "-c", QUANTIZE, str(src), str(dst), precision], capture_output=True,
                             text=True, env=ENV, cwd=ROOT)
        assert res.returncode == 0, res.stderr[-3000:]
        out[precision] = (dst, json.loads(res.stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantize_memory_is_one_session_of_the_weights_not_a_multiple(mlp_component, quantized_mlp, precision):
    """Measured here (453 MB of float32 weights at 4B width, 6 MB per activation): the peak grows by ~1.0x the
    weights (the calibration session holds them once; the writer then holds one float32 weight and its 8-bit copy);
    ModelOpt's ONNX PTQ held ~10x the component on the real-width slices."""
    _, weights, _ = mlp_component
    _, got = quantized_mlp[precision]
    assert got["grew"] < 1.4 * weights, (got["grew"] / weights, weights)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_weights_are_stored_in_8_bits_and_onnxruntime_runs_them(mlp_component, quantized_mlp, precision):
    import onnxruntime as ort

    src, weights, n_quantized = mlp_component
    dst, got = quantized_mlp[precision]
    q = onnx.load(str(dst), load_external_data=False)
    stored = {i.name: i.data_type for i in q.graph.initializer}
    for b in range(BLOCKS):
        for j in range(2):
            assert stored[f"blocks.{b}.mlp.{j}.weight_quantized"] == STORED[precision]
            assert f"blocks.{b}.mlp.{j}.weight" not in stored  # no float32 copy left behind
    assert stored["img_in.weight"] == TensorProto.FLOAT  # the embedder stays FP32
    assert got["info"]["quantized_layers"] == n_quantized and got["info"]["high_precision_layers"] == 1
    data = dst.with_name(dst.name + ".data").stat().st_size
    embedder = WIDTH * WIDTH * 4
    assert data < 0.27 * (weights - embedder) + embedder + (1 << 20), (data, weights)
    assert {imp.version for imp in q.opset_import if imp.domain in ("", "ai.onnx")} == {19}

    x = np.random.default_rng(7).standard_normal((1, 48, WIDTH), dtype=np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ref = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    a, b = ref.ravel().astype(np.float64), out.ravel().astype(np.float64)
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert cosine > (0.999 if precision == "int8" else 0.995), cosine


RUN = """
import json, resource, sys
import numpy as np, onnxruntime as ort

def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024

so = ort.SessionOptions()  # as the onnxruntime backend opens engines: basic optimisations, arena on
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
x = np.random.default_rng(0).standard_normal((1, 64, 3072)).astype(np.float32)
session = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
session.run(None, {"x": x})
print(json.dumps({"grew": status("VmHWM:") - before}))
"""


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_onnxruntime_dequantizes_one_weight_at_a_time(mlp_component, quantized_mlp, precision):
    """onnxruntime runs a weight's DequantizeLinear where its depth-first order puts it: with the DQ indexed just
    before its layer, every weight was dequantized at the start of the run and all float32 copies were alive at once
    (measured here: +0.60 GB; the real 4B prefill: 23.8 GB); with the DQ nodes at the head of the graph each is
    dequantized just before its layer (+0.36 GB: the 8-bit file read in and about two float32 weights)."""
    _, weights, _ = mlp_component
    dst, _ = quantized_mlp[precision]
    res = subprocess.run([sys.executable, "-c", RUN, str(dst)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    stored = dst.with_name(dst.name + ".data").stat().st_size  # read in during the run (mapped at load)
    largest = HIDDEN * WIDTH * 4
    grew = json.loads(res.stdout)["grew"]
    assert grew < stored + 2.5 * largest, (grew / 1e6, stored / 1e6, largest / 1e6)
    assert stored + 2.5 * largest < 0.9 * weights  # holding every float32 weight at once would fail


def test_a_layer_without_a_calibration_range_is_refused(mlp_component, tmp_path):
    src, _, _ = mlp_component
    with pytest.raises(CompactWriteError, match="no usable calibration range .*calibrate on observations"):
        write_compact_qdq(src, tmp_path / "q.onnx", ["n00001_MatMul"], {"h0": 0.0}, "int8")
    assert not (tmp_path / "q.onnx").exists()


def test_a_float_weight_behind_quantize_is_not_compact():
    """What ModelOpt writes without dq_only (float32 weight -> Q -> DQ) is refused: the engines would be FP32-sized."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.ones(16, np.float32))
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], name="qw"),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], name="dqw"),
             helper.make_node("MatMul", ["xd", "wd"], ["y"], name="n00000_MatMul")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    q = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], [w, s, z]))
    fp32 = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="n00000_MatMul")],
                                               "g", io[:1], io[1:], [w]))
    assert weight_storage(q, "n00000_MatMul") == "float behind Q"
    with pytest.raises(QuantizationError, match="not stored as INT8"):
        check_quantized(fp32, q, "prefill", "int8")


def test_fp32_engines_one_component_at_a_time_give_the_same_actions(demo_engines, monkeypatch):
    """The bounded backend closes a component's session before opening the next when they do not fit together
    (forced here); the actions are those of the ordinary onnxruntime backend."""
    from edge.engines import load_engine_policy
    from quantize import bounded_backend
    from quantize.ptq import capture, synthetic_observations

    monkeypatch.setattr(bounded_backend, "FIT_FRACTION", 0.0)
    bounded = bounded_backend.bounded_policy(demo_engines)
    plain = load_engine_policy(demo_engines)
    obs = synthetic_observations(2, plain, seed=4)
    got = capture(bounded, obs, seed=3)
    assert bounded.backend.one_at_a_time and bounded.backend.opened >= 2 * 3  # re-opened for every observation
    for i, (o, r) in enumerate(zip(obs, got.results)):
        ref = plain.infer(o.as_obs(), seed=3 + i)
        assert np.abs(ref["actions_normalized"] - r["actions_normalized"]).max() < 1e-5
    # the prefill's K/V are stored once per observation, not once per denoise step
    keys = [id(f["keys"]) for f in got.feeds["denoise_step"]]
    steps = plain.spec.steps
    assert len(set(keys)) == len(obs) and len(keys) == steps * len(obs)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantize_command_reports_its_resources_and_stores_8_bit_weights(demo_engines, tmp_path, precision, capsys):
    out = tmp_path / precision
    code = main(["quantize", "--engines", str(demo_engines), "--precision", precision, "--synthetic", "8",
                 "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["gate"] == "passed" and report["method"] == "streamed"
    res = report["resources"]
    assert res["peak_rss_bytes"] > 0 and res["wall_seconds"] > 0 and res["out_bytes"] > 0
    for comp in ("prefill", "denoise_step"):
        info = report["components"][comp]
        assert info["weights_stored"] == {"int8": "INT8", "fp8": "FLOAT8E4M3FN"}[precision]
        q = onnx.load(str(out / f"{comp}.onnx"), load_external_data=False)
        eight = [i for i in q.graph.initializer if i.data_type == STORED[precision]]
        assert len([i for i in eight if i.name.endswith("_quantized")]) == info["quantized_layers"]


def test_streamed_method_refuses_fp16_high_precision(demo_engines, tmp_path, capsys):
    assert main(["quantize", "--engines", str(demo_engines), "--precision", "int8", "--synthetic", "8",
                 "--high-precision", "fp16", "--out", str(tmp_path / "q")]) == 1
    assert "--method modelopt" in capsys.readouterr().err


@pytest.mark.slow
def test_modelopt_output_goes_to_a_log_beside_the_output(demo_engines, tmp_path):
    """`--method modelopt`: ModelOpt's progress bars and log go to OUT.modelopt.log; the terminal gets one summary
    line per component on stderr (issue 17 item 4). A real process: the redirection is at the file-descriptor level."""
    import subprocess
    import sys

    out = tmp_path / "int8"
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "quantize", "--engines", str(demo_engines), "--precision",
                           "int8", "--synthetic", "6", "--method", "modelopt", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = tmp_path / "int8.modelopt.log"
    text = log.read_text()
    assert "=== " in text and "ModelOpt int8 PTQ of prefill" in text and "ModelOpt int8 PTQ of denoise_step" in text
    assert "[modelopt]" in text  # its own log lines landed in the file
    err = proc.stderr
    assert "[modelopt]" not in err and "%|" not in err  # no ModelOpt log or progress bar on the terminal
    assert f"ModelOpt's own output goes to {log}" in err
    for comp in ("prefill", "denoise_step"):
        assert sum(line.strip().startswith(f"{comp}: ") and "layers quantized" in line for line in err.splitlines()) == 1
    assert "wrote" in proc.stdout
