"""Our FLUX.2 backbone against diffusers' Flux2Transformer2DModel on the same tiny weights (converted with
diffusers' own BFL converter): full forward, and every layer's post-norm, post-RoPE K/V."""
import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers  # noqa: E402
from diffusers.models.transformers import transformer_flux2  # noqa: E402

from quantize.model.flux2 import FLUX2_PRESETS, Flux2Backbone  # noqa: E402
from edge.rope import image_ids, rope_tables, text_ids  # noqa: E402

CFG = FLUX2_PRESETS["flux2-tiny"]


def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 1 else 0.08) + (1.0 if p.ndim == 1 else 0.0))
    return module


@pytest.fixture(scope="module")
def pair():
    ours = _randomised(Flux2Backbone(CFG)).eval()
    theirs = transformer_flux2.Flux2Transformer2DModel(
        in_channels=CFG.in_channels, num_layers=CFG.depth_double, num_single_layers=CFG.depth_single,
        attention_head_dim=CFG.head_dim, num_attention_heads=CFG.heads, joint_attention_dim=CFG.context_dim,
        mlp_ratio=CFG.mlp_ratio, axes_dims_rope=CFG.axes_dim, rope_theta=int(CFG.theta), guidance_embeds=False,
    ).eval()
    converted = convert_flux2_transformer_checkpoint_to_diffusers({k: v.clone() for k, v in ours.state_dict().items()})
    missing, unexpected = theirs.load_state_dict(converted, strict=True), None
    return ours, theirs


def _inputs(text_len=7, rows=3, cols=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(1, rows * cols, CFG.in_channels, generator=g)
    ctx = torch.randn(1, text_len, CFG.context_dim, generator=g)
    t_ids, i_ids = text_ids(text_len), image_ids(rows, cols)
    cos, sin = rope_tables(np.concatenate([t_ids, i_ids]), CFG.axes_dim, CFG.theta)
    return img, ctx, t_ids, i_ids, torch.from_numpy(cos), torch.from_numpy(sin)


def test_forward_equals_diffusers(pair):
    ours, theirs = pair
    img, ctx, t_ids, i_ids, cos, sin = _inputs()
    for t in (0.0, 0.37, 1.0):
        timestep = torch.tensor([t])
        with torch.no_grad():
            a = ours(img, ctx, timestep, cos, sin)
            b = theirs(hidden_states=img, encoder_hidden_states=ctx, timestep=timestep,
                       img_ids=torch.from_numpy(i_ids).float(), txt_ids=torch.from_numpy(t_ids).float()).sample
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5, f"t={t}: max abs diff {(a - b).abs().max().item():.2e}"


def test_prefill_kv_equals_diffusers_attention_inputs(pair, monkeypatch):
    ours, theirs = pair
    img, ctx, t_ids, i_ids, cos, sin = _inputs()
    captured = []
    original = transformer_flux2.dispatch_attention_fn

    def recording(query, key, value, *args, **kwargs):
        captured.append((key.detach().clone(), value.detach().clone()))  # [B, S, H, D]
        return original(query, key, value, *args, **kwargs)

    monkeypatch.setattr(transformer_flux2, "dispatch_attention_fn", recording)
    with torch.no_grad():
        theirs(hidden_states=img, encoder_hidden_states=ctx, timestep=torch.zeros(1),
               img_ids=torch.from_numpy(i_ids).float(), txt_ids=torch.from_numpy(t_ids).float())
        keys, values = ours.prefill(img, ctx, cos, sin)
    assert len(captured) == CFG.layers == keys.shape[0]
    for layer, (k_ref, v_ref) in enumerate(captured):
        k_ref, v_ref = k_ref.flatten(2), v_ref.flatten(2)  # [B, S, H*D]
        assert (keys[layer] - k_ref).abs().max().item() <= 1e-5, f"layer {layer} K"
        assert (values[layer] - v_ref).abs().max().item() <= 1e-5, f"layer {layer} V"
