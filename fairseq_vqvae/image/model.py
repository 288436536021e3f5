"""Convolutional VQ-VAE for 32x32 images with the shared VQ / hard-EM / soft-EM bottleneck.

Architecture of van den Oord et al. 2017 (https://arxiv.org/abs/1711.00937), section 4.1:
stride-2 4x4 convs and 3x3/1x1 residual blocks down to a latent grid, the mirror image up.
Bottleneck: Roy et al. 2018 (https://arxiv.org/abs/1805.11063), sections 2-3.
"""

from typing import NamedTuple

import torch
from torch import nn

from ..bottleneck import VQBottleneck, VQOutput
from .config import ImageVQVAEConfig
from .likelihood import Likelihood, bits_per_dim, uniform_latent_nats

__all__ = ["Decoder", "Encoder", "ImageVQVAE", "ImageVQVAEOutput", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))) (van den Oord et al. 2017)."""

    def __init__(self, channels: int, residual_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, residual_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(residual_channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Sequential):
    """(B, 3, H, W) in [-1, 1] -> (B, code_dim, H / 2^n, W / 2^n).

    NB: with ``latent_norm="batch"`` the output is standardised per channel (BatchNorm, no
    affine). Without it, at initialisation every latent of a batch lies near one point and
    picks the same few codes; the EMA M-step then leaves all other codes with a count of
    about epsilon and a huge norm, so they are never used (index collapse at update 1).
    In eval mode BatchNorm uses its running statistics.
    """

    def __init__(self, config: ImageVQVAEConfig):
        c = config.hidden_channels
        layers: list[nn.Module] = []
        for i in range(config.num_downsamples):
            layers += [
                nn.Conv2d(3 if i == 0 else c, c, 4, stride=2, padding=1),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(c, c, 3, padding=1))
        layers += [
            ResidualBlock(c, config.residual_channels)
            for _ in range(config.num_residual_blocks)
        ]
        layers += [nn.ReLU(), nn.Conv2d(c, config.code_dim, 1)]
        if config.latent_norm == "batch":
            layers.append(nn.BatchNorm2d(config.code_dim, affine=False))
        super().__init__(*layers)


class Decoder(nn.Sequential):
    """(B, code_dim, h, w) -> (B, num_params, h * 2^n, w * 2^n) likelihood parameters."""

    def __init__(self, config: ImageVQVAEConfig, num_params: int):
        c = config.hidden_channels
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim, c, 3, padding=1)]
        layers += [
            ResidualBlock(c, config.residual_channels)
            for _ in range(config.num_residual_blocks)
        ]
        for _ in range(config.num_downsamples):
            layers += [nn.ReLU(), nn.ConvTranspose2d(c, c, 4, stride=2, padding=1)]
        layers += [nn.ReLU(), nn.Conv2d(c, num_params, 1)]
        super().__init__(*layers)


class ImageVQVAEOutput(NamedTuple):
    """What :meth:`ImageVQVAE.forward` returns (losses are scalars, per-image terms (B,))."""

    loss: torch.Tensor  # recon_loss + commit_loss + codebook_loss, what to minimise
    recon_loss: torch.Tensor  # mean NLL in nats per sub-pixel
    nll: torch.Tensor  # (B,) reconstruction NLL in nats per image
    params: torch.Tensor  # (B, num_params, H, W) likelihood parameters
    vq: VQOutput  # the bottleneck's output, channels last: codes (B, h, w, S)


class ImageVQVAE(nn.Module):
    """encode -> quantize -> decode -> score, for uint8 (B, 3, 32, 32) images.

    Example::

        model = ImageVQVAE(ImageVQVAEConfig(bottleneck="soft_em", codebook_size=8))
        out = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
        out.loss.backward(); optimizer.step(); model.bottleneck.step_(out.vq.em_stats)
    """

    def __init__(self, config: ImageVQVAEConfig):
        super().__init__()
        self.config = config
        self.likelihood = Likelihood(config.likelihood, config.num_mixtures)
        self.encoder = Encoder(config)
        self.bottleneck = VQBottleneck(config.bottleneck_config())
        self.decoder = Decoder(config, self.likelihood.num_params)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> continuous latents (B, h, w, code_dim), channels last."""
        x = images.float() / 127.5 - 1.0
        return self.encoder(x).permute(0, 2, 3, 1)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, h, w, code_dim) -> likelihood parameters (B, num_params, H, W)."""
        return self.decoder(quantized.permute(0, 3, 1, 2))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code ids (B, h, w, S) int64 -> likelihood parameters (B, num_params, H, W)."""
        return self.decode(self.bottleneck.lookup(codes))

    def forward(self, images: torch.Tensor) -> ImageVQVAEOutput:
        latents = self.encode(images)  # (B, h, w, D)
        vq = self.bottleneck(latents)
        params = self.decode(vq.quantized)
        nll = self.likelihood.nll(params, images)  # (B,)
        recon_loss = nll.mean() / images[0].numel()
        loss = recon_loss + vq.commit_loss + vq.codebook_loss
        return ImageVQVAEOutput(loss, recon_loss, nll, params, vq)

    def num_latents(self, image_size: int = 32) -> int:
        """Discrete latents per image: grid positions times slices (64 for 32x32, n=2)."""
        side = image_size // 2**self.config.num_downsamples
        return side * side * self.config.num_slices

    def latent_nats(self, image_size: int = 32) -> float:
        """The latents' KL to the uniform prior: ``num_latents * ln K`` nats per image."""
        return uniform_latent_nats(
            self.num_latents(image_size), self.config.codebook_size
        )

    def bits_per_dim(self, nll: torch.Tensor, image_size: int = 32) -> torch.Tensor:
        """Per-image bits/dim with the uniform latent prior, (B,) from ``nll`` (B,)."""
        return bits_per_dim(nll, self.latent_nats(image_size), 3 * image_size**2)
