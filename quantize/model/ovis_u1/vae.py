"""Ovis-U1 image tokenizer: the SDXL-style 4-channel autoencoder (diffusers `AutoencoderKL`, the base release's
`visual_generator.vae`), latents scaled by `scaling_factor` (0.13025) after subtracting `shift_factor` (none for
Ovis-U1), then 2x2-packed: one 16-channel token per 16x16 px.

The official training/inference code draws a posterior *sample* (`latent_dist.sample()`); a control policy needs
a deterministic step, so this uses the posterior mean (the sample's expectation). The difference is the VAE's
posterior noise (std exp(logvar/2), tiny for a trained SDXL VAE)."""
from __future__ import annotations

import torch
from torch import nn

from edge.model_configs import OVIS_U1_VAE, OVIS_U1_VAE_SCALING

from ..vision import patchify

SCALING_FACTOR = OVIS_U1_VAE_SCALING


class OvisImageTokenizer(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor if vae.config.scaling_factor is not None else 1.0)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    @property
    def token_dim(self) -> int:
        return 4 * int(self.vae.config.latent_channels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [-1, 1] (H, W multiples of 16) -> tokens [B, H/16 * W/16, 4C]."""
        moments = self.vae.encoder(pixels.to(self.vae.dtype))
        if getattr(self.vae, "quant_conv", None) is not None:
            moments = self.vae.quant_conv(moments)
        mean = moments.chunk(2, dim=1)[0]  # posterior mean [B, C, H/8, W/8]
        z = (mean - self.shift) * self.scaling
        return patchify(z).flatten(2).transpose(1, 2)  # [B, N, 4C], channel order (c, ph, pw), row-major tokens


SDXL_VAE = OVIS_U1_VAE
TINY_VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                scaling_factor=SCALING_FACTOR, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)


def make_vae(**overrides):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**TINY_VAE, **overrides})
