"""FLUX.2 klein backbone (BFL parameter names) as ImageWAM uses it: one prefill pass over [text+proprio ; image]
that returns every layer's post-QK-norm, post-RoPE keys and values. `forward` is the plain FLUX.2 transformer
(equal to diffusers' `Flux2Transformer2DModel` on the same weights) and shares every block with `prefill`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge.model_configs import FLUX2_PRESETS, Flux2Config  # noqa: F401  (the configuration records)

from .layers import MLPEmbedder, Modulation, QKNorm, SwiGLUMLP, apply_rope, attention, merge_heads, split_heads, swiglu, timestep_embedding


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.norm = QKNorm(head_dim)
        self.proj = nn.Linear(heads * head_dim, dim, bias=False)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, S, dim] -> q, k, v each [B, H, S, D], q and k RMS-normalised."""
        q, k, v = split_heads(self.qkv(x), 3 * self.heads).chunk(3, dim=1)  # (K H) head order as BFL
        q, k = self.norm(q, k)
        return q, k, v


class DoubleStreamBlock(nn.Module):
    def __init__(self, cfg: Flux2Config):
        super().__init__()
        dim, heads, hd = cfg.hidden, cfg.heads, cfg.head_dim
        self.img_attn = SelfAttention(dim, heads, hd)
        self.img_mlp = SwiGLUMLP(dim, cfg.mlp_hidden)
        self.txt_attn = SelfAttention(dim, heads, hd)
        self.txt_mlp = SwiGLUMLP(dim, cfg.mlp_hidden)

    def forward(self, img, txt, img_mod, txt_mod, cos, sin, key_mask=None):
        """Returns (img, txt, k, v) with k/v [B, H, S_txt+S_img, D] (post-norm, post-RoPE)."""
        (i_shift1, i_scale1, i_gate1), (i_shift2, i_scale2, i_gate2) = img_mod
        (t_shift1, t_scale1, t_gate1), (t_shift2, t_scale2, t_gate2) = txt_mod
        iq, ik, iv = self.img_attn.qkv_heads((1 + i_scale1) * F.layer_norm(img, img.shape[-1:], eps=1e-6) + i_shift1)
        tq, tk, tv = self.txt_attn.qkv_heads((1 + t_scale1) * F.layer_norm(txt, txt.shape[-1:], eps=1e-6) + t_shift1)
        q = apply_rope(torch.cat([tq, iq], dim=2), cos, sin)  # [B, H, S, D], text first
        k = apply_rope(torch.cat([tk, ik], dim=2), cos, sin)
        v = torch.cat([tv, iv], dim=2)
        out = merge_heads(attention(q, k, v, key_mask))  # [B, S, H*D]
        t_out, i_out = out[:, : txt.shape[1]], out[:, txt.shape[1] :]
        img = img + i_gate1 * self.img_attn.proj(i_out)
        img = img + i_gate2 * self.img_mlp((1 + i_scale2) * F.layer_norm(img, img.shape[-1:], eps=1e-6) + i_shift2)
        txt = txt + t_gate1 * self.txt_attn.proj(t_out)
        txt = txt + t_gate2 * self.txt_mlp((1 + t_scale2) * F.layer_norm(txt, txt.shape[-1:], eps=1e-6) + t_shift2)
        return img, txt, k, v


class SingleStreamBlock(nn.Module):
    def __init__(self, cfg: Flux2Config):
        super().__init__()
        dim, self.heads = cfg.hidden, cfg.heads
        self.attn_dim, self.mlp_hidden = cfg.heads * cfg.head_dim, cfg.mlp_hidden
        self.linear1 = nn.Linear(dim, 3 * self.attn_dim + 2 * self.mlp_hidden, bias=False)
        self.linear2 = nn.Linear(self.attn_dim + self.mlp_hidden, dim, bias=False)
        self.norm = QKNorm(cfg.head_dim)

    def forward(self, x, mod, cos, sin, key_mask=None):
        """Returns (x, k, v) with k/v [B, H, S, D]."""
        shift, scale, gate = mod
        qkv, mlp = torch.split(self.linear1((1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift),
                               [3 * self.attn_dim, 2 * self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, 3 * self.heads).chunk(3, dim=1)  # each [B, H, S, D]
        q, k = self.norm(q, k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = merge_heads(attention(q, k, v, key_mask))
        return x + gate * self.linear2(torch.cat([out, swiglu(mlp)], dim=-1)), k, v


class LastLayer(nn.Module):
    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=False))
        self.linear = nn.Linear(dim, out_channels, bias=False)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear((1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift)


class Flux2Backbone(nn.Module):
    def __init__(self, cfg: Flux2Config):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden
        self.img_in = nn.Linear(cfg.in_channels, dim, bias=False)
        self.txt_in = nn.Linear(cfg.context_dim, dim, bias=False)
        self.time_in = MLPEmbedder(256, dim)
        if cfg.guidance_embed:
            self.guidance_in = MLPEmbedder(256, dim)  # present in some releases; ImageWAM never feeds guidance
        self.double_stream_modulation_img = Modulation(dim, double=True)
        self.double_stream_modulation_txt = Modulation(dim, double=True)
        self.single_stream_modulation = Modulation(dim, double=False)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(cfg) for _ in range(cfg.depth_double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single))
        self.final_layer = LastLayer(dim, cfg.in_channels)

    def _blocks(self, img_tokens, context, timestep, cos, sin, key_mask, guidance=None):
        """Runs every block. Yields nothing; returns (txt+img hidden [B, S, dim], vec, keys, values) where
        keys/values are lists of [B, H, S, D] per layer."""
        vec = self.time_in(timestep_embedding(timestep, 256).to(self.img_in.weight.dtype))
        if guidance is not None and self.cfg.guidance_embed:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(vec.dtype))
        img, txt = self.img_in(img_tokens), self.txt_in(context)
        img_mod, txt_mod = self.double_stream_modulation_img(vec), self.double_stream_modulation_txt(vec)
        (single_mod,) = self.single_stream_modulation(vec)
        keys, values = [], []
        for block in self.double_blocks:
            img, txt, k, v = block(img, txt, img_mod, txt_mod, cos, sin, key_mask)
            keys.append(k)
            values.append(v)
        x = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            x, k, v = block(x, single_mod, cos, sin, key_mask)
            keys.append(k)
            values.append(v)
        return x, vec, keys, values

    def forward(self, img_tokens, context, timestep, cos, sin, key_mask=None, guidance=None):
        """The plain FLUX.2 transformer: img_tokens [B, N, in_ch], context [B, T, context_dim], timestep [B] in
        [0, 1], cos/sin [T+N, head_dim] for [text ; image] -> prediction for the image tokens [B, N, in_ch]."""
        x, vec, _, _ = self._blocks(img_tokens, context, timestep, cos, sin, key_mask, guidance)
        return self.final_layer(x[:, context.shape[1] :], vec)

    def prefill(self, img_tokens, context, cos, sin, key_mask=None, timestep=None):
        """ImageWAM's single editing step: video timestep 0, no target latent. Returns (keys, values), each
        [L, B, S, H*D] with S = T + N ([text+proprio ; image]) and L = depth_double + depth_single."""
        if timestep is None:
            timestep = torch.zeros(img_tokens.shape[0], dtype=torch.float32, device=img_tokens.device)
        _, _, keys, values = self._blocks(img_tokens, context, timestep, cos, sin, key_mask)
        return torch.stack([merge_heads(k) for k in keys]), torch.stack([merge_heads(v) for v in values])
