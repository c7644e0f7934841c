"""ImageWAM Ovis-U1: proprio encoder + Yak backbone (prefill) + full-width Yak action expert.

Prefix token layout: [VLM hidden states of (prompt + image) ; proprio] -> token refiner -> [text ; reference image].
The official Ovis-U1 path appends the proprio token after the (unpadded, batch 1) VLM context, so it passes
through the refiner with the text, exactly as here."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge.ovis_rope import action_rope, prefix_rope

from .action_expert import YakActionExpert, YakExpertConfig
from .yak import YakConfig, YakTransformer


class ImageWAMOvisU1(nn.Module):
    def __init__(self, backbone: YakConfig, expert: YakExpertConfig, proprio_dim: int):
        super().__init__()
        if expert.heads != backbone.heads or expert.head_dim != backbone.head_dim:
            raise ValueError(f"action expert attention {expert.heads}x{expert.head_dim} must match the backbone "
                             f"{backbone.heads}x{backbone.head_dim} (Mixture-of-Transformers shares attention)")
        if (expert.depth_double, expert.depth_single) != (backbone.depth_double, backbone.depth_single):
            raise ValueError(f"action expert depth {expert.depth_double}+{expert.depth_single} != backbone depth "
                             f"{backbone.depth_double}+{backbone.depth_single}")
        self.backbone_cfg, self.expert_cfg, self.proprio_dim = backbone, expert, int(proprio_dim)
        self.backbone = YakTransformer(backbone)
        self.expert = YakActionExpert(expert)
        self.proprio_encoder = nn.Linear(self.proprio_dim, backbone.context_dim)

    def prefix_rope(self, context_len: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        return prefix_rope(context_len, rows, cols, self.backbone_cfg.axes_dim, self.backbone_cfg.theta)

    def action_rope(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        return action_rope(horizon, self.backbone_cfg.axes_dim, self.backbone_cfg.theta)

    def pack_context(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """context [B, T, 4096] (VLM hidden states), state [B, P] normalised -> [B, T+1, 4096]."""
        token = self.proprio_encoder(state.to(self.proprio_encoder.weight.dtype))[:, None, :]  # [B, 1, 4096]
        return torch.cat([context, token.to(context.dtype)], dim=1)

    def prefill(self, context, image_tokens, cos, sin):
        """context [B, T, 4096] (proprio already packed), image_tokens [B, N, 16], cos/sin [T+N, head_dim] ->
        (keys, values [L, B, T+N, H*D], image_keys, image_values [D, B, N, H*D])."""
        return self.backbone.prefill(image_tokens, context, cos, sin)

    def velocity(self, x, sigma, keys, values, image_keys, image_values, cos, sin, prefix_mask=None):
        return self.expert(x, sigma, keys, values, image_keys, image_values, cos, sin, prefix_mask)
