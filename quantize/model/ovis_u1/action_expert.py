"""The full-width Ovis-U1 action expert (official `ActionDiTYak` names): a Yak-shaped transformer (hidden 1536,
6 double + 12 single blocks) over the action tokens. Mixture-of-Transformers as the official `mot.py` does for
`block_protocol == "yak"`: in double block i the action queries attend to [joint prefix K/V of backbone layer i ;
action K/V] through `img_attn` and to [image self-attention K/V of backbone layer i ; action self K/V] through
`img_self_attn`; in single block j to [prefix K/V of backbone layer D+j ; action K/V]. The prefix never sees
actions. The double blocks keep their (unused) text stream parameters, as the official module does."""
from __future__ import annotations

from torch import nn

from edge.model_configs import YakExpertConfig

from ..action_expert import mixed_attention
from ..layers import MLPEmbedder, timestep_embedding
from .yak import DoubleStreamXBlock, LastLayer, SingleStreamBlock


class YakActionExpert(nn.Module):
    def __init__(self, cfg: YakExpertConfig):
        super().__init__()
        self.cfg = cfg
        block_cfg = cfg.block_config()
        self.action_encoder = nn.Linear(cfg.action_dim, cfg.hidden)
        self.time_in = MLPEmbedder(256, cfg.hidden, bias=True)
        self.double_blocks = nn.ModuleList(DoubleStreamXBlock(block_cfg) for _ in range(cfg.depth_double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(block_cfg) for _ in range(cfg.depth_single))
        self.head = LastLayer(cfg.hidden, cfg.action_dim)

    def forward(self, x, sigma, keys, values, image_keys, image_values, cos, sin, prefix_mask=None):
        """x [B, A, action_dim], sigma [B] in [0, 1], keys/values [L, B, S, H*D] and image_keys/values
        [D, B, N, H*D] from the prefill, cos/sin [A, head_dim] for the action ids (2, i, 0) -> velocity
        [B, A, action_dim]. `prefix_mask` [B, S] only when the prefix holds padded text."""
        dtype = self.action_encoder.weight.dtype
        h = self.action_encoder(x.to(dtype))
        vec = self.time_in(timestep_embedding(sigma, 256).to(dtype))
        heads = self.cfg.heads
        for i, block in enumerate(self.double_blocks):
            mods = block.img_mod(vec)
            (q, k, v), (sq, sk, sv) = block.image_qkv(h, mods, cos, sin)
            joint = mixed_attention(q, k, v, keys[i], values[i], heads, prefix_mask)
            self_out = mixed_attention(sq, sk, sv, image_keys[i], image_values[i], heads)  # image tokens are never padded
            h = block.image_post(h, mods, joint, self_out)
        offset = len(self.double_blocks)
        for j, block in enumerate(self.single_blocks):
            q, k, v, mlp, gate = block.qkv(h, vec, cos, sin)
            h = block.post(h, mixed_attention(q, k, v, keys[offset + j], values[offset + j], heads, prefix_mask), mlp, gate)
        return self.head(h, vec)
