"""The slim FLUX.2 action expert (BFL-style names as in the official `ActionDiTFlux2`): at layer i the action
queries attend to [prefix K/V of backbone layer i ; action K/V] (Mixture-of-Transformers); the prefix never sees
the actions. One call is one flow-matching velocity evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge.model_configs import ActionExpertConfig

from .layers import MLPEmbedder, Modulation, QKNorm, SwiGLUMLP, apply_rope, attention, merge_heads, split_heads, swiglu, timestep_embedding


class SlimAttention(nn.Module):
    def __init__(self, cfg: ActionExpertConfig):
        super().__init__()
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.attn_dim, bias=False)
        self.norm = QKNorm(cfg.head_dim)
        self.proj = nn.Linear(cfg.attn_dim, cfg.hidden, bias=False)


def mixed_attention(q, k_act, v_act, prefix_k, prefix_v, heads, prefix_mask=None):
    """The action tokens attend to the prefix K/V and to themselves (both variants' experts).
    q/k_act/v_act [B, H, A, D]; prefix_k/v [B, S, H*D]; prefix_mask [B, S] or None -> attention output [B, A, H*D]."""
    k = torch.cat([split_heads(prefix_k.to(k_act.dtype), heads), k_act], dim=2)  # [B, H, S+A, D]
    v = torch.cat([split_heads(prefix_v.to(v_act.dtype), heads), v_act], dim=2)
    mask = None
    if prefix_mask is not None:
        ones = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool, device=q.device)
        mask = torch.cat([prefix_mask.to(torch.bool), ones], dim=1)  # [B, S+A]
    return merge_heads(attention(q, k, v, mask))


class SlimDoubleBlock(nn.Module):
    def __init__(self, cfg: ActionExpertConfig):
        super().__init__()
        self.heads = cfg.heads
        self.img_attn = SlimAttention(cfg)
        self.img_mlp = SwiGLUMLP(cfg.hidden, cfg.mlp_hidden)

    def forward(self, x, mod, cos, sin, prefix_k, prefix_v, prefix_mask=None):
        (shift1, scale1, gate1), (shift2, scale2, gate2) = mod
        qkv = self.img_attn.qkv((1 + scale1) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift1)
        q, k, v = split_heads(qkv, 3 * self.heads).chunk(3, dim=1)  # each [B, H, A, D]
        q, k = self.img_attn.norm(q, k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = mixed_attention(q, k, v, prefix_k, prefix_v, self.heads, prefix_mask)
        x = x + gate1 * self.img_attn.proj(out)
        return x + gate2 * self.img_mlp((1 + scale2) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift2)


class SlimSingleBlock(nn.Module):
    def __init__(self, cfg: ActionExpertConfig):
        super().__init__()
        self.heads, self.attn_dim, self.mlp_hidden = cfg.heads, cfg.attn_dim, cfg.mlp_hidden
        self.linear1 = nn.Linear(cfg.hidden, 3 * cfg.attn_dim + 2 * cfg.mlp_hidden, bias=False)
        self.linear2 = nn.Linear(cfg.attn_dim + cfg.mlp_hidden, cfg.hidden, bias=False)
        self.norm = QKNorm(cfg.head_dim)

    def forward(self, x, mod, cos, sin, prefix_k, prefix_v, prefix_mask=None):
        shift, scale, gate = mod
        qkv, mlp = torch.split(self.linear1((1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift),
                               [3 * self.attn_dim, 2 * self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, 3 * self.heads).chunk(3, dim=1)
        q, k = self.norm(q, k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = mixed_attention(q, k, v, prefix_k, prefix_v, self.heads, prefix_mask)
        return x + gate * self.linear2(torch.cat([out, swiglu(mlp)], dim=-1))


class ActionHead(nn.Module):
    def __init__(self, hidden: int, action_dim: int):
        super().__init__()
        self.linear = nn.Linear(hidden, action_dim, bias=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=False))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear((1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift)


class ActionExpert(nn.Module):
    def __init__(self, cfg: ActionExpertConfig):
        super().__init__()
        self.cfg = cfg
        self.action_encoder = nn.Linear(cfg.action_dim, cfg.hidden)
        self.time_in = MLPEmbedder(256, cfg.hidden)
        self.double_stream_modulation_img = Modulation(cfg.hidden, double=True)
        self.single_stream_modulation = Modulation(cfg.hidden, double=False)
        self.double_blocks = nn.ModuleList(SlimDoubleBlock(cfg) for _ in range(cfg.depth_double))
        self.single_blocks = nn.ModuleList(SlimSingleBlock(cfg) for _ in range(cfg.depth_single))
        self.head = ActionHead(cfg.hidden, cfg.action_dim)

    def forward(self, x, sigma, keys, values, cos, sin, prefix_mask=None):
        """x [B, A, action_dim] noisy actions, sigma [B] in [0, 1], keys/values [L, B, S, H*D] from the prefill,
        cos/sin [A, head_dim] for the action ids (2, i, 0, 0) -> velocity [B, A, action_dim]."""
        dtype = self.action_encoder.weight.dtype
        h = self.action_encoder(x.to(dtype))
        vec = self.time_in(timestep_embedding(sigma, 256).to(dtype))
        double_mod, (single_mod,) = self.double_stream_modulation_img(vec), self.single_stream_modulation(vec)
        for i, block in enumerate(self.double_blocks):
            h = block(h, double_mod, cos, sin, keys[i], values[i], prefix_mask)
        offset = len(self.double_blocks)
        for i, block in enumerate(self.single_blocks):
            h = block(h, single_mod, cos, sin, keys[offset + i], values[offset + i], prefix_mask)
        return self.head(h, vec)
