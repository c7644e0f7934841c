"""ImageWAM FLUX.2: proprio encoder + FLUX.2 backbone (prefill) + slim action expert (Mixture-of-Transformers).

Token layout of the prefix: [text (valid tokens only) ; proprio ; image]. Trimming the padded text is exact
because padded keys are masked for every query and text positions are arange-based (DESIGN §2)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .action_expert import ActionExpert, ActionExpertConfig
from .flux2 import Flux2Backbone, Flux2Config
from edge.rope import action_rope, prefix_rope

class ImageWAMFlux2(nn.Module):
    def __init__(self, backbone: Flux2Config, expert: ActionExpertConfig, proprio_dim: int):
        super().__init__()
        if expert.heads != backbone.heads or expert.head_dim != backbone.head_dim:
            raise ValueError(
                f"action expert attention {expert.heads}x{expert.head_dim} must match the backbone "
                f"{backbone.heads}x{backbone.head_dim} (Mixture-of-Transformers shares attention)")
        if expert.layers != backbone.layers:
            raise ValueError(f"action expert depth {expert.layers} != backbone depth {backbone.layers}")
        self.backbone_cfg, self.expert_cfg, self.proprio_dim = backbone, expert, int(proprio_dim)
        self.backbone = Flux2Backbone(backbone)
        self.expert = ActionExpert(expert)
        self.proprio_encoder = nn.Linear(self.proprio_dim, backbone.context_dim)

    # --- rotary tables (host-side, float64 angles) -------------------------------------------------------
    def prefix_rope(self, context_len: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        return prefix_rope(context_len, rows, cols, self.backbone_cfg.axes_dim, self.backbone_cfg.theta)

    def action_rope(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        return action_rope(horizon, self.backbone_cfg.axes_dim, self.backbone_cfg.theta)

    # --- stages ------------------------------------------------------------------------------------------
    def pack_context(self, text: torch.Tensor, state: torch.Tensor, text_mask: torch.Tensor | None = None):
        """text [B, T, text_dim] (valid tokens, or padded with `text_mask` [B, T]), state [B, P] normalised.
        Returns (context [B, T+1, text_dim], mask [B, T+1] or None): the proprio token sits right after the
        valid text tokens, padding (if any) moves to the end, as the official `pack_proprio_after_text`."""
        token = self.proprio_encoder(state.to(self.proprio_encoder.weight.dtype))[:, None, :].to(text.dtype)  # [B, 1, D]
        if text_mask is None:
            return torch.cat([text, token], dim=1), None
        bsz, length, dim = text.shape
        mask = text_mask.to(torch.bool)
        valid = mask.sum(dim=1)  # [B]
        valid_rank = mask.long().cumsum(dim=1) - 1
        pad_rank = (~mask).long().cumsum(dim=1) - 1
        target = torch.where(mask, valid_rank, valid[:, None] + 1 + pad_rank)  # [B, T]
        out = text.new_zeros(bsz, length + 1, dim).scatter(1, target[:, :, None].expand(-1, -1, dim), text)
        out[torch.arange(bsz), valid] = token[:, 0]
        new_mask = torch.arange(length + 1, device=text.device)[None, :] <= valid[:, None]
        return out, new_mask

    def prefill(self, context, image_tokens, cos, sin, key_mask=None):
        """context [B, T, text_dim], image_tokens [B, N, 128], cos/sin [T+N, head_dim] -> keys, values
        [L, B, T+N, H*D]. `key_mask` [B, T+N] only for padded text."""
        return self.backbone.prefill(image_tokens, context, cos, sin, key_mask)

    def velocity(self, x, sigma, keys, values, cos, sin, prefix_mask=None):
        return self.expert(x, sigma, keys, values, cos, sin, prefix_mask)
