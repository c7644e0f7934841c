"""Yak prefill + cached action expert against a joint Mixture-of-Transformers pass written from the official
`_forward_yak` (all tokens in one attention per layer, prefix rows blind to actions): the cache must give the same
velocity, and the double blocks' image self-attention K/V must matter. Plus the RoPE ids of the official code."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge import ovis_rope
from quantize.model.layers import merge_heads, timestep_embedding
from quantize.model.ovis_u1.checkpoint import load_checkpoint
from quantize.model.ovis_u1.yak import modulate


def _attend(q, k, v, prefix_len):
    """Joint attention over [prefix ; actions]: prefix queries never see action keys."""
    s = q.shape[2]
    mask = torch.ones(s, s, dtype=torch.bool)
    mask[:prefix_len, prefix_len:] = False
    return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def joint_velocity(model, context, image_tokens, x, sigma, cos, sin, acos, asin):
    bb, ex = model.backbone, model.expert
    txt, pooled = bb.txt_in(context)
    vec_v = bb.time_in(timestep_embedding(torch.zeros(1), 256)) + bb.vector_in(pooled)
    vec_a = ex.time_in(timestep_embedding(sigma, 256))
    img, act = bb.img_in(image_tokens), ex.action_encoder(x)
    t, n = txt.shape[1], img.shape[1]
    trope, irope = (cos[:t], sin[:t]), (cos[t:], sin[t:])
    for vb, ab in zip(bb.double_blocks, ex.double_blocks):
        im, am = vb.img_mod(vec_v), ab.img_mod(vec_a)
        (ts1, tc1, tg1), (ts2, tc2, tg2) = vb.txt_mod(vec_v)
        (iq, ik, iv), (sq, sk, sv) = vb.image_qkv(img, im, *irope)
        (aq, ak, av), (asq, ask, asv) = ab.image_qkv(act, am, acos, asin)
        tq, tk, tv = vb.txt_attn.qkv_heads(modulate(txt, ts1, tc1), *trope)
        joint = _attend(torch.cat([tq, iq, aq], 2), torch.cat([tk, ik, ak], 2), torch.cat([tv, iv, av], 2), t + n)
        selfo = _attend(torch.cat([sq, asq], 2), torch.cat([sk, ask], 2), torch.cat([sv, asv], 2), n)
        img_new = vb.image_post(img, im, joint[:, t : t + n], selfo[:, :n])
        act = ab.image_post(act, am, joint[:, t + n :], selfo[:, n:])
        txt = txt + tg1 * vb.txt_attn.proj(joint[:, :t])
        txt = txt + tg2 * vb.txt_mlp(modulate(txt, ts2, tc2))
        img = img_new
    stream = torch.cat([txt, img], 1)
    for vb, ab in zip(bb.single_blocks, ex.single_blocks):
        vq, vk, vv, vmlp, vgate = vb.qkv(stream, vec_v, cos, sin)
        aq, ak, av, amlp, agate = ab.qkv(act, vec_a, acos, asin)
        mixed = _attend(torch.cat([vq, aq], 2), torch.cat([vk, ak], 2), torch.cat([vv, av], 2), t + n)
        stream = vb.post(stream, mixed[:, : t + n], vmlp, vgate)
        act = ab.post(act, mixed[:, t + n :], amlp, agate)
    return ex.head(act, vec_a)


@pytest.fixture(scope="module")
def model(ovis_checkpoint):
    return load_checkpoint(ovis_checkpoint).model


def _inputs(model, rows=3, cols=4, text=6, horizon=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.backbone_cfg
    context = model.pack_context(torch.randn(1, text, cfg.context_dim, generator=g),
                                 torch.randn(1, model.proprio_dim, generator=g))
    tokens = torch.randn(1, rows * cols, cfg.in_channels, generator=g)
    x = torch.randn(1, horizon, model.expert_cfg.action_dim, generator=g)
    cos, sin = map(torch.from_numpy, model.prefix_rope(context.shape[1], rows, cols))
    acos, asin = map(torch.from_numpy, model.action_rope(horizon))
    return context, tokens, x, cos, sin, acos, asin


@torch.no_grad()
def test_cached_velocity_equals_joint_mot_pass(model):
    context, tokens, x, cos, sin, acos, asin = _inputs(model)
    sigma = torch.tensor([0.7])
    keys, values, ikeys, ivalues = model.prefill(context, tokens, cos, sin)
    cfg = model.backbone_cfg
    s = context.shape[1] + tokens.shape[1]
    assert keys.shape == (cfg.layers, 1, s, cfg.hidden) and ikeys.shape == (cfg.depth_double, 1, tokens.shape[1], cfg.hidden)
    cached = model.velocity(x, sigma, keys, values, ikeys, ivalues, acos, asin)
    joint = joint_velocity(model, context, tokens, x, sigma, cos, sin, acos, asin)
    assert (cached - joint).abs().max().item() <= 1e-5
    assert cached.abs().mean().item() > 1e-2


@torch.no_grad()
def test_image_self_attention_cache_matters(model):
    context, tokens, x, cos, sin, acos, asin = _inputs(model, seed=1)
    sigma = torch.tensor([0.3])
    keys, values, ikeys, ivalues = model.prefill(context, tokens, cos, sin)
    base = model.velocity(x, sigma, keys, values, ikeys, ivalues, acos, asin)
    other = model.velocity(x, sigma, keys, values, torch.zeros_like(ikeys), torch.zeros_like(ivalues), acos, asin)
    assert (base - other).abs().max().item() > 1e-3
    other_img = model.prefill(context, tokens + 1.0, cos, sin)
    assert (other_img[2] - ikeys).abs().max().item() > 1e-3  # the image self-attention K/V come from the image


def test_rope_ids_as_the_official_code():
    assert (ovis_rope.text_ids(3) == 0).all()  # refined text + proprio: all-zero ids (identity rotation)
    ids = ovis_rope.image_ids(2, 3)
    assert ids[:, 0].tolist() == [1.0] * 6 and ids[4].tolist() == [1.0, 1.0, 1.0]  # (1, row, col), row-major
    assert ovis_rope.action_ids(4)[:, :2].tolist() == [[2, 0], [2, 1], [2, 2], [2, 3]]
    cos, sin = ovis_rope.prefix_rope(2, 2, 2)
    assert cos.shape == (6, 128) and cos.dtype == np.float32
    assert np.allclose(cos[:2], 1.0) and np.allclose(sin[:2], 0.0)
    # axis split (16, 56, 56), theta 1e4, interleaved pairs: the column axis' first frequency is 1 rad per column
    assert np.isclose(np.arccos(cos[3, 72]), 1.0, atol=1e-6) and cos[3, 72] == cos[3, 73]


@torch.no_grad()
def test_yak_forward_shares_the_prefill_blocks(model):
    """`forward` (the Yak generator) and `prefill` run the same blocks: the last layer's image keys match a pass
    whose output head sees the same stream (cheap consistency: forward runs and is finite, prefill K/V depend on text)."""
    context, tokens, _, cos, sin, _, _ = _inputs(model, seed=2)
    out = model.backbone(tokens, context, torch.zeros(1), cos, sin)
    assert out.shape == tokens.shape and torch.isfinite(out).all()
    k1 = model.prefill(context, tokens, cos, sin)[0]
    k2 = model.prefill(context * 0.5, tokens, cos, sin)[0]
    n = tokens.shape[1]
    assert (k1[:, :, -n:] - k2[:, :, -n:]).abs().max().item() > 1e-4  # image keys depend on the conditioning
