"""The FLUX.2 ImageWAM inference path: padded vs trimmed text, the image tokenizer vs diffusers' pipeline,
the prompt cache, and the demo-checkpoint -> infer round trip through the CLI."""
import json

import numpy as np
import pytest
import torch

from edge.cli import main
from edge.rope import action_rope, prefix_rope
from quantize.model.checkpoint import load_checkpoint


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_text_equals_trimmed(demo_checkpoint, padding_side):
    model = load_checkpoint(demo_checkpoint).model
    cfg = model.backbone_cfg
    g = torch.Generator().manual_seed(3)
    valid, padded_len, rows, cols, horizon = 9, 24, 2, 3, 16
    text = torch.randn(1, valid, cfg.context_dim, generator=g)
    junk = 5 * torch.randn(1, padded_len - valid, cfg.context_dim, generator=g)  # pads carry garbage
    state, img = torch.randn(1, model.proprio_dim, generator=g), torch.randn(1, rows * cols, 128, generator=g)
    x, sigma = torch.randn(1, horizon, model.expert_cfg.action_dim, generator=g), torch.tensor([0.7])
    acos, asin = map(torch.from_numpy, action_rope(horizon, cfg.axes_dim, cfg.theta))

    ctx_t, _ = model.pack_context(text, state)
    cos, sin = map(torch.from_numpy, prefix_rope(valid + 1, rows, cols, cfg.axes_dim, cfg.theta))
    keys_t, values_t = model.prefill(ctx_t, img, cos, sin)
    v_t = model.velocity(x, sigma, keys_t, values_t, acos, asin)

    padded = torch.cat([text, junk], 1) if padding_side == "right" else torch.cat([junk, text], 1)
    mask = torch.zeros(1, padded_len, dtype=torch.bool)
    mask[0, :valid] = padding_side == "right"
    mask[0, padded_len - valid:] |= padding_side == "left"
    ctx_p, mask_p = model.pack_context(padded, state, mask)
    assert mask_p.sum().item() == valid + 1 and mask_p[0, : valid + 1].all()  # proprio right after the valid text
    key_mask = torch.cat([mask_p, torch.ones(1, rows * cols, dtype=torch.bool)], 1)
    cos, sin = map(torch.from_numpy, prefix_rope(padded_len + 1, rows, cols, cfg.axes_dim, cfg.theta))
    keys_p, values_p = model.prefill(ctx_p, img, cos, sin, key_mask)
    v_p = model.velocity(x, sigma, keys_p, values_p, acos, asin, prefix_mask=key_mask)

    keep = key_mask[0]
    assert (keys_p[:, :, keep] - keys_t).abs().max().item() <= 1e-5
    assert (values_p[:, :, keep] - values_t).abs().max().item() <= 1e-5
    assert (v_p - v_t).abs().max().item() <= 1e-5
    assert v_t.abs().mean().item() > 1e-2  # not trivially zero


def test_image_tokenizer_equals_diffusers_pipeline(demo_checkpoint):
    from diffusers import AutoencoderKLFlux2
    from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline

    from quantize.model.vision import Flux2ImageTokenizer

    vae = AutoencoderKLFlux2.from_pretrained(str(demo_checkpoint / "base" / "vae")).eval()
    pixels = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ours = Flux2ImageTokenizer(vae)(pixels)
        latents = vae.encode(pixels).latent_dist.mode()  # the pipeline's sample_mode="argmax"
        latents = Flux2KleinPipeline._patchify_latents(latents)
        mean = vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        ref = ((latents - mean) / std).flatten(2).transpose(1, 2)
    assert ours.shape == (1, (64 // 16) * (96 // 16), 128)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert vae.bn.running_mean.abs().sum() > 0  # the demo's BN statistics are not the identity


def _images(tmp_path):
    from PIL import Image

    paths = []
    for i in range(2):
        p = tmp_path / f"cam{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(p)
        paths += ["--image", str(p)]
    return paths


def _infer_json(capsys, args):
    assert main(args + ["--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one JSON object on stdout"
    return json.loads(out)


def test_demo_checkpoint_infer_round_trip(tmp_path, capsys):
    ckpt = tmp_path / "demo"
    assert main(["demo-checkpoint", "--variant", "flux2-tiny", "--out", str(ckpt)]) == 0
    capsys.readouterr()
    args = ["infer", "--checkpoint", str(ckpt), *_images(tmp_path), "--instruction", "pick up the red block",
            "--state", "0.1,0,0,0,0,0,0.02,-0.02", "--seed", "7"]
    first, second = _infer_json(capsys, args), _infer_json(capsys, args)
    actions = np.asarray(first["actions"])
    assert actions.shape == (16, 7) and np.isfinite(actions).all()
    assert set(np.unique(actions[:, -1])) <= {-1.0, 1.0}  # LIBERO gripper binarised
    assert first["actions"] == second["actions"]  # same inputs and seed -> identical output
    assert {"vision_encoder", "prefill", "denoise", "total"} <= set(first["timings_ms"])
    other = _infer_json(capsys, args[:-2] + ["--seed", "8"])
    assert other["actions"] != first["actions"]
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(7).standard_normal((16, 7), dtype=np.float32))
    from_file = _infer_json(capsys, args[:-2] + ["--noise", str(noise)])
    assert from_file["actions"] == first["actions"]  # --seed N draws the same noise as the saved array


def test_prompt_cache_hit_skips_the_text_encoder(demo_checkpoint, tmp_path):
    from quantize.torch_backend import load_torch_policy

    cache = tmp_path / "prompts.npz"
    obs = {"images": [np.zeros((224, 224, 3), np.uint8)] * 2, "state": np.zeros(8), "instruction": "open the drawer"}
    first = load_torch_policy(demo_checkpoint, prompt_cache=cache)
    out1 = first.policy.infer(obs, seed=0)
    assert first.text_encoder.loads == 1 and cache.exists()
    second = load_torch_policy(demo_checkpoint, prompt_cache=cache)
    out2 = second.policy.infer(obs, seed=0)
    assert second.text_encoder.loads == 0 and second.policy.text_source.encoder_calls == 0
    np.testing.assert_array_equal(out1["actions"], out2["actions"])
    with pytest.raises(Exception, match="not in the prompt cache"):
        from edge.prompt_cache import PromptCache, TextSource

        TextSource(first.policy.spec.text_encoder, PromptCache(cache))("another instruction")


def test_cli_errors_are_clear(demo_checkpoint, tmp_path, capsys):
    args = ["infer", "--checkpoint", str(demo_checkpoint), *_images(tmp_path)[:2], "--instruction", "x",
            "--state", "0,0,0,0,0,0,0,0"]
    assert main(args) == 1
    assert "takes 2 camera image(s)" in capsys.readouterr().err
    assert main(["infer", "--checkpoint", str(tmp_path / "nope"), *_images(tmp_path), "--instruction", "x", "--state", "0"]) == 1
    assert "does not exist" in capsys.readouterr().err
