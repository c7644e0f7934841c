"""The Ovis-U1 path end to end: demo-checkpoint -> infer through the CLI (one JSON object, same seed -> same
actions), the prompt cache holding token ids, loader refusals (named keys), variant detection, and the real
configuration's parameter counts (built on the meta device)."""
import json
import shutil

import numpy as np
import pytest
import torch

from edge.cli import main
from edge.errors import CheckpointError


def _images(ckpt):
    return sum((["--image", str(p)] for p in sorted((ckpt / "samples").glob("*.png"))), [])


def _infer(capsys, ckpt, *extra):
    capsys.readouterr()
    code = main(["infer", "--checkpoint", str(ckpt), *_images(ckpt), "--instruction", "pick up the red block",
                 "--state", "0.1,0,0,0,0,0,0.02,0.02", "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)  # exactly one JSON object, nothing else on stdout


def test_demo_checkpoint_cli_then_infer_round_trip(tmp_path, capsys):
    out = tmp_path / "ovis"
    assert main(["demo-checkpoint", "--variant", "ovis-u1-tiny", "--out", str(out)]) == 0
    assert {"model.pt", "dataset_stats.json", "train_config.yaml", "base"} <= {p.name for p in out.iterdir()}
    first = _infer(capsys, out)
    assert set(first) == {"actions", "timings_ms"}
    actions = np.asarray(first["actions"])
    assert actions.shape == (16, 7) and np.isfinite(actions).all()
    assert set(np.unique(actions[:, -1])) <= {-1.0, 1.0}  # LIBERO gripper post-processing
    assert {"vision_encoder", "prefill", "denoise"} <= set(first["timings_ms"])
    assert _infer(capsys, out)["actions"] == first["actions"]  # same seed -> same output
    assert _infer(capsys, out, "--seed", "1")["actions"] != first["actions"]


def test_prompt_cache_holds_token_ids(ovis_checkpoint, tmp_path):
    from edge.prompt_cache import PromptCache
    from quantize.model.ovis_u1.backend import load_ovis_policy
    from quantize.model.ovis_u1.conditioning import IMAGE_ATOM_ID

    cache_path = tmp_path / "prompts.npz"
    loaded = load_ovis_policy(ovis_checkpoint, prompt_cache=cache_path)
    imgs = [np.full((64, 64, 3), 100, np.uint8)] * 2
    obs = {"images": imgs, "state": np.zeros(8), "instruction": "open the drawer"}
    a = loaded.policy.infer(obs, seed=0)["actions"]
    entry = PromptCache(cache_path).get("open the drawer", loaded.policy.spec.text_encoder)
    assert entry.dtype == np.int64 and entry.ndim == 1 and int((entry == IMAGE_ATOM_ID).sum()) == 1
    again = load_ovis_policy(ovis_checkpoint, prompt_cache=cache_path)
    b = again.policy.infer(obs, seed=0)["actions"]
    assert again.policy.text_source.encoder_calls == 0 and np.array_equal(a, b)
    obs2 = {**obs, "images": [np.full((64, 64, 3), 200, np.uint8)] * 2}  # the VLM reads the image every step
    enc1 = loaded.policy.backend.run("vision_encoder", {"pixels": np.zeros((1, 3, 224, 448), np.float32),
                                                         "prefix_ids": entry[None, :2], "suffix_ids": entry[None, 7:]})
    enc2 = loaded.policy.backend.run("vision_encoder", {"pixels": np.ones((1, 3, 224, 448), np.float32) * 0.5,
                                                         "prefix_ids": entry[None, :2], "suffix_ids": entry[None, 7:]})
    assert np.abs(enc1["context"] - enc2["context"]).max() > 1e-4
    assert not np.array_equal(b, loaded.policy.infer(obs2, seed=0)["actions"])


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_refuses_missing_unexpected_and_misshaped_tensors(ovis_checkpoint, tmp_path):
    from quantize.model.ovis_u1.checkpoint import load_checkpoint

    ckpt = _copy(ovis_checkpoint, tmp_path / "bad")
    payload = torch.load(ckpt / "model.pt", weights_only=True)
    key = "mixtures.action.double_blocks.1.img_self_attn.qkv.weight"
    del payload["mot"][key]
    payload["mot"]["mixtures.action.extra.weight"] = torch.zeros(2)
    w = "mixtures.video.transformer.final_layer.linear.weight"
    payload["mot"][w] = torch.zeros(3, 3)
    torch.save(payload, ckpt / "model.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    msg = str(err.value)
    assert key in msg and "mixtures.action.extra.weight" in msg and w in msg and "wrong shape" in msg


def test_refuses_incomplete_base_release(ovis_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from quantize.model.ovis_u1.checkpoint import BaseRelease, load_conditioner, load_vae

    base = _copy(ovis_checkpoint / "base", tmp_path / "base")
    tensors = load_file(str(base / "model.safetensors"))
    del tensors["vte.weight"]
    tensors["visual_generator.vae.encoder.conv_in.weight"] = torch.zeros(1)
    save_file(tensors, str(base / "model.safetensors"))
    release = BaseRelease(base)
    with pytest.raises(CheckpointError, match=r"missing: vte\.weight"):
        load_conditioner(release)
    with pytest.raises(CheckpointError, match=r"visual_generator\.vae\.encoder\.conv_in\.weight"):
        load_vae(release)
    cfg = json.loads((base / "config.json").read_text())
    del cfg["llm_config"]
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="llm_config"):
        load_conditioner(BaseRelease(base))
    with pytest.raises(CheckpointError, match="config.json not found"):
        BaseRelease(tmp_path / "nowhere")


def test_base_dit_layout_loads(ovis_checkpoint):
    from quantize.model.ovis_u1.checkpoint import BaseRelease, load_base_dit

    dit = load_base_dit(BaseRelease(ovis_checkpoint / "base"))
    assert dit.cfg.depth_double == 2 and dit.cfg.context_dim == 64 and dit.cfg.in_channels == 16


def test_detects_variant_from_tensor_names(ovis_checkpoint, tmp_path):
    from quantize.variants import detect_variant

    assert detect_variant(ovis_checkpoint) == "ovis-u1"
    ckpt = _copy(ovis_checkpoint, tmp_path / "noconfig")
    (ckpt / "train_config.yaml").unlink()
    assert detect_variant(ckpt) == "ovis-u1"
    (ckpt / "dataset_stats.json").unlink()
    from quantize.model.ovis_u1.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="dataset_stats.json"):
        load_checkpoint(ckpt)


def test_real_configuration_parameter_counts():
    """Ovis-U1-3B shapes on the meta device: the Yak DiT is the 1.1B of the paper, the expert a full-width clone."""
    from quantize.model.ovis_u1.action_expert import YakActionExpert, YakExpertConfig
    from quantize.model.ovis_u1.yak import YakConfig, YakTransformer

    with torch.device("meta"):
        dit, expert = YakTransformer(YakConfig()), YakActionExpert(YakExpertConfig())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 1.10e9 < count(dit) < 1.15e9
    assert 1.0e9 < count(expert) < 1.1e9
    assert dit.cfg.axes_dim == (16, 56, 56) and dit.cfg.head_dim == 128


@pytest.mark.slow
def test_export_then_engines_equal_torch(ovis_checkpoint, tmp_path, capsys):
    """The three Ovis-U1 components export (opset 18, no float64), and the onnxruntime engines (no torch on the
    runtime path) give the torch actions."""
    pytest.importorskip("onnxruntime")
    engines = tmp_path / "engines"
    assert main(["export", "--checkpoint", str(ovis_checkpoint), "--out", str(engines),
                 "--instruction", "pick up the red block"]) == 0
    meta = json.loads((engines / "vision_encoder.json").read_text())
    assert {"prefix_ids", "suffix_ids", "pixels"} <= {i["name"] for i in meta["inputs"]}
    # each component counts its own parameters: the expert's double blocks keep a text stream that never runs
    from quantize.model.ovis_u1.checkpoint import load_checkpoint as load_ovis

    model = load_ovis(ovis_checkpoint).model
    count = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    text_stream = count(*[m for blk in model.expert.double_blocks for m in (blk.txt_mod, blk.txt_attn, blk.txt_mlp)])
    step = json.loads((engines / "denoise_step.json").read_text())
    assert step["parameters"] == count(model.expert) - text_stream
    assert step["weights_bytes"] == pytest.approx(step["parameters_bytes"], rel=0.1)  # nor is it in the file
    prefill = json.loads((engines / "prefill.json").read_text())
    assert prefill["parameters"] == count(model.backbone, model.proprio_encoder) - count(model.backbone.final_layer)
    ref = _infer(capsys, ovis_checkpoint)
    capsys.readouterr()
    assert main(["infer", "--engines", str(engines), *_images(ovis_checkpoint), "--instruction", "pick up the red block",
                 "--state", "0.1,0,0,0,0,0,0.02,0.02", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert np.abs(np.asarray(got["actions"]) - np.asarray(ref["actions"])).max() <= 1e-4


def test_prompts_add_stores_token_ids(ovis_checkpoint, tmp_path, capsys):
    from edge.prompt_cache import PromptCache

    cache = tmp_path / "p.npz"
    assert main(["prompts", "add", "--checkpoint", str(ovis_checkpoint), "--prompt-cache", str(cache),
                 "--instruction", "stack the bowls", "--json"]) == 0
    entry = PromptCache(cache).entries()[0]
    assert entry["instruction"] == "stack the bowls" and entry["width"] == 0 and entry["dtype"] == "int64"
