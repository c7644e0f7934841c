"""Export counts the parameters and bytes of EACH component (a component module wraps the whole model; counting
`module.parameters()` gave every engine the whole model's size)."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantize.model.checkpoint import load_checkpoint


def _n(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_export_metadata_counts_each_component_own_parameters(demo_checkpoint, demo_engines):
    from diffusers import AutoencoderKLFlux2
    from transformers import AutoModel

    model = load_checkpoint(demo_checkpoint).model
    b = model.backbone
    vae = AutoencoderKLFlux2.from_pretrained(str(demo_checkpoint / "base" / "vae"))
    text = AutoModel.from_pretrained(str(demo_checkpoint / "base" / "text_encoder"))
    expected = {
        # the backbone's output layer (and guidance embedder) never run in the prefill; the proprio encoder does
        "prefill": _n(b) - _n(b.final_layer) - (_n(b.guidance_in) if hasattr(b, "guidance_in") else 0)
        + _n(model.proprio_encoder),
        "denoise_step": _n(model.expert),
        "vision_encoder": _n(vae.encoder, vae.quant_conv),  # the decoder is not part of the engine
        "text_encoder": _n(text),
    }
    whole = _n(model)
    for comp, count in expected.items():
        meta = json.loads((demo_engines / f"{comp}.json").read_text())
        assert meta["parameters"] == count, comp
        assert meta["parameters_bytes"] == 4 * count, comp  # exported from float32
        if comp in ("prefill", "denoise_step"):
            assert meta["parameters"] < whole
    assert expected["prefill"] + expected["denoise_step"] == whole - _n(b.final_layer)


def test_export_metadata_weight_bytes_are_the_tensors_in_the_file(demo_engines):
    for comp in ("vision_encoder", "prefill", "denoise_step", "text_encoder"):
        meta = json.loads((demo_engines / f"{comp}.json").read_text())
        model = onnx.load(str(demo_engines / f"{comp}.onnx"))
        arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
        arrays += [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"]
        assert meta["weights_bytes"] == sum(a.nbytes for a in arrays), comp
        # the file holds the component's weights (dead code dropped, constants such as RoPE tables added): close
        assert meta["weights_bytes"] == pytest.approx(meta["parameters_bytes"], rel=0.1), comp
        size = sum(f.stat().st_size for f in demo_engines.glob(f"{comp}.onnx*"))
        assert meta["weights_bytes"] <= size < meta["weights_bytes"] + 2_000_000, comp


def test_export_progress_names_each_component_size(demo_checkpoint, tmp_path):
    """The progress line before each (long) export shows that component's count, not the whole model's."""
    from quantize.export import export_checkpoint

    lines = []
    export_checkpoint(demo_checkpoint, tmp_path / "fp32", progress=lines.append)
    model = load_checkpoint(demo_checkpoint).model
    expert = next(line for line in lines if "exporting denoise_step" in line)
    assert f"exporting denoise_step ({_n(model.expert) / 1e6:.1f} M params, " in expert
    assert any(line.strip().startswith("denoise_step:") and "GB of weights in the file" in line for line in lines)
    assert np.isfinite(json.loads((tmp_path / "fp32" / "denoise_step.json").read_text())["weights_bytes"])
