"""Ovis-U1 parts against the libraries on the same tiny weights (FP32, <= 1e-5): the AIMv2 block and patch
embedding vs transformers' Aimv2, the rotary/window layout vs transformers' Qwen2.5-VL vision tower, the Qwen3 part
of the conditioning vs transformers' Qwen3ForCausalLM, the autoencoder tokens vs diffusers' AutoencoderKL."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quantize.model.ovis_u1.vision_tower import AIMv2Block, AIMv2Config, PatchEmbed, rotary_tables, window_mask

TOL = 1e-5


def _randn_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 1.0) + (1.0 if p.ndim == 1 else 0.0))


@pytest.fixture()
def aim_cfg():
    return AIMv2Config(hidden=32, intermediate=48, layers=1, heads=4, disable_rope=True)


def test_aimv2_block_equals_transformers(aim_cfg):
    from transformers import Aimv2VisionConfig
    from transformers.models.aimv2.modeling_aimv2 import Aimv2EncoderLayer

    ours = AIMv2Block(aim_cfg).eval()
    _randn_(ours, 0)
    hf_cfg = Aimv2VisionConfig(hidden_size=32, intermediate_size=48, num_attention_heads=4, rms_norm_eps=aim_cfg.rms_eps,
                               qkv_bias=False, mlp_bias=False, attn_implementation="eager")
    hf = Aimv2EncoderLayer(hf_cfg).eval()
    q, k, v = ours.attn.qkv.weight.chunk(3, dim=0)
    mapped = {"rms_norm1.weight": ours.norm_1.weight, "rms_norm2.weight": ours.norm_2.weight,
              "attention.q_proj.weight": q, "attention.k_proj.weight": k, "attention.v_proj.weight": v,
              "attention.out_proj.weight": ours.attn.proj.weight, "ffn.gate_proj.weight": ours.mlp.fc1.weight,
              "ffn.up_proj.weight": ours.mlp.fc3.weight, "ffn.down_proj.weight": ours.mlp.fc2.weight}
    hf.load_state_dict(mapped, strict=True)
    x = torch.randn(1, 24, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x)
        out = ours(x[0])
    assert (out - ref[0]).abs().max().item() <= TOL
    assert (out - x[0]).abs().mean().item() > 1e-2  # the block does something


def test_patch_embedding_equals_transformers(aim_cfg):
    from transformers import Aimv2VisionConfig
    from transformers.models.aimv2.modeling_aimv2 import Aimv2VisionEmbeddings

    ours = PatchEmbed(aim_cfg).eval()
    _randn_(ours, 2)
    hf = Aimv2VisionEmbeddings(Aimv2VisionConfig(hidden_size=32, patch_size=14, image_size=28, rms_norm_eps=aim_cfg.rms_eps)).eval()
    hf.patch_embed.load_state_dict(ours.proj.state_dict())
    hf.rms_norm.load_state_dict(ours.norm.state_dict())
    img = torch.randn(1, 3, 28, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf.rms_norm(hf.patch_embed(img).flatten(2).transpose(1, 2))[0]  # row-major patches [8, 32]
        patches = img[0].reshape(3, 2, 14, 4, 14).permute(1, 3, 0, 2, 4).reshape(8, 3 * 14 * 14)  # row-major
        out = ours(patches)
    assert (out - ref).abs().max().item() <= TOL


def test_rotary_and_windows_equal_qwen25vl_vision():
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qvl

    cfg = qvl.Qwen2_5_VLVisionConfig(depth=1, hidden_size=64, num_heads=2, intermediate_size=32, out_hidden_size=16,
                                     patch_size=14, spatial_merge_size=2, window_size=56, fullatt_block_indexes=[])
    rope = qvl.Qwen2_5_VLVisionRotaryEmbedding(cfg)
    rows, cols = 12, 20
    grid = torch.tensor([[1, rows, cols]])
    position_ids = qvl.get_vision_position_ids(grid, 2)  # merge-block order, as the Ovis-U1 tower
    ref_cos, ref_sin = rope(torch.zeros(rows * cols, 64), position_ids)
    cos, sin = rotary_tables(rows, cols, 32, 2)
    assert np.abs(ref_cos.reshape(rows * cols, -1).numpy() - cos).max() <= 1e-6
    assert np.abs(ref_sin.reshape(rows * cols, -1).numpy() - sin).max() <= 1e-6
    window_index, cu = qvl.get_vision_window_index(grid, spatial_merge_size=2, window_size=56, patch_size=14)
    order = (window_index[:, None] * 4 + torch.arange(4)).reshape(-1).numpy()  # patch order after the reorder
    segment = np.zeros(rows * cols, dtype=np.int64)
    cu = [int(c) for c in cu]
    for i, (a, b) in enumerate(zip(cu[:-1], cu[1:])):
        segment[order[a:b]] = i
    same_ref = segment[:, None] == segment[None, :]
    assert (window_mask(rows, cols, 56, 14, 2) == same_ref).all()
    assert not same_ref.all()  # several windows


def test_qwen3_conditioning_equals_transformers(ovis_checkpoint):
    from transformers import AutoConfig, Qwen3Config, Qwen3ForCausalLM
    from safetensors.torch import load_file

    from quantize.model.ovis_u1.checkpoint import BaseRelease, load_conditioner

    base = ovis_checkpoint / "base"
    cond = load_conditioner(BaseRelease(base))
    import json

    llm_cfg = json.loads((base / "config.json").read_text())["llm_config"]
    hf = Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in llm_cfg.items() if k != "model_type"})).eval()
    weights = {k[len("llm."):]: v for k, v in load_file(str(base / "model.safetensors")).items() if k.startswith("llm.")}
    hf.load_state_dict(weights, strict=False)  # lm_head is tied
    hf.tie_weights()
    ids = torch.tensor([[1, 5, 9, 17, 33, 2, 40]])
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True)
        ref = torch.cat([out.hidden_states[-1], out.hidden_states[-2]], dim=-1)
        ours = cond.llm(inputs_embeds=cond.embed_ids(ids), output_hidden_states=True)
        ours = torch.cat([ours.hidden_states[-1], ours.hidden_states[-2]], dim=-1)
    assert ours.shape == (1, 7, 2 * llm_cfg["hidden_size"])
    assert (ours - ref).abs().max().item() <= TOL
    # hidden_states[-1] is the final-normed state, [-2] the input of the last layer (as the Ovis code reads them)
    assert (ref[..., : llm_cfg["hidden_size"]] - out.hidden_states[-1]).abs().max() == 0


def test_vae_tokens_equal_diffusers(ovis_checkpoint):
    from quantize.model.ovis_u1.checkpoint import BaseRelease, load_vae
    from quantize.model.ovis_u1.vae import SCALING_FACTOR, OvisImageTokenizer

    vae = load_vae(BaseRelease(ovis_checkpoint / "base"))
    assert vae.config.latent_channels == 4 and abs(vae.config.scaling_factor - SCALING_FACTOR) < 1e-12
    pixels = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ours = OvisImageTokenizer(vae)(pixels)
        z = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor  # [1, 4, 8, 12]
        b, c, h, w = z.shape  # "b c (h ph) (w pw) -> b (h w) (c ph pw)"
        ref = z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
    assert ours.shape == (1, (64 // 16) * (96 // 16), 16)
    assert (ours - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("size", [(224, 448, 112, 224), (64, 96, 28, 56)])
def test_resize_matrices_equal_torch_bicubic_antialias(size):
    from quantize.model.ovis_u1.conditioning import resize_matrix

    h, w, rh, rw = size
    x = torch.rand(1, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
    a = torch.from_numpy(resize_matrix(h, rh, "rows")).double()
    b = torch.from_numpy(resize_matrix(w, rw, "cols")).double()
    assert (a @ x @ b.T - ref).abs().max().item() <= 1e-5
