"""Ovis-U1's visual tokenizer (official names under `visual_tokenizer.`): a native-resolution AIMv2 tower
(`backbone.preprocessor`, `backbone.trunk`) and the probabilistic token head (`head`).

The tower is AIMv2 (conv patch embedding + RMSNorm, pre-norm blocks with RMSNorm and SwiGLU FFN, no biases) made
native-resolution as in Qwen2.5-VL: patches arrive flattened in 2x2-merge order, 2D rotary embeddings (rotate-half)
on every block, optional window attention outside `fullatt_block_indexes`, an optionally interpolated learned
position table. Features are the last block's output (before `post_trunk_norm`, as the official `encode` reads
`hidden_states[-1]`), 2x2-merged -> `head` (Linear + LayerNorm) -> softmax over the visual vocabulary.

With rotary embeddings off and full attention, a block is exactly transformers' `Aimv2EncoderLayer` (the tests
prove it on shared weights); the window/rotary layout is Qwen2.5-VL's (tests compare with transformers' too)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.model_configs import AIMv2Config, VisualTokenizerConfig

from ..layers import attention


class AIMv2RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class PatchEmbed(nn.Module):
    def __init__(self, cfg: AIMv2Config):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Conv2d(cfg.num_channels, cfg.hidden, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.norm = AIMv2RMSNorm(cfg.hidden, cfg.rms_eps)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        p = self.cfg.patch_size
        x = patches.reshape(-1, self.cfg.num_channels, p, p)  # [N, C, p, p]
        return self.norm(self.proj(x).reshape(-1, self.cfg.hidden))  # [N, hidden]


class Preprocessor(nn.Module):
    def __init__(self, cfg: AIMv2Config):
        super().__init__()
        self.cfg = cfg
        self.patchifier = PatchEmbed(cfg)
        if cfg.preserve_original_pe:
            self.pos_embed = nn.Parameter(torch.zeros(1, (cfg.image_size // cfg.patch_size) ** 2, cfg.hidden))

    def position_table(self, rows: int, cols: int) -> torch.Tensor:
        """Learned table resized to the patch grid, in 2x2-merge order: [rows*cols, hidden]."""
        cfg, hs = self.cfg, self.cfg.hidden_stride
        if cfg.interpolate_pe_method == "one_dim":
            pe = F.interpolate(self.pos_embed.transpose(1, 2), size=rows * cols, mode="linear", align_corners=False)
            pe = pe.transpose(1, 2)  # [1, rows*cols, hidden]
        else:
            side = int(round(self.pos_embed.shape[1] ** 0.5))
            grid = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, hidden, side, side]
            pe = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
            pe = pe.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        pe = pe.reshape(rows // hs, hs, cols // hs, hs, -1).permute(0, 2, 1, 3, 4)  # merge-block order
        return pe.reshape(rows * cols, -1)

    def forward(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        x = self.patchifier(patches)
        if self.cfg.preserve_original_pe:
            x = x + self.position_table(rows, cols).to(x.dtype)
        return x


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class TowerAttention(nn.Module):
    def __init__(self, cfg: AIMv2Config):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.use_bias)

    def forward(self, x, cos=None, sin=None, mask=None):
        """x [N, hidden]; cos/sin [N, head_dim] (rotate-half layout) or None; mask [N, N] bool or None."""
        n = x.shape[0]
        q, k, v = self.qkv(x).reshape(n, 3, self.heads, -1).permute(1, 2, 0, 3)  # each [H, N, D]
        if cos is not None:
            q = (q.float() * cos + rotate_half(q.float()) * sin).to(v.dtype)
            k = (k.float() * cos + rotate_half(k.float()) * sin).to(v.dtype)
        q, k, v = q[None], k[None], v[None]  # [1, H, N, D]
        out = attention(q, k, v) if mask is None else F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out[0].transpose(0, 1).reshape(n, -1))  # [N, hidden]


class SwiGLUFFN(nn.Module):
    def __init__(self, cfg: AIMv2Config):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate, bias=cfg.use_bias)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden, bias=cfg.use_bias)
        self.fc3 = nn.Linear(cfg.hidden, cfg.intermediate, bias=cfg.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class AIMv2Block(nn.Module):
    def __init__(self, cfg: AIMv2Config):
        super().__init__()
        self.attn = TowerAttention(cfg)
        self.norm_1 = AIMv2RMSNorm(cfg.hidden, cfg.rms_eps)
        self.mlp = SwiGLUFFN(cfg)
        self.norm_2 = AIMv2RMSNorm(cfg.hidden, cfg.rms_eps)

    def forward(self, x, cos=None, sin=None, mask=None):
        x = x + self.attn(self.norm_1(x), cos, sin, mask)
        return x + self.mlp(self.norm_2(x))


@lru_cache(maxsize=16)
def rotary_tables(rows: int, cols: int, head_dim: int, hidden_stride: int, theta: float = 10000.0):
    """2D rotary tables of Qwen2.5-VL's vision tower for a rows x cols patch grid in merge-block order:
    (cos, sin) [rows*cols, head_dim] float32 (numpy float64 angles)."""
    hs = hidden_stride
    quarter = head_dim // 4
    inv_freq = 1.0 / theta ** (np.arange(0, 2 * quarter, 2, dtype=np.float64) / (2 * quarter))  # [quarter]
    h = np.broadcast_to(np.arange(rows)[:, None], (rows, cols)).reshape(rows // hs, hs, cols // hs, hs)
    w = np.broadcast_to(np.arange(cols)[None, :], (rows, cols)).reshape(rows // hs, hs, cols // hs, hs)
    h, w = h.transpose(0, 2, 1, 3).reshape(-1), w.transpose(0, 2, 1, 3).reshape(-1)  # merge-block order
    freqs = np.concatenate([np.outer(h, inv_freq), np.outer(w, inv_freq)], axis=1)  # [N, head_dim/2]
    emb = np.concatenate([freqs, freqs], axis=1)  # [N, head_dim]
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


@lru_cache(maxsize=16)
def window_mask(rows: int, cols: int, window_size: int, patch_size: int, hidden_stride: int) -> np.ndarray:
    """[N, N] bool: patches of the same window (windows of window_size px over the merged grid, as Qwen2.5-VL's
    `get_window_index`, which reorders tokens by window; attention is permutation-equivariant, so a mask in the
    natural order is the same computation)."""
    hs = hidden_stride
    per_window = window_size // hs // patch_size  # merged units per window side
    mr, mc = np.meshgrid(np.arange(rows // hs), np.arange(cols // hs), indexing="ij")
    n_win_cols = -(-(cols // hs) // per_window)
    win = ((mr // per_window) * n_win_cols + mc // per_window).reshape(-1)  # per merged unit
    win = np.repeat(win, hs * hs)  # per patch, merge-block order
    return win[:, None] == win[None, :]


class AIMv2Tower(nn.Module):
    def __init__(self, cfg: AIMv2Config):
        super().__init__()
        self.cfg = cfg
        self.preprocessor = Preprocessor(cfg)
        self.trunk = nn.Module()
        self.trunk.blocks = nn.ModuleList(AIMv2Block(cfg) for _ in range(cfg.layers))
        self.trunk.post_trunk_norm = AIMv2RMSNorm(cfg.hidden, cfg.rms_eps)  # loaded, unused by Ovis features

    def forward(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """patches [rows*cols, C*p*p] in merge-block order -> last block output [rows*cols, hidden]."""
        cfg = self.cfg
        x = self.preprocessor(patches, rows, cols)
        cos = sin = None
        if not cfg.disable_rope:
            c, s = rotary_tables(rows, cols, cfg.head_dim, cfg.hidden_stride)
            cos, sin = torch.from_numpy(c).to(x.device), torch.from_numpy(s).to(x.device)
        win = None
        if cfg.fullatt_block_indexes is not None:
            win = torch.from_numpy(window_mask(rows, cols, cfg.window_size, cfg.patch_size, cfg.hidden_stride)).to(x.device)
        for i, block in enumerate(self.trunk.blocks):
            x = block(x, cos, sin, win if cfg.windowed(i) else None)
        return x


class VisualTokenizer(nn.Module):
    def __init__(self, cfg: VisualTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        self.backbone = AIMv2Tower(b)
        head_dim = cfg.vocab_size - cfg.indicators
        self.head = nn.Sequential(nn.Linear(b.hidden * b.hidden_stride ** 2, head_dim, bias=False), nn.LayerNorm(head_dim))

    def forward(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """-> visual token probabilities [rows*cols/4, vocab_size - indicators] (softmax in float32)."""
        feats = self.backbone(patches, rows, cols)
        hs2 = self.cfg.backbone.hidden_stride ** 2
        feats = feats.reshape(feats.shape[0] // hs2, -1)  # [N/4, 4*hidden]: each merge block's 4 patches side by side
        logits = self.head(feats)
        return torch.softmax(logits.float(), dim=-1).to(logits.dtype)
