"""`build --high-precision` against the RECORDING FAKE of TensorRT (tests/quantize/test_build_tensorrt_fake.py: what
our code hands the parser, not what TensorRT builds), and the conversion's memory at a wide slice (subprocess)."""
import json
import subprocess
import sys
import textwrap

import onnx
import pytest
from onnx import TensorProto

from quantize.lowprec import LowPrecisionError
from tests.quantize.test_build_tensorrt_fake import fake_builder_api


def _build(demo_engines, out, monkeypatch, **kw):
    from quantize.build import build_engines

    calls: list = []
    seen: dict = {}

    def record(path):  # what TensorRT would parse, read while the staging directory still exists
        model = onnx.load(path, load_external_data=False)
        seen[path] = {i.data_type for i in model.graph.initializer}
        return True

    api = fake_builder_api("11.4.0", True, calls)
    api.OnnxParser.parse_from_file = lambda self, path: record(path)
    monkeypatch.setitem(sys.modules, "tensorrt", api)
    kw.setdefault("compute_capability", (8, 7))
    return build_engines(demo_engines, out, **kw), seen


def test_build_parses_a_bf16_copy_by_default_and_fp32_on_request(demo_engines, tmp_path, monkeypatch):
    manifest, seen = _build(demo_engines, tmp_path / "trt", monkeypatch)
    assert manifest["high_precision"] == "bf16" and manifest["strongly_typed"] is True
    assert len(seen) == len(manifest["components"])
    for path, types in seen.items():
        assert "onnx-bf16" in path and TensorProto.BFLOAT16 in types
    assert sorted(manifest["conversion"]) == sorted(manifest["components"])
    assert not list((tmp_path / "trt").glob("onnx-*"))  # the converted copy is gone once the engines exist
    manifest, seen = _build(demo_engines, tmp_path / "trt32", monkeypatch, high_precision="fp32")
    assert manifest["high_precision"] == "fp32" and "conversion" not in manifest
    assert all(str(demo_engines) in p and TensorProto.BFLOAT16 not in t for p, t in seen.items())


def test_build_refuses_to_retype_graphs_already_typed(demo_engines, tmp_path, monkeypatch):
    from quantize.build import device_high_precision

    assert device_high_precision({"high_precision": "fp16"}, None) == ("fp16", False)  # modelopt fp16: as it is
    assert device_high_precision({}, None) == ("bf16", True)
    with pytest.raises(LowPrecisionError, match="already fp16.*--high-precision fp16"):
        device_high_precision({"high_precision": "fp16"}, "bf16")
    with pytest.raises(LowPrecisionError, match="one of bf16, fp16, fp32"):
        device_high_precision({}, "int4")
    with pytest.raises(LowPrecisionError, match="BF16 needs compute capability 8.0.*sm 7.5.*--high-precision fp16"):
        _build(demo_engines, tmp_path / "trt", monkeypatch, compute_capability=(7, 5))
    assert not (tmp_path / "trt").exists()


MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np, onnx, ml_dtypes  # noqa: F401  (imports before the baseline)
    import onnx.shape_inference  # noqa: F401
    from quantize import compact, lowprec  # noqa: F401

    def status(key):  # VmHWM: this process image's peak (ru_maxrss would include the forked pytest parent's)
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    base = status("VmRSS")
    lowprec.convert_component(Path(sys.argv[1]), Path(sys.argv[2]), "bf16")
    print(json.dumps({"base": base, "peak": status("VmHWM")}))
""")


def test_conversion_memory_is_one_weight_at_a_time(tmp_path):
    """A wide slice: 4 float32 MatMul weights of 32 MiB each (external data). Converting holds one float32 weight and
    its bf16 copy (1.5x the weight): the peak stays under 2.5x the largest weight above the process baseline, far
    below the 4 weights (4x) a whole-model load would hold."""
    import numpy as np
    from onnx import helper, numpy_helper

    n, layers = 2896, 4  # 2896 x 2896 float32 = 32 MiB
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for k in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32) * 0.02, f"w{k}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{k}"], [f"h{k}"], name=f"mm{k}"))
        x = f"h{k}"
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(tmp_path / "wide.onnx"), save_as_external_data=True, location="wide.onnx.data")
    del model, graph, inits
    weight = n * n * 4
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "wide.onnx"), str(tmp_path / "bf.onnx")],
                         capture_output=True, text=True, timeout=120, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert res.returncode == 0, res.stderr[-2000:]
    mem = json.loads(res.stdout.strip().splitlines()[-1])
    assert mem["peak"] - mem["base"] < 2.5 * weight, (mem, weight)
    out = onnx.load(str(tmp_path / "bf.onnx"), load_external_data=False)
    assert [i.data_type for i in out.graph.initializer] == [TensorProto.BFLOAT16] * layers
    assert (tmp_path / "bf.onnx.data").stat().st_size >= layers * weight // 2
