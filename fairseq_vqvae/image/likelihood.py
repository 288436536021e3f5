"""Exact discrete likelihoods of 8-bit images, and the bits/dim they give.

* ``logistic_mixture``: the discretized logistic mixture of PixelCNN++ (Salimans et al. 2017,
  https://arxiv.org/abs/1701.05517, section 2.1-2.2): per pixel a mixture of M logistics whose
  green and blue means depend linearly on the pixel's red (and green) value. Each bin's mass
  is computed in closed form, so the 256^3 probabilities of a pixel sum to 1.
* ``categorical``: a 256-way softmax per sub-pixel, as tensor2tensor's image models.

bits/dim = (reconstruction NLL + latent NLL) / (3072 ln 2), all NLLs in nats per image; the
latent NLL is ``num_latents * ln K`` under a uniform prior (the KL of a deterministic posterior).
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["Likelihood", "bits_per_dim", "uniform_latent_nats"]

_HALF_BIN = 1.0 / 255.0  # half the width of a bin on the [-1, 1] scale
_MIN_LOG_SCALE = -7.0  # PixelCNN++


def bits_per_dim(
    nll_nats: torch.Tensor | float,
    latent_nats: torch.Tensor | float,
    num_dims: int = 3072,
) -> torch.Tensor | float:
    """(reconstruction NLL + latent NLL) in nats per image -> bits per sub-pixel.

    Example: NLL 6000 nats, 64 latents with K = 512 -> (6000 + 64 ln 512) / (3072 ln 2) = 3.00.
    """
    return (nll_nats + latent_nats) / (num_dims * math.log(2.0))


def uniform_latent_nats(num_latents: int, codebook_size: int) -> float:
    """NLL of any code grid under the uniform prior: ``num_latents * ln K`` nats."""
    return num_latents * math.log(codebook_size)


def _log_bin_mass(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """log P(value) of a logistic(mean, s) discretized to 256 bins on [-1, 1].

    A bin [b, a] has mass sigmoid(a) - sigmoid(b), whose log is computed exactly and stably
    as logsigmoid(a) + logsigmoid(-b) + log(1 - exp(b - a)). The end bins take the tails:
    b = -inf for value 0 and a = +inf for value 255 (the formula then reduces to
    logsigmoid(a) and logsigmoid(-b)), so the 256 masses sum to 1.
    """
    inv_scale = torch.exp(-log_scale)
    centered = x - mean
    plus = (inv_scale * (centered + _HALF_BIN)).masked_fill(value == 255, math.inf)  # a
    minus = (inv_scale * (centered - _HALF_BIN)).masked_fill(value == 0, -math.inf)  # b
    return (
        F.logsigmoid(plus)
        + F.logsigmoid(-minus)
        + torch.log(-torch.expm1(minus - plus))
    )


class Likelihood:
    """A per-image discrete likelihood over uint8 (B, 3, H, W) images.

    The decoder emits ``num_params`` channels per pixel; ``nll`` scores images, ``sample``
    draws images and ``mean`` gives a point reconstruction.

    Args:
        kind: "logistic_mixture" or "categorical".
        num_mixtures: M, mixture components; logistic_mixture only.
    """

    def __init__(self, kind: str, num_mixtures: int = 10):
        if kind not in ("logistic_mixture", "categorical"):
            raise ValueError(f"unknown likelihood {kind!r}")
        self.kind, self.num_mixtures = kind, num_mixtures
        self.num_params = 3 * 256 if kind == "categorical" else 10 * num_mixtures

    def _split(self, params: torch.Tensor):
        """(B, 10M, H, W) -> logits (B, M, H, W) and means, log-scales, coeffs (B, 3, M, H, W).

        Channel layout: [M logits | 3 x M means | 3 x M log-scales | 3 x M coefficients].
        """
        b, _, h, w = params.shape
        grouped = params.reshape(b, 10, self.num_mixtures, h, w)
        logits, means, log_scales, coeffs = grouped.split([1, 3, 3, 3], dim=1)
        return (
            logits.squeeze(1),
            means,
            log_scales.clamp_min(_MIN_LOG_SCALE),
            torch.tanh(coeffs),
        )

    def _coupled_means(self, means, coeffs, x):
        """Means of R, G, B given the pixel's red and green values ``x`` (B, 3, H, W)."""
        red, green = x[:, 0:1].unsqueeze(2), x[:, 1:2].unsqueeze(2)  # (B, 1, 1, H, W)
        mean_g = means[:, 1:2] + coeffs[:, 0:1] * red
        mean_b = means[:, 2:3] + coeffs[:, 1:2] * red + coeffs[:, 2:3] * green
        return torch.cat([means[:, 0:1], mean_g, mean_b], dim=1)

    def nll(self, params: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in nats per image, (B,) fp32."""
        params = params.float()
        if self.kind == "categorical":
            b, _, h, w = params.shape
            logits = params.reshape(b, 256, 3, h, w)
            return (
                F.cross_entropy(logits, images.long(), reduction="none")
                .flatten(1)
                .sum(1)
            )
        logits, means, log_scales, coeffs = self._split(params)
        x = images.float() / 127.5 - 1.0  # (B, 3, H, W)
        means = self._coupled_means(means, coeffs, x)
        log_mass = _log_bin_mass(x.unsqueeze(2), means, log_scales, images.unsqueeze(2))
        log_pixel = log_mass.sum(1) + F.log_softmax(logits, dim=1)  # (B, M, H, W)
        return -torch.logsumexp(log_pixel, dim=1).flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw uint8 (B, 3, H, W) images; R, then G given R, then B given R and G."""
        params = params.float()
        if self.kind == "categorical":
            b, _, h, w = params.shape
            probs = (
                params.reshape(b, 256, -1).softmax(1).transpose(1, 2).reshape(-1, 256)
            )
            draws = torch.multinomial(probs, 1, generator=generator)
            return draws.reshape(b, 3, h, w).to(torch.uint8)
        logits, means, log_scales, coeffs = self._split(params)
        gumbel = -torch.log(-torch.log(_uniform(logits, generator)))
        pick = F.one_hot((logits + gumbel).argmax(1), self.num_mixtures)  # (B, H, W, M)
        pick = pick.permute(0, 3, 1, 2).unsqueeze(1).float()  # (B, 1, M, H, W)
        x = torch.zeros_like(means[:, :, 0])  # (B, 3, H, W) on the [-1, 1] scale
        for c in range(3):
            mean = (self._coupled_means(means, coeffs, x)[:, c] * pick[:, 0]).sum(1)
            scale = (log_scales[:, c] * pick[:, 0]).sum(1).exp()
            u = _uniform(mean, generator)
            value = mean + scale * (torch.log(u) - torch.log1p(-u))  # logistic draw
            x[:, c] = (torch.round((value + 1.0) * 127.5).clamp(0, 255)) / 127.5 - 1.0
        return torch.round((x + 1.0) * 127.5).to(torch.uint8)

    @torch.no_grad()
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Point reconstruction in [0, 255], fp32 (B, 3, H, W): mixture-weighted means."""
        params = params.float()
        if self.kind == "categorical":
            b, _, h, w = params.shape
            probs = params.reshape(b, 256, 3, h, w).softmax(1)
            levels = torch.arange(256.0, device=params.device).view(1, 256, 1, 1, 1)
            return (probs * levels).sum(1)
        logits, means, _, coeffs = self._split(params)
        weights = logits.softmax(1).unsqueeze(1)  # (B, 1, M, H, W)
        x = torch.zeros_like(means[:, :, 0])
        for c in range(3):
            x[:, c] = (self._coupled_means(means, coeffs, x)[:, c] * weights[:, 0]).sum(
                1
            )
            x[:, c] = x[:, c].clamp(-1.0, 1.0)
        return (x + 1.0) * 127.5


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(like.shape, generator=generator, device=like.device)
    return u.clamp(1e-5, 1.0 - 1e-5)
