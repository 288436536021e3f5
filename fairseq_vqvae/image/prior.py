"""An autoregressive prior over the VQ-VAE's latent grid: a small causal transformer.

The codes (B, h, w, S) are read in raster order (row by row, slices innermost) as a sequence
of L = h * w * S tokens; p(z) = prod_t p(z_t | z_<t). With it, bits/dim becomes
(reconstruction NLL + prior NLL of the codes) / (3072 ln 2), replacing the uniform L ln K.
van den Oord et al. 2017 (https://arxiv.org/abs/1711.00937) use a PixelCNN for this role.
"""

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import PriorConfig

__all__ = ["LatentPrior", "train_prior"]

logger = logging.getLogger(__name__)


class LatentPrior(nn.Module):
    """Causal transformer over code sequences of length ``length`` with ``codebook_size`` ids.

    Args:
        codebook_size: K; token K is the start-of-sequence token.
        length: L, codes per image.
        config: layers, width, heads, dropout.
    """

    def __init__(self, codebook_size: int, length: int, config: PriorConfig):
        super().__init__()
        self.codebook_size, self.length = codebook_size, length
        self.embed = nn.Embedding(codebook_size + 1, config.prior_dim)
        self.position = nn.Parameter(torch.randn(length, config.prior_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.prior_dim,
            config.prior_heads,
            4 * config.prior_dim,
            config.prior_dropout,
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(
            layer, config.prior_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(config.prior_dim)
        self.head = nn.Linear(config.prior_dim, codebook_size)
        mask = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Next-code logits (B, T, K) for the prefix ``codes`` (B, T), T <= L.

        Position t predicts code t from codes 0..t-1 (position 0 sees only the start token).
        """
        t = codes.shape[1]
        start = codes.new_full((codes.shape[0], 1), self.codebook_size)
        tokens = torch.cat([start, codes], dim=1)[:, :t]  # shifted right by one
        h = self.embed(tokens) + self.position[:t]  # (B, T, C)
        h = self.layers(h, mask=self.causal_mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of whole code grids in nats, (B, ...) -> (B,)."""
        flat = codes.reshape(codes.shape[0], -1)  # (B, L)
        logits = self.logits(flat)
        return F.cross_entropy(logits.transpose(1, 2), flat, reduction="none").sum(1)

    @torch.no_grad()
    def sample(
        self, count: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``count`` code sequences (count, L) int64, one token at a time."""
        device = self.position.device
        codes = torch.zeros(count, 0, dtype=torch.long, device=device)
        for _ in range(self.length):
            step = torch.cat([codes, codes.new_zeros(count, 1)], dim=1)
            probs = self.logits(step)[:, -1].float().softmax(-1)
            draw = torch.multinomial(probs, 1, generator=generator)
            codes = torch.cat([codes, draw], dim=1)
        return codes


def _cosine_lr(step: int, total: int, peak: float) -> float:
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train_prior(
    prior: LatentPrior,
    codes: torch.Tensor,
    config: PriorConfig,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Fit ``prior`` to code grids (N, ...) with Adam and a cosine schedule.

    Returns:
        The training loss (nats per code) of every update.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(prior.parameters(), lr=config.prior_lr)
    flat = codes.reshape(codes.shape[0], -1)
    losses = []
    prior.train()
    for step in tqdm(range(config.prior_updates), desc="prior", disable=not progress):
        index = torch.randint(
            flat.shape[0], (config.prior_batch_size,), generator=generator
        )
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, config.prior_updates, config.prior_lr)
        loss = prior.nll(flat[index.to(flat.device)]).mean() / flat.shape[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            logger.info("prior update %d: %.4f nats/code", step + 1, loss.item())
    prior.eval()
    return losses
