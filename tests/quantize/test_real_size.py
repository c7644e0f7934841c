"""Real-size FLUX.2 demo checkpoints and the memory-bounded export, on a real-WIDTH slice small enough for CI:
the FLUX.2-4B widths (hidden 3072, 24 x 128 heads, text 7680, expert 1024) with 1 double-stream block and no
single-stream block (0.94 GB of bf16), a 1-layer stand-in Qwen3 at the real width 2560. Memory is measured in
subprocesses (ru_maxrss), against the bytes of the bf16 weights."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("imagewam-edge")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
GIB = 2**30

WRITE = """
import json, sys
from quantize.demo_real import write_real_demo

def hwm():  # the peak RSS since the last reset (VmHWM), bytes
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024

def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024

seen = {}
def progress(line):
    if line.startswith("[1/4]"):  # libraries imported, model.pt about to be written: reset the peak
        open("/proc/self/clear_refs", "w").write("5")
        seen["before"] = rss()
    if line.startswith("[2/4]"):
        seen["model_pt_peak"] = hwm()
write_real_demo(sys.argv[1], "flux2-4b", double_blocks=1, single_blocks=0, standin_text_layers=1, progress=progress)
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def slice_4b(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "flux2-4b-1+0"
    res = subprocess.run([sys.executable, "-c", WRITE, str(out)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, json.loads(res.stdout.strip().splitlines()[-1])


def test_real_width_slice_has_the_official_layout_and_loads(slice_4b):
    from edge.model_configs import TEXT_ENCODERS
    from quantize.demo_real import real_configs
    from quantize.model.checkpoint import load_checkpoint, official_state_dict
    from quantize.model.mot import ImageWAMFlux2
    from quantize.model.text_encoder import Qwen3TextEncoder
    from quantize.train_config import load_train_config

    out, _ = slice_4b
    assert zipfile.ZipFile(out / "model.pt").testzip() is None  # every record's CRC holds
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=True, mmap=True)
    assert payload["step"] == 0 and payload["torch_dtype"] == "torch.bfloat16"
    assert set(payload["proprio_encoder"]) == {"weight", "bias"}
    backbone, expert = real_configs("flux2-4b", 7, 1, 0)
    with torch.device("meta"):
        expected = official_state_dict(ImageWAMFlux2(backbone, expert, 8))
    mot = payload["mot"]
    assert {k: tuple(v.shape) for k, v in mot.items()} == {k: tuple(v.shape) for k, v in expected["mot"].items()}
    assert all(v.dtype == torch.bfloat16 for v in mot.values())
    canonical = mot["mixtures.video.transformer.double_blocks.0.img_attn.qkv.weight"]
    alias = mot["mixtures.video.double_blocks.0.img_attn.qkv.weight"]
    assert canonical.untyped_storage().data_ptr() == alias.untyped_storage().data_ptr()  # shared, not a copy
    assert tuple(mot["mixtures.video.transformer.txt_in.weight"].shape) == (3072, 7680)
    assert tuple(mot["mixtures.action.action_encoder.weight"].shape) == (1024, 7)
    w = mot["mixtures.video.transformer.double_blocks.0.img_mlp.0.weight"].float()
    assert abs(w.std().item() - 3072 ** -0.5) < 2e-3  # N(0, 1/fan_in): unit-ish activations

    ckpt = load_checkpoint(out)
    cfg = ckpt.model.backbone_cfg
    assert (cfg.hidden, cfg.heads, cfg.depth_double, cfg.depth_single, cfg.context_dim) == (3072, 24, 1, 0, 7680)
    assert ckpt.dtype == torch.bfloat16 and ckpt.model.expert_cfg.hidden == 1024
    config = load_train_config(out)
    assert config["model"]["variant"] == "klein-4B" and "SLICE" in config["demo"]["depth"]
    assert "STAND-IN" in config["demo"]["text_encoder"] and "STAND-IN" in config["demo"]["tokenizer"]
    text = json.loads((out / "base" / "text_encoder" / "config.json").read_text())
    assert text["hidden_size"] == TEXT_ENCODERS["flux2-4b"]["hidden_size"] and text["dtype"] == "bfloat16"
    enc = Qwen3TextEncoder(out / "base" / "text_encoder", out / "base" / "tokenizer",
                           layers=config["edge"]["text_layers"])
    assert enc.width == cfg.context_dim


def test_writing_model_pt_holds_one_tensor_not_the_model(slice_4b):
    out, seen = slice_4b
    size = (out / "model.pt").stat().st_size
    largest = 18432 * 3072 * 4  # the largest tensor (a modulation / MLP weight) generated in float32
    grew = seen["model_pt_peak"] - seen["before"]
    assert grew < 2 * largest < 0.5 * size, (grew, largest, size)


def test_export_peak_memory_is_bounded_by_the_weights(slice_4b, tmp_path):
    """Measured on this slice (model.pt 0.96 GB = 0.89 GiB): peak RSS 2.03 GiB = 2.3x, of which ~0.65 GiB is the
    interpreter, libraries and the float32 autoencoder; the exporter before (float32 model, `onnx.load` of the
    written file and an onnxruntime session alive together) peaked at 4.23 GiB = 4.7x on the same slice."""
    out, _ = slice_4b
    res = subprocess.run([str(EXE), "export", "--checkpoint", str(out), "--out", str(tmp_path / "onnx"), "--json",
                          "--canvas", "single"],  # 196 image tokens: the memory is the weights', the time shorter
                         capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout)
    weights = (out / "model.pt").stat().st_size
    peak = result["resources"]["peak_rss_bytes"]
    largest_fp32 = max(4 * m["parameters"] for m in result["components"].values())
    assert peak < weights + largest_fp32 + 1.0 * GIB, (peak / GIB, weights / GIB, largest_fp32 / GIB)
    assert peak < 3.0 * weights, (peak / GIB, weights / GIB)
    for meta in result["components"].values():
        for p in meta["parity_vs_torch"].values():
            assert p["cosine"] > 0.99999 and p["rel_max_abs"] < 1e-4
    assert result["resources"]["wall_seconds"] > 0  # reported in the JSON; with --json no progress lines on stderr
    assert "export done in" not in res.stderr and "peak RSS" not in res.stderr


def test_ovis_u1_real_width_slice_has_the_release_layout_and_loads(tmp_path):
    """Ovis-U1 at the real widths (Yak 1536, AIMv2 24 x 1024, vte 65536 x 2048, Qwen3-1.7B width 2048 with 2 of its
    28 layers), 1 double-stream block: model.pt in the official layout, the base release's safetensors, and the
    torch policy loads from them (bf16 kept)."""
    from safetensors import safe_open

    from quantize.model.ovis_u1.checkpoint import DIT, LLM, VAE, VT, VTE
    from quantize.model.ovis_u1.demo_real import real_configs, write_real_ovis_demo
    from quantize.model.ovis_u1.mot import ImageWAMOvisU1
    from quantize.model.checkpoint import official_state_dict
    from quantize.variants import detect_variant, load_policy

    out = write_real_ovis_demo(tmp_path / "ovis", double_blocks=1, single_blocks=0, standin_text_layers=2)
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=True, mmap=True)
    yak, expert = real_configs(7, 1, 0)
    with torch.device("meta"):
        expected = official_state_dict(ImageWAMOvisU1(yak, expert, 8))
    mot = payload["mot"]
    assert {k: tuple(v.shape) for k, v in mot.items()} == {k: tuple(v.shape) for k, v in expected["mot"].items()}
    assert payload["torch_dtype"] == "torch.bfloat16" and all(v.dtype == torch.bfloat16 for v in mot.values())
    assert (mot["mixtures.video.double_blocks.0.img_attn.qkv.weight"].untyped_storage().data_ptr()
            == mot["mixtures.video.transformer.double_blocks.0.img_attn.qkv.weight"].untyped_storage().data_ptr())
    with safe_open(str(out / "base" / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert tuple(f.get_slice(VTE).get_shape()) == (65536, 2048)
    assert all(any(k.startswith(p) for k in keys) for p in (LLM, VT, VAE)) and not any(k.startswith(DIT) for k in keys)
    assert detect_variant(out) == "ovis-u1"
    loaded = load_policy(out)
    assert loaded.checkpoint.dtype == torch.bfloat16 and loaded.policy.spec.variant == "ovis-u1"
    assert loaded.conditioner.llm.config.hidden_size == 2048
