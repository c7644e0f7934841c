"""Strict loading of the official release layout, and its refusals."""
import shutil

import pytest
import torch

from edge.errors import CheckpointError
from quantize.model.checkpoint import load_checkpoint


@pytest.fixture
def ckpt_copy(demo_checkpoint, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(demo_checkpoint, out, ignore=shutil.ignore_patterns("base"))
    return out


def _edit(path, fn):
    payload = torch.load(path / "model.pt", weights_only=True)
    fn(payload)
    torch.save(payload, path / "model.pt")


def test_loads_and_infers_architecture(demo_checkpoint):
    ckpt = load_checkpoint(demo_checkpoint)
    b, e = ckpt.model.backbone_cfg, ckpt.model.expert_cfg
    assert (b.hidden, b.heads, b.depth_double, b.depth_single, b.context_dim) == (64, 2, 2, 2, 96)
    assert (e.hidden, e.action_dim, e.layers) == (32, 7, 4)
    assert ckpt.model.proprio_dim == 8


def test_alias_keys_are_not_a_second_copy(demo_checkpoint):
    payload = torch.load(demo_checkpoint / "model.pt", weights_only=True)
    mot = payload["mot"]
    alias = "mixtures.video.double_blocks.0.img_attn.qkv.weight"
    assert alias in mot
    assert mot[alias].data_ptr() == mot["mixtures.video.transformer.double_blocks.0.img_attn.qkv.weight"].data_ptr()
    ckpt = load_checkpoint(demo_checkpoint)
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    n_canonical = sum(v.numel() for k, v in mot.items() if not k.startswith(("mixtures.video.double_blocks",
                                                                             "mixtures.video.single_blocks")))
    assert n_params == n_canonical + sum(v.numel() for v in payload["proprio_encoder"].values())


def test_bf16_checkpoint_stays_bf16(ckpt_copy):
    def to_bf16(p):
        p["mot"] = {k: v.to(torch.bfloat16) for k, v in p["mot"].items()}
        p["proprio_encoder"] = {k: v.to(torch.bfloat16) for k, v in p["proprio_encoder"].items()}
        p["torch_dtype"] = "torch.bfloat16"

    _edit(ckpt_copy, to_bf16)
    ckpt = load_checkpoint(ckpt_copy)
    assert ckpt.dtype == torch.bfloat16
    assert {p.dtype for p in ckpt.model.parameters()} == {torch.bfloat16}


def test_missing_key_is_named(ckpt_copy):
    _edit(ckpt_copy, lambda p: p["mot"].pop("mixtures.action.head.linear.weight"))
    with pytest.raises(CheckpointError, match=r"missing: mixtures\.action\.head\.linear\.weight"):
        load_checkpoint(ckpt_copy)


def test_unexpected_key_is_named(ckpt_copy):
    _edit(ckpt_copy, lambda p: p["mot"].__setitem__("mixtures.action.extra_head.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected: mixtures\.action\.extra_head\.weight"):
        load_checkpoint(ckpt_copy)


def test_wrong_shape_is_named(ckpt_copy):
    key = "mixtures.action.single_blocks.1.linear2.weight"
    _edit(ckpt_copy, lambda p: p["mot"].__setitem__(key, torch.zeros(5, 5)))
    with pytest.raises(CheckpointError, match=r"wrong shape: mixtures\.action\.single_blocks\.1\.linear2\.weight \(5, 5\)"):
        load_checkpoint(ckpt_copy)


def test_wrong_file_is_refused(ckpt_copy):
    (ckpt_copy / "model.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable torch checkpoint"):
        load_checkpoint(ckpt_copy)
    torch.save({"state_dict": {}}, ckpt_copy / "model.pt")
    with pytest.raises(CheckpointError, match="'mot'"):
        load_checkpoint(ckpt_copy)


def test_missing_stats_and_model_are_explained(ckpt_copy):
    (ckpt_copy / "dataset_stats.json").unlink()
    with pytest.raises(CheckpointError, match="dataset_stats.json is missing"):
        load_checkpoint(ckpt_copy)
    (ckpt_copy / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt not found"):
        load_checkpoint(ckpt_copy)


def test_train_config_disagreement_is_refused(ckpt_copy):
    cfg = (ckpt_copy / "train_config.yaml").read_text().replace("action_dim: 7", "action_dim: 14")
    (ckpt_copy / "train_config.yaml").write_text(cfg)
    with pytest.raises(CheckpointError, match="action_dim = 14 but model.pt has 7"):
        load_checkpoint(ckpt_copy)
