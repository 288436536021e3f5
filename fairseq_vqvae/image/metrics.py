"""Test-set metrics of a trained VQ-VAE: exact bits/dim, reconstruction MSE, codebook usage.

bits/dim = (reconstruction NLL + num_latents ln K) / (3072 ln 2), the negative ELBO with a
deterministic posterior and a uniform prior (van den Oord et al. 2017, section 4.1).
"""

import math

import torch

from ..bottleneck import em
from .model import ImageVQVAE

__all__ = ["batches", "encode_codes", "evaluate_model"]


def batches(images: torch.Tensor, batch_size: int):
    """Consecutive slices of ``images`` of at most ``batch_size`` items."""
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


@torch.no_grad()
def encode_codes(
    model: ImageVQVAE, images: torch.Tensor, batch_size: int = 250
) -> torch.Tensor:
    """Nearest-code grids of uint8 images (N, 3, H, W) -> (N, h, w, S) int64, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    codes = [
        model.bottleneck(model.encode(b.to(device))).codes.cpu()
        for b in batches(images, batch_size)
    ]
    model.train(was_training)
    return torch.cat(codes)


def _accumulate(model: ImageVQVAE, images: torch.Tensor, batch_size: int):
    """Sums over ``images`` of the NLL (nats), the squared error of the decoder mean (pixels
    scaled to [0, 1]) and the (S, K) histogram of nearest codes."""
    device = next(model.parameters()).device
    nll_sum, squared_error = 0.0, 0.0
    histogram = torch.zeros(model.config.num_slices, model.config.codebook_size)
    for batch in batches(images, batch_size):
        batch = batch.to(device)
        out = model(batch)
        nll_sum += out.nll.double().sum().item()
        mean = model.likelihood.mean(out.params)
        squared_error += ((mean - batch.float()) / 255.0).double().pow(2).sum().item()
        codes = out.vq.codes.reshape(-1, model.config.num_slices).cpu()
        for s in range(model.config.num_slices):
            histogram[s] += torch.bincount(
                codes[:, s], minlength=histogram.shape[1]
            ).float()
    return nll_sum, squared_error, histogram


@torch.no_grad()
def evaluate_model(
    model: ImageVQVAE, images: torch.Tensor, batch_size: int = 250
) -> dict:
    """Exact test metrics of ``model`` on uint8 (N, 3, 32, 32) ``images`` (eval mode).

    Returns:
        A dict of floats: ``bits_per_dim`` (uniform latent prior), ``reconstruction_bits_per_dim``
        and ``latent_bits_per_dim`` (its two parts), ``reconstruction_nll`` (nats per image),
        ``reconstruction_mse`` (of the decoder's mean, pixels scaled to [0, 1]),
        ``normalized_mse`` (that MSE over the pixel variance of ``images``),
        ``code_perplexity`` and ``codes_in_use`` (of the code histogram over all images, per
        slice) and ``ema_perplexity`` (the EM codebook's long-run usage; 0 for vqvae).
    """
    was_training = model.training
    model.eval()
    nll_sum, squared_error, histogram = _accumulate(model, images, batch_size)
    model.train(was_training)
    n, dims = len(images), images[0].numel()
    mse = squared_error / (n * dims)
    nll, latent = nll_sum / n, model.latent_nats(images.shape[-1])
    return {
        "bits_per_dim": (nll + latent) / (dims * math.log(2.0)),
        "reconstruction_bits_per_dim": nll / (dims * math.log(2.0)),
        "latent_bits_per_dim": latent / (dims * math.log(2.0)),
        "reconstruction_nll": nll,
        "reconstruction_mse": mse,
        "normalized_mse": mse / (images.float() / 255.0).var().item(),
        "code_perplexity": em.perplexity(histogram).mean().item(),
        "codes_in_use": (histogram > 0).float().sum(-1).mean().item(),
        "ema_perplexity": model.bottleneck.codebook.ema_perplexity().mean().item(),
        "num_images": n,
    }
