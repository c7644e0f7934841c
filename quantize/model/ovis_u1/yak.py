"""Ovis-U1's "Yak" MMDiT (official parameter names under `visual_generator.backbone.` / `mixtures.video.transformer.`)
as ImageWAM uses it: one prefill pass over [refined VLM text + proprio ; reference image] at video time 0 that
returns every layer's keys/values. Double blocks carry an extra image-only self-attention branch (`img_self_attn`,
third modulation triple); its keys/values are returned too, because the action expert attends to them.

RoPE: 3 axes (16, 56, 56), theta 1e4, pairs interleaved (the tables come from `edge.ovis_rope`); text ids are all
zero (identity rotation), the reference image has ids (1, row, col), actions (2, i, 0)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge.model_configs import YakConfig

from ..layers import MLPEmbedder, QKNorm, apply_rope, attention, merge_heads, split_heads, timestep_embedding
from .refiner import TokenRefiner


class YakModulation(nn.Module):
    """vec -> `sets` triples (shift, scale, gate), each [B, 1, dim] (biased, unlike FLUX.2's)."""

    def __init__(self, dim: int, sets: int):
        super().__init__()
        self.sets = sets
        self.lin = nn.Linear(dim, 3 * sets * dim)

    def forward(self, vec: torch.Tensor):
        out = self.lin(F.silu(vec))[:, None, :].chunk(3 * self.sets, dim=-1)
        return tuple(tuple(out[3 * i : 3 * i + 3]) for i in range(self.sets))


class YakAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.norm = QKNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """[B, S, dim] -> q, k, v [B, H, S, D]; q and k RMS-normalised and rotated."""
        q, k, v = split_heads(self.qkv(x), 3 * self.heads).chunk(3, dim=1)  # (K H) head order as the official rearrange
        q, k = self.norm(q, k)
        return apply_rope(q.to(v.dtype), cos, sin), apply_rope(k.to(v.dtype), cos, sin), v


def gelu_mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift


class DoubleStreamXBlock(nn.Module):
    """Joint text/image attention + image-only self-attention (SD3.5-style "X" block)."""

    def __init__(self, cfg: YakConfig):
        super().__init__()
        dim, heads = cfg.hidden, cfg.heads
        self.img_mod = YakModulation(dim, 3)
        self.img_attn = YakAttention(dim, heads, cfg.qkv_bias)
        self.img_self_attn = YakAttention(dim, heads, cfg.qkv_bias)
        self.img_mlp = gelu_mlp(dim, cfg.mlp_hidden)
        self.txt_mod = YakModulation(dim, 2)
        self.txt_attn = YakAttention(dim, heads, cfg.qkv_bias)
        self.txt_mlp = gelu_mlp(dim, cfg.mlp_hidden)

    def image_qkv(self, img, mods, cos, sin):
        """Joint-branch and self-branch q/k/v of image-like tokens (also used by the action expert)."""
        (shift1, scale1, _), _, (shift3, scale3, _) = mods
        q, k, v = self.img_attn.qkv_heads(modulate(img, shift1, scale1), cos, sin)
        sq, sk, sv = self.img_self_attn.qkv_heads(modulate(img, shift3, scale3), cos, sin)
        return (q, k, v), (sq, sk, sv)

    def image_post(self, img, mods, joint_out, self_out):
        """Residual updates of image-like tokens from the two attention outputs [B, S, H*D]."""
        (_, _, gate1), (shift2, scale2, gate2), (_, _, gate3) = mods
        img = img + gate1 * self.img_attn.proj(joint_out)
        img = img + gate3 * self.img_self_attn.proj(self_out)
        return img + gate2 * self.img_mlp(modulate(img, shift2, scale2))

    def forward(self, img, txt, vec, txt_rope, img_rope, key_mask=None):
        """img [B, N, dim], txt [B, T, dim], *_rope = (cos, sin) -> (img, txt, (k, v) joint [B, H, T+N, D],
        (k, v) image self-attention [B, H, N, D]). `key_mask` [B, T+N] masks padded text keys."""
        img_mods = self.img_mod(vec)
        (t_shift1, t_scale1, t_gate1), (t_shift2, t_scale2, t_gate2) = self.txt_mod(vec)
        (iq, ik, iv), (sq, sk, sv) = self.image_qkv(img, img_mods, *img_rope)
        tq, tk, tv = self.txt_attn.qkv_heads(modulate(txt, t_shift1, t_scale1), *txt_rope)
        q, k, v = torch.cat([tq, iq], dim=2), torch.cat([tk, ik], dim=2), torch.cat([tv, iv], dim=2)  # text first
        joint = merge_heads(attention(q, k, v, key_mask))  # [B, T+N, H*D]
        self_out = merge_heads(attention(sq, sk, sv))
        img = self.image_post(img, img_mods, joint[:, txt.shape[1] :], self_out)
        txt = txt + t_gate1 * self.txt_attn.proj(joint[:, : txt.shape[1]])
        txt = txt + t_gate2 * self.txt_mlp(modulate(txt, t_shift2, t_scale2))
        return img, txt, (k, v), (sk, sv)


class SingleStreamBlock(nn.Module):
    def __init__(self, cfg: YakConfig):
        super().__init__()
        self.heads, self.hidden, self.mlp_hidden = cfg.heads, cfg.hidden, cfg.mlp_hidden
        self.linear1 = nn.Linear(cfg.hidden, 3 * cfg.hidden + cfg.mlp_hidden)
        self.linear2 = nn.Linear(cfg.hidden + cfg.mlp_hidden, cfg.hidden)
        self.norm = QKNorm(cfg.head_dim)
        self.modulation = YakModulation(cfg.hidden, 1)

    def qkv(self, x, vec, cos, sin):
        """-> (q, k, v [B, H, S, D], mlp branch [B, S, mlp_hidden], gate [B, 1, dim])."""
        ((shift, scale, gate),) = self.modulation(vec)
        qkv, mlp = torch.split(self.linear1(modulate(x, shift, scale)), [3 * self.hidden, self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, 3 * self.heads).chunk(3, dim=1)
        q, k = self.norm(q, k)
        return apply_rope(q.to(v.dtype), cos, sin), apply_rope(k.to(v.dtype), cos, sin), v, mlp, gate

    def post(self, x, attn_out, mlp, gate):
        return x + gate * self.linear2(torch.cat([attn_out, F.gelu(mlp, approximate="tanh")], dim=-1))

    def forward(self, x, vec, cos, sin, key_mask=None):
        q, k, v, mlp, gate = self.qkv(x, vec, cos, sin)
        return self.post(x, merge_heads(attention(q, k, v, key_mask)), mlp, gate), k, v


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(hidden, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear(modulate(x, shift, scale))


class YakTransformer(nn.Module):
    def __init__(self, cfg: YakConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden
        self.img_in = nn.Linear(cfg.in_channels, dim)
        self.time_in = MLPEmbedder(256, dim, bias=True)
        self.vector_in = MLPEmbedder(cfg.vec_in_dim, dim, bias=True)
        if cfg.guidance_embed:
            self.guidance_in = MLPEmbedder(256, dim, bias=True)  # present in guidance-distilled releases; unused here
        self.txt_in = TokenRefiner(cfg.context_dim, dim, heads=2 * cfg.heads, depth=cfg.refiner_depth)
        self.double_blocks = nn.ModuleList(DoubleStreamXBlock(cfg) for _ in range(cfg.depth_double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single))
        self.final_layer = LastLayer(dim, cfg.in_channels)

    def _run(self, img_tokens, context, timestep, cos, sin, text_mask=None):
        """Every block; returns (txt+img stream [B, S, dim], vec, joint k/v list, image-self k/v list)."""
        txt, pooled = self.txt_in(context, text_mask)
        vec = self.time_in(timestep_embedding(timestep, 256).to(self.img_in.weight.dtype)) + self.vector_in(pooled)
        img = self.img_in(img_tokens)
        n_txt = txt.shape[1]
        txt_rope, img_rope = (cos[:n_txt], sin[:n_txt]), (cos[n_txt:], sin[n_txt:])
        key_mask = None
        if text_mask is not None:
            ones = torch.ones(img.shape[0], img.shape[1], dtype=torch.bool, device=img.device)
            key_mask = torch.cat([text_mask.to(torch.bool), ones], dim=1)  # [B, T+N]
        joint_kv, image_kv = [], []
        for block in self.double_blocks:
            img, txt, kv, self_kv = block(img, txt, vec, txt_rope, img_rope, key_mask)
            joint_kv.append(kv)
            image_kv.append(self_kv)
        x = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            x, k, v = block(x, vec, cos, sin, key_mask)
            joint_kv.append((k, v))
        return x, vec, joint_kv, image_kv

    def forward(self, img_tokens, context, timestep, cos, sin, text_mask=None):
        """The plain Yak transformer: img_tokens [B, N, in_ch], context [B, T, context_dim], timestep [B] in [0, 1],
        cos/sin [T+N, head_dim] for [text ; image] -> prediction for the image tokens [B, N, in_ch]."""
        x, vec, _, _ = self._run(img_tokens, context, timestep, cos, sin, text_mask)
        return self.final_layer(x[:, context.shape[1] :], vec)

    def prefill(self, img_tokens, context, cos, sin, text_mask=None, timestep=None):
        """ImageWAM's single editing step (video time 0, no target latent; the image tokens are the reference image).
        Returns keys, values [L, B, T+N, H*D] (L = double + single layers) and image_keys, image_values
        [depth_double, B, N, H*D] of the double blocks' image self-attention."""
        if timestep is None:
            timestep = torch.zeros(img_tokens.shape[0], dtype=torch.float32, device=img_tokens.device)
        _, _, joint_kv, image_kv = self._run(img_tokens, context, timestep, cos, sin, text_mask)
        stack = lambda pairs, i: torch.stack([merge_heads(p[i]) for p in pairs])  # noqa: E731
        return stack(joint_kv, 0), stack(joint_kv, 1), stack(image_kv, 0), stack(image_kv, 1)
