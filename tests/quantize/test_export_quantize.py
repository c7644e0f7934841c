"""Export parity, INT8/FP8 PTQ with ModelOpt through onnxruntime, and the accuracy gate."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge.cli import main
from quantize.onnx_utils import float64_nodes, sha256_file
from quantize.precision import check_precision_supported, keep_high_precision


def test_export_writes_named_symbolic_graphs_without_float64(demo_engines):
    manifest = json.loads((demo_engines / "manifest.json").read_text())
    assert manifest["kind"] == "onnx" and manifest["precision"] == "fp32"
    for name, digest in manifest["files"].items():
        assert sha256_file(demo_engines / name) == digest
    for comp in ("vision_encoder", "prefill", "denoise_step"):
        meta = json.loads((demo_engines / f"{comp}.json").read_text())
        model = onnx.load(str(demo_engines / f"{comp}.onnx"))
        assert float64_nodes(model) == []
        assert len({n.name for n in model.graph.node}) == len(model.graph.node)  # unique names (ModelOpt trap)
        for p in meta["parity_vs_torch"].values():
            assert p["cosine"] > 0.99999 and p["rel_max_abs"] < 1e-4
    prefill = json.loads((demo_engines / "prefill.json").read_text())
    shapes = {i["name"]: i["shape"] for i in prefill["inputs"]}
    assert shapes["text"][1] == "text_len" and shapes["rope_cos"][0] == "prefix_len"
    assert {o["name"] for o in prefill["outputs"]} == {"keys", "values"}


def _images(tmp_path):
    from PIL import Image

    args = []
    for i in range(2):
        p = tmp_path / f"c{i}.png"
        Image.fromarray(np.random.default_rng(10 + i).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
        args += ["--image", str(p)]
    return args


def test_onnxruntime_infer_equals_torch(demo_checkpoint, demo_engines, tmp_path, capsys):
    common = [*_images(tmp_path), "--instruction", "pick up the red block", "--state", "0.1,-0.2,0,0,0.3,0,0.01,-0.01",
              "--seed", "5", "--json"]
    assert main(["infer", "--checkpoint", str(demo_checkpoint), "--prompt-cache", str(demo_engines / "prompts.npz"), *common]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert main(["infer", "--engines", str(demo_engines), "--backend", "onnxruntime", *common]) == 0
    ort_out = json.loads(capsys.readouterr().out)
    a, b = np.asarray(torch_out["actions"]), np.asarray(ort_out["actions"])
    # compare before the gripper binarisation (sign of values near 0 may flip): all but the last dim
    assert np.abs(a[:, :-1] - b[:, :-1]).max() <= 1e-4


def test_engine_runtime_never_imports_torch(demo_engines):
    code = f"""
import sys, numpy as np
from edge.engines import load_engine_policy
p = load_engine_policy({str(demo_engines)!r})
out = p.infer({{"images": [np.zeros((224, 224, 3), np.uint8)] * 2, "state": np.zeros(8), "instruction": "pick up the red block"}}, seed=0)
assert out["actions"].shape == (16, 7)
print("torch" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_engine_cache_miss_is_explained(demo_engines):
    from edge.engines import load_engine_policy
    from edge.errors import ConfigError

    p = load_engine_policy(demo_engines)
    with pytest.raises(ConfigError, match="prompts add"):
        p.infer({"images": [np.zeros((224, 224, 3), np.uint8)] * 2, "state": np.zeros(8), "instruction": "unknown task"})


@pytest.fixture(scope="module")
def quantized(demo_engines, tmp_path_factory):
    from quantize.ptq import quantize_engines

    root = tmp_path_factory.mktemp("quant")
    return {p: quantize_engines(demo_engines, p, root / p, synthetic=12) for p in ("int8", "fp8")}


@pytest.mark.parametrize("precision,elem", [("int8", onnx.TensorProto.INT8), ("fp8", onnx.TensorProto.FLOAT8E4M3FN)])
def test_every_large_matmul_weight_is_quantized(demo_engines, quantized, precision, elem):
    report = quantized[precision]
    assert report["gate"] == "passed" and report["calibration"]["kind"] == "synthetic"
    for comp in ("prefill", "denoise_step"):
        fp32 = onnx.load(str(demo_engines / f"{comp}.onnx"))
        q = onnx.load(str(Path(report["out"]) / f"{comp}.onnx"))
        inits = {i.name: i for i in q.graph.initializer}
        consts = {n.output[0]: n for n in q.graph.node}
        producer = {o: n for n in q.graph.node for o in n.output}
        weights = [n for n in fp32.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in
                   {i.name for i in fp32.graph.initializer}]
        big = [n for n in weights if not keep_high_precision(n)]
        assert big, comp
        for node in big:
            qnode = next(n for n in q.graph.node if n.name == node.name)
            dq = producer[qnode.input[1]]
            assert dq.op_type == "DequantizeLinear", f"{comp} {node.name} weight not dequantized"
            src = dq.input[0]
            if src in producer and producer[src].op_type == "QuantizeLinear":
                zp = producer[src].input[2]
                dtype = inits[zp].data_type if zp in inits else consts[zp].attribute[0].t.data_type
            else:
                dtype = inits[src].data_type
            assert dtype == elem, f"{comp} {node.name}: weight type {dtype}"
        for node in (n for n in weights if keep_high_precision(n)):
            qnode = next(n for n in q.graph.node if n.name == node.name)
            assert producer.get(qnode.input[1]) is None or producer[qnode.input[1]].op_type != "DequantizeLinear"


def test_quantized_engines_run_and_pass_their_gate(quantized):
    from edge.engines import load_engine_policy

    for precision, report in quantized.items():
        assert report["accuracy"]["passed"], report["accuracy"]["checks"]
        pol = load_engine_policy(report["out"])
        out = pol.infer({"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8),
                         "instruction": "pick up the red block"}, seed=0)
        assert np.isfinite(out["actions"]).all()


def test_gate_fails_on_broken_calibration(demo_engines, tmp_path):
    """Calibration captured with K/V a thousand times too large (as from another model): the attention-output
    projections get scales that flatten real activations to zero, and the gate must say so."""
    from edge.engines import load_engine_policy
    from quantize.ptq import capture_inputs, quantize_from_feeds, synthetic_observations

    fp32 = load_engine_policy(demo_engines)
    obs = synthetic_observations(6, fp32, seed=3)
    feeds, _ = capture_inputs(fp32, obs[:4])
    for feed in feeds["denoise_step"]:
        feed["keys"] = feed["keys"] * 1000.0
        feed["values"] = feed["values"] * 1000.0
    report = quantize_from_feeds(demo_engines, "int8", tmp_path / "int8", feeds, obs[4:], {"kind": "broken"})
    assert report["gate"] == "failed"
    assert not (tmp_path / "int8").exists() and (tmp_path / "int8.rejected" / "quantization.json").exists()
    failed = [c["check"] for c in report["accuracy"]["checks"] if not c["passed"]]
    assert any("denoise_step" in c for c in failed)


def test_quantize_without_calibration_is_refused(demo_engines, tmp_path, capsys):
    assert main(["quantize", "--engines", str(demo_engines), "--precision", "int8", "--out", str(tmp_path / "q")]) == 1
    assert "--calibration DIR" in capsys.readouterr().err


def test_fp8_refused_on_orin():
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="Quantize to INT8"):
        check_precision_supported("fp8", (8, 7))
    check_precision_supported("fp8", (8, 9))
    check_precision_supported("int8", (8, 7))


def test_text_encoder_engine_fills_the_prompt_cache_without_torch(demo_checkpoint, demo_engines, tmp_path):
    from edge.text_engine import OnnxTextEncoder
    from quantize.model.text_encoder import Qwen3TextEncoder

    base = demo_checkpoint / "base"
    ref = Qwen3TextEncoder(base / "text_encoder", base / "tokenizer", layers=(1, 2, 3), max_length=128)
    onnx_enc = OnnxTextEncoder(demo_engines)
    assert onnx_enc.identity == ref.identity == json.loads((demo_engines / "policy.json").read_text())["text_encoder"]
    a, b = ref.encode("open the top drawer"), onnx_enc("open the top drawer")
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4
    engines = tmp_path / "engines"
    import shutil

    shutil.copytree(demo_engines, engines)
    code = f"""
import sys, numpy as np
from edge.cli import main
assert main(["prompts", "add", "--engines", {str(engines)!r}, "--instruction", "open the top drawer"]) == 0
from edge.engines import load_engine_policy
out = load_engine_policy({str(engines)!r}).infer({{"images": [np.zeros((224, 224, 3), np.uint8)] * 2,
                                                   "state": np.zeros(8), "instruction": "open the top drawer"}}, seed=0)
assert np.isfinite(out["actions"]).all()
print("torch" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_quantizing_leaves_the_fp32_engines_untouched(demo_engines, quantized):
    from edge.manifest import verify_files

    assert quantized["int8"]["gate"] == "passed"  # the module fixture quantized demo_engines twice
    verify_files(demo_engines, json.loads((demo_engines / "manifest.json").read_text()))
