"""FLUX.2 image tokenizer: autoencoder encode (posterior mean), 2x2 pixel-unshuffle to 4*C channels and
BatchNorm with the autoencoder's running statistics -> one token per 16x16 px. The autoencoder itself is
diffusers' `AutoencoderKLFlux2` (the base release's `vae/` folder), reused as is."""
from __future__ import annotations

import torch
from torch import nn


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2], channel order (c, pi, pj) as FLUX.2."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2)  # [B, C, H/2, 2, W/2, 2]
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


class Flux2ImageTokenizer(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.bn_eps = float(vae.config.batch_norm_eps)

    @property
    def token_dim(self) -> int:
        return int(self.vae.bn.num_features)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [-1, 1] (H, W multiples of 16) -> tokens [B, H/16 * W/16, 4C]."""
        moments = self.vae.encoder(pixels.to(self.vae.dtype))
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        mean = moments.chunk(2, dim=1)[0]  # posterior mean [B, C, H/8, W/8]
        z = patchify(mean)
        bn = self.vae.bn
        z = (z - bn.running_mean.view(1, -1, 1, 1).to(z.dtype)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1).to(z.dtype) + self.bn_eps)
        return z.flatten(2).transpose(1, 2)  # [B, N, 4C], row-major tokens


TINY_VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=32, norm_num_groups=8,
                mid_block_add_attention=False)


def make_vae(**overrides):
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(**{**TINY_VAE, **overrides})
