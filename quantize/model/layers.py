"""Building blocks shared by the FLUX.2 backbone and the action expert (BFL module and parameter names, so the
official checkpoints load by name). Attention sits behind a swappable processor: export swaps it, nothing is
monkey-patched."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, S, D]; cos/sin: [S, D] or [B, S, D]. Rotation of interleaved pairs, computed in float32."""
    if cos.ndim == 2:
        cos, sin = cos[None, None], sin[None, None]  # [1, 1, S, D]
    else:
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, S, D]
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, H, S, D/2, 2]
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # [B, H, S, D]
    return (x.float() * cos + rotated * sin).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0, time_factor: float = 1000.0):
    """Sinusoidal embedding of t in [0, 1] (multiplied by `time_factor` as BFL does): [B] -> [B, dim] as cat(cos, sin)."""
    t = time_factor * t.float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None] * freqs[None]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RMSNorm(nn.Module):
    """Per-head RMS norm with a learned `scale` (BFL name), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.scale.to(x.dtype)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q), self.key_norm(k)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """vec -> `sets` triples (shift, scale, gate), each [B, 1, dim]."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.sets = 2 if double else 1
        self.lin = nn.Linear(dim, 3 * self.sets * dim, bias=False)

    def forward(self, vec: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(3 * self.sets, dim=-1)  # each [B, 1, dim]
        return tuple(tuple(out[3 * i : 3 * i + 3]) for i in range(self.sets))


def swiglu(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return F.silu(a) * b


class SwiGLUMLP(nn.Module):
    """`0` and `2` are the BFL indices of the in/out projections (`img_mlp.0`, `img_mlp.2`)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.add_module("0", nn.Linear(dim, 2 * hidden, bias=False))
        self.add_module("2", nn.Linear(hidden, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "2")(swiglu(getattr(self, "0")(x)))


class SDPAProcessor:
    """Default attention: q [B, H, Sq, D], k/v [B, H, Sk, D], optional key mask [B, Sk] (True = attend)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None):
        mask = None if key_mask is None else key_mask[:, None, None, :].to(torch.bool)  # [B, 1, 1, Sk]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ExplicitSoftmaxProcessor:
    """Attention written as matmul + softmax in float32: exports to plain ONNX ops every runtime accepts."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None):
        scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # [B, H, Sq, Sk]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :].to(torch.bool), torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs.to(v.dtype), v)


_PROCESSOR: list = [SDPAProcessor()]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None):
    return _PROCESSOR[0](q, k, v, key_mask)


class use_attention_processor:
    """Context manager that swaps the attention processor (e.g. for export) and restores it."""

    def __init__(self, processor):
        self.processor = processor

    def __enter__(self):
        self.previous = _PROCESSOR[0]
        _PROCESSOR[0] = self.processor
        return self.processor

    def __exit__(self, *exc):
        _PROCESSOR[0] = self.previous
        return False


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H*D] -> [B, H, S, D]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] -> [B, S, H*D]."""
    return x.transpose(1, 2).flatten(2)
