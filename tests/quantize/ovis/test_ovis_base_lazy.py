"""Ovis-U1 base/ needs only what is used (issue 15 item 6): the VLM reads the image every step, so its tensors and
the autoencoder's stay required (refused naming the group); the tokenizer files are read only for an instruction
that no prompt cache holds, and the base DiT (visual_generator.backbone.*) is never read."""
import json
import shutil

import numpy as np
import pytest

from edge.cli import main
from edge.errors import CheckpointError
from edge.loader import PolicySource, load_checkpoint_policy, load_policy

OBS = {"images": [np.full((64, 64, 3), 100, np.uint8)] * 2, "state": np.zeros(8), "instruction": "pick up the red block"}


def _strip(ckpt, drop=("visual_generator.backbone.", "llm.lm_head.")):
    from safetensors.torch import load_file, save_file

    path = ckpt / "base" / "model.safetensors"
    tensors = load_file(str(path))
    save_file({k: v for k, v in tensors.items() if not k.startswith(drop)}, str(path))


@pytest.fixture(scope="module")
def minimal(ovis_checkpoint, tmp_path_factory):
    """The demo without the tokenizer files and the base DiT, plus CHECKPOINT/prompts.npz from `prompts add`."""
    root = tmp_path_factory.mktemp("ovis_minimal")
    assert main(["prompts", "add", "--checkpoint", str(ovis_checkpoint), "--prompt-cache", str(root / "prompts.npz"),
                 "--json", "--instruction", OBS["instruction"]]) == 0
    ckpt = root / "ckpt"
    shutil.copytree(ovis_checkpoint, ckpt,
                    ignore=shutil.ignore_patterns("tokenizer*.json", "chat_template.jinja", "vocab.json", "merges.txt"))
    _strip(ckpt)
    shutil.copy(root / "prompts.npz", ckpt / "prompts.npz")
    return ckpt


def test_without_tokenizer_files_infers_like_the_full_base(ovis_checkpoint, minimal):
    full = load_checkpoint_policy(PolicySource(checkpoint=str(ovis_checkpoint)))
    loaded = load_checkpoint_policy(PolicySource(checkpoint=str(minimal)))
    assert loaded.policy.spec.text_encoder == full.policy.spec.text_encoder
    assert np.array_equal(loaded.policy.infer(OBS, seed=0)["actions"], full.policy.infer(OBS, seed=0)["actions"])
    assert not loaded.text_encoder.available and loaded.text_encoder.tokenizer is None


def test_uncached_instruction_names_the_tokenizer_and_both_fixes(minimal):
    policy = load_policy(PolicySource(checkpoint=str(minimal)))
    with pytest.raises(CheckpointError) as err:
        policy.infer({**OBS, "instruction": "stack the bowls"}, seed=0)
    msg = str(err.value)
    assert "'stack the bowls'" in msg and str(minimal / "base" / "tokenizer_config.json") in msg
    assert f"prompts add --checkpoint {minimal} --prompt-cache {minimal / 'prompts.npz'}" in msg
    assert "ship the prompt tokenizer" in msg


@pytest.mark.parametrize("drop, group", [(("visual_generator.vae.",), "visual_generator.vae."),
                                         (("visual_tokenizer.",), "visual_tokenizer."),
                                         (("llm.model.",), "llm.model.")])
def test_vlm_and_autoencoder_stay_required(minimal, tmp_path, drop, group):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(minimal, ckpt)
    _strip(ckpt, drop)
    with pytest.raises(CheckpointError, match=f"holds no {group.replace('.', '[.]')}[*] tensors"):
        load_policy(PolicySource(checkpoint=str(ckpt)))


def test_no_base_config_names_what_the_base_must_hold(minimal, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(minimal, ckpt, ignore=shutil.ignore_patterns("base"))
    with pytest.raises(CheckpointError) as err:
        load_policy(PolicySource(checkpoint=str(ckpt)))
    msg = str(err.value)
    assert "config.json" in msg and "visual_generator.vae.*" in msg and "llm.model.*" in msg
    assert json.loads((minimal / "base" / "config.json").read_text())  # the minimal base still has its config


@pytest.mark.slow
def test_export_needs_no_tokenizer_files(ovis_checkpoint, minimal, tmp_path):
    """The engines of the minimal base carry its cached token ids and give the full base's torch actions."""
    pytest.importorskip("onnxruntime")
    from edge.prompt_cache import PromptCache
    from quantize.export import export_checkpoint

    out = tmp_path / "engines"
    export_checkpoint(minimal, out)
    assert [e["instruction"] for e in PromptCache(out / "prompts.npz").entries()] == [OBS["instruction"]]
    engines = load_policy(PolicySource(engines=str(out)))
    full = load_policy(PolicySource(checkpoint=str(ovis_checkpoint)))
    np.testing.assert_allclose(engines.infer(OBS, seed=0)["actions_normalized"],
                               full.infer(OBS, seed=0)["actions_normalized"], atol=1e-4)
