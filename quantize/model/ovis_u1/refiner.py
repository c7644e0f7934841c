"""Ovis-U1's token refiner (`txt_in` of the Yak backbone, official parameter names): the VLM hidden states
[B, T, 4096] -> refined text tokens [B, T, hidden] and a pooled vector [B, hidden] (the output of a learned CLS token
prepended to the sequence). The pooled vector is added to the timestep vector through `vector_in`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import attention, merge_heads, split_heads


class TextProjection(nn.Module):
    """`c_embedder`: mean of the context -> conditioning vector of the refiner blocks."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class RefinerMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class RefinerBlock(nn.Module):
    """Pre-LN self-attention + MLP with tanh-free gates from the conditioning vector (no QK norm, no RoPE)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attn_qkv = nn.Linear(hidden, 3 * hidden)
        self.self_attn_proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = RefinerMLP(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        gate_attn, gate_mlp = self.adaLN_modulation(c)[:, None, :].chunk(2, dim=-1)  # each [B, 1, hidden]
        q, k, v = split_heads(self.self_attn_qkv(self.norm1(x)), 3 * self.heads).chunk(3, dim=1)  # [B, H, L, D]
        x = x + gate_attn * self.self_attn_proj(merge_heads(attention(q, k, v, key_mask)))
        return x + gate_mlp * self.mlp(self.norm2(x))


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(RefinerBlock(hidden, heads) for _ in range(depth))


class TokenRefiner(nn.Module):
    """`SingleTokenRefiner` with a CLS token (the configuration Yak uses: depth 2, heads 2 x backbone heads)."""

    def __init__(self, in_dim: int, hidden: int, heads: int, depth: int = 2):
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, hidden)
        self.c_embedder = TextProjection(in_dim, hidden)
        self.individual_token_refiner = IndividualTokenRefiner(hidden, heads, depth)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, T, in_dim], optional valid-token mask [B, T] -> (tokens [B, T, hidden], pooled [B, hidden])."""
        if mask is None:
            pooled_in = context.mean(dim=1)
            key_mask = None
        else:
            m = mask.to(context.dtype)[..., None]  # [B, T, 1]
            pooled_in = (context * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
            ones = torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
            key_mask = torch.cat([ones, mask.to(torch.bool)], dim=1)  # [B, 1+T], the CLS token is always valid
        c = self.c_embedder(pooled_in)
        x = self.input_embedder(context)
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1+T, hidden]
        for block in self.individual_token_refiner.blocks:
            x = block(x, c, key_mask)
        return x[:, 1:], x[:, 0]
