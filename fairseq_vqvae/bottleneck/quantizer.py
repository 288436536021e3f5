"""VQBottleneck: quantize vectors with VQ-VAE, hard EM (EMA K-means) or Monte-Carlo soft EM.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063): sections 2.1 (VQ-VAE, straight-through,
commitment loss), 2.2 (hard EM = EMA K-means), 3.2 (soft EM with m samples, eqs. 11-12).
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import em
from .codebook import Codebook
from .restarts import INITS

__all__ = [
    "BOTTLENECKS",
    "BottleneckConfig",
    "EMStatistics",
    "VQOutput",
    "VQBottleneck",
]

BOTTLENECKS = ("vqvae", "hard_em", "soft_em")


@dataclass
class BottleneckConfig:
    """Options of :class:`VQBottleneck` (defaults: the paper's WMT settings)."""

    bottleneck: str = "soft_em"  # one of BOTTLENECKS
    codebook_size: int = 4096  # K per slice; paper: 2^12
    code_dim: int = (
        512  # dimension of the quantized vector (all slices together); paper: 512
    )
    input_dim: int | None = (
        None  # dimension of the input; None = code_dim (no projection)
    )
    num_slices: int = (
        1  # n_d of decomposed VQ (Kaiser et al. 2018); 1 = plain VQ (paper)
    )
    decay: float = 0.999  # EMA decay; paper section 2.2
    epsilon: float = 1e-5  # Laplace smoothing; tensor2tensor
    commitment_weight: float = 0.25  # beta; paper section 2.1
    num_samples: int = (
        10  # m for soft_em; paper Table 1 (10 with distillation, 5 without)
    )
    temperature: float = 1.0  # soft_em sampling temperature; paper: 1 (no temperature)
    dead_code_threshold: float = 0.0  # restart codes with EMA count below this; 0 = off
    restart_grace: int = (
        0  # M-steps after a restart before a code may be restarted again
    )
    codebook_init: str = "uniform"  # one of restarts.INITS; uniform = the paper's code

    def __post_init__(self):
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(
                f"bottleneck must be one of {BOTTLENECKS}, got {self.bottleneck!r}"
            )
        if self.code_dim % self.num_slices != 0:
            raise ValueError(
                f"code_dim ({self.code_dim}) must be divisible by num_slices ({self.num_slices})"
            )
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.commitment_weight < 0:
            raise ValueError(
                f"commitment_weight must be >= 0, got {self.commitment_weight}"
            )
        if self.dead_code_threshold < 0:
            raise ValueError("dead_code_threshold must be >= 0 (0 disables restarts)")
        if self.restart_grace < 0:
            raise ValueError("restart_grace must be >= 0 (0: no grace period)")
        if self.codebook_init not in INITS:
            raise ValueError(
                f"codebook_init must be one of {', '.join(INITS)}, got {self.codebook_init!r}"
            )


class EMStatistics(NamedTuple):
    """One micro-batch's sufficient statistics, to hand to :meth:`VQBottleneck.accumulate_`."""

    counts: torch.Tensor  # (S, K) sum of responsibilities
    sums: torch.Tensor  # (S, K, D/S) responsibility-weighted sums of inputs
    candidates: (
        torch.Tensor
    )  # (N, S, D/S) unmasked inputs (dead-code restart candidates)


class VQOutput(NamedTuple):
    """What :meth:`VQBottleneck.forward` returns.

    ``quantized`` carries the straight-through gradient to the input; ``commit_loss`` is
    beta * ||x - sg(q)||^2 (mean over unmasked elements); ``codebook_loss`` is
    ||sg(x) - q||^2 for ``vqvae`` and 0 for the EM variants. ``soft_targets`` are the
    responsibilities (one-hot for hard assignments, averaged sample one-hots for soft EM),
    the latent predictor's targets. ``em_stats`` is None in eval mode and for ``vqvae``
    (except before its data initialisation, which needs the vectors).
    """

    quantized: torch.Tensor  # (..., input_dim)
    codes: torch.Tensor  # (..., S) int64; for soft_em the nearest code
    commit_loss: torch.Tensor  # scalar
    codebook_loss: torch.Tensor  # scalar
    soft_targets: torch.Tensor  # (..., S, K)
    em_stats: EMStatistics | None
    stats: dict  # code_perplexity, codes_in_use (this batch), ema_perplexity (long-run)


class VQBottleneck(nn.Module):
    """Discrete bottleneck selected by ``config.bottleneck``.

    * ``vqvae``: nearest code, straight-through, codebook loss + commitment loss.
    * ``hard_em``: nearest code, EMA K-means codebook (buffers), commitment loss only.
    * ``soft_em``: in training, m samples from softmax(-||x - e_k||^2 / T); the decoder gets
      the mean of the sampled codes (straight-through); EMA with averaged one-hots. In eval
      mode it is deterministic: the nearest code, like the other variants.

    ``forward`` never changes state. To train the EM variants, after each micro-batch whose
    gradient counts call ``accumulate_(out.em_stats)``, and once per optimizer update call
    ``update_()`` (on every worker). ``step_(out.em_stats)`` does both for plain loops.

    Example::

        vq = VQBottleneck(BottleneckConfig(bottleneck="hard_em", codebook_size=8, code_dim=4))
        out = vq(torch.randn(2, 5, 4), padding_mask=torch.zeros(2, 5, dtype=torch.bool))
        out.quantized.shape, out.codes.shape  # (2, 5, 4), (2, 5, 1)
    """

    def __init__(self, config: BottleneckConfig):
        super().__init__()
        self.config = config
        input_dim = config.input_dim or config.code_dim
        self.slice_dim = config.code_dim // config.num_slices
        if input_dim != config.code_dim:
            self.project_in = nn.Linear(input_dim, config.code_dim)
            self.project_out = nn.Linear(config.code_dim, input_dim)
        else:
            self.project_in = self.project_out = None
        self.codebook = Codebook(
            config.num_slices,
            config.codebook_size,
            self.slice_dim,
            ema=config.bottleneck != "vqvae",
            decay=config.decay,
            epsilon=config.epsilon,
            dead_code_threshold=config.dead_code_threshold,
            init=config.codebook_init,
            restart_grace=config.restart_grace,
        )

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> VQOutput:
        """Quantize ``x`` (..., input_dim); ``padding_mask`` (...) is True at padding."""
        if torch.is_autocast_enabled(x.device.type):
            # Under torch.autocast (--bf16-autocast) distances, E-step and EM statistics must
            # stay fp32: bf16 distances would reassign codes at random between close centroids.
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float(), padding_mask)
        lead = x.shape[:-1]
        h = self.project_in(x) if self.project_in is not None else x
        flat = h.reshape(-1, self.config.num_slices, self.slice_dim)  # (N, S, D/S)
        keep = _keep_mask(padding_mask, lead, x.device)  # (N,) bool
        distances = self.codebook.distances(flat)  # (N, S, K) fp32
        codes = em.hard_assignments(distances)  # (N, S)
        if self.training and self.config.bottleneck == "soft_em":
            responsibilities, _ = em.sample_responsibilities(
                distances, self.config.num_samples, self.config.temperature
            )
            quantized = self.codebook.mix(responsibilities)
        else:
            responsibilities = F.one_hot(codes, self.config.codebook_size).float()
            quantized = self.codebook.lookup(codes)
        quantized = quantized.to(flat.dtype)  # (N, S, D/S)
        commit_loss, codebook_loss = self._losses(flat, quantized, keep)
        # Forward value exactly q (bit-equal to lookup(codes)), gradient the identity to x.
        straight_through = quantized.detach() + (flat - flat.detach())
        out = straight_through.reshape(*lead, self.config.code_dim)
        if self.project_out is not None:
            out = self.project_out(out)
        em_stats = self._em_statistics(flat, responsibilities, keep)
        batch_counts = responsibilities[keep].sum(0)  # (S, K)
        return VQOutput(
            quantized=out,
            codes=codes.reshape(*lead, self.config.num_slices),
            commit_loss=commit_loss,
            codebook_loss=codebook_loss,
            soft_targets=responsibilities.reshape(*lead, *responsibilities.shape[1:]),
            em_stats=em_stats,
            stats=self._usage(batch_counts),
        )

    def _losses(self, flat, quantized, keep) -> tuple[torch.Tensor, torch.Tensor]:
        zero = flat.new_zeros(())
        if not keep.any():
            return zero, zero
        x, q = flat[keep].float(), quantized[keep].float()
        commit = self.config.commitment_weight * F.mse_loss(x, q.detach())
        if self.config.bottleneck != "vqvae":
            return commit, zero
        return commit, F.mse_loss(x.detach(), q)

    def _em_statistics(self, flat, responsibilities, keep) -> EMStatistics | None:
        if not self.training:
            return None
        x = flat[keep].detach()
        if self.config.bottleneck == "vqvae":
            if not self.codebook.awaits_data:
                return None
            # A gradient-trained codebook needs only the vectors, for its data initialisation.
            counts = responsibilities.new_zeros(responsibilities.shape[1:])
            return EMStatistics(
                counts, counts.new_zeros((*counts.shape, x.shape[-1])), x
            )
        counts, sums = em.em_statistics(x, responsibilities[keep])
        return EMStatistics(counts, sums, x)

    @torch.no_grad()
    def _usage(self, batch_counts: torch.Tensor) -> dict:
        """Per-slice usage averaged over slices, as python-free 0-dim tensors."""
        return {
            "code_perplexity": em.perplexity(batch_counts).mean(),
            "codes_in_use": (batch_counts > 0).float().sum(-1).mean(),
            "ema_perplexity": self.codebook.ema_perplexity()
            .mean()
            .to(batch_counts.device),
        }

    @torch.no_grad()
    def accumulate_(self, em_stats: EMStatistics | None) -> None:
        """Add one micro-batch's statistics; no-op for ``vqvae`` or None (eval mode)."""
        if em_stats is not None:
            self.codebook.accumulate_(
                em_stats.counts, em_stats.sums, em_stats.candidates
            )

    @torch.no_grad()
    def update_(self, process_group=None) -> None:
        """One M-step from everything accumulated since the last call (a collective)."""
        self.codebook.update_(process_group)

    def step_(self, em_stats: EMStatistics | None, process_group=None) -> None:
        """``accumulate_`` then ``update_``: one update per batch, for plain training loops."""
        self.accumulate_(em_stats)
        self.update_(process_group)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Output vectors for code ids (..., S) -> (..., input_dim), as ``quantized`` in eval."""
        out = self.codebook.lookup(codes).reshape(
            *codes.shape[:-1], self.config.code_dim
        )
        if self.project_out is not None:
            out = self.project_out(out.to(self.project_out.weight.dtype))
        return out

    def prior_commitment(
        self,
        x: torch.Tensor,
        prior_logits: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Commitment of ``x`` (..., input_dim) to the code vector a prior expects (beyond the
        paper): mean over real vectors and dimensions of ``||h - sum_k p_k e_k||^2``, with
        ``h`` the (projected) vectors as quantized, ``p = softmax(prior_logits)`` (..., S, K)
        and the codes ``e``; fp32, gradient to ``x`` only. The commitment loss pulls each
        latent to its nearest code; this pulls it to the codes its prior (the latent
        predictor) finds likely, which makes the codes easier to predict."""
        lead = x.shape[:-1]
        keep = _keep_mask(padding_mask, lead, x.device)
        if not keep.any():
            return x.float().sum() * 0
        with torch.autocast(x.device.type, enabled=False):
            h = x.float()
            if self.project_in is not None:
                h = F.linear(
                    h, self.project_in.weight.float(), self.project_in.bias.float()
                )
            flat = h.reshape(-1, self.config.num_slices, self.slice_dim)[keep]
            probs = torch.softmax(prior_logits.detach().float(), dim=-1)
            probs = probs.reshape(-1, *probs.shape[-2:])[keep]  # (M, S, K)
            expected = self.codebook.mix(probs).detach().float()  # (M, S, D/S)
            return F.mse_loss(flat, expected)


def _keep_mask(padding_mask, lead, device) -> torch.Tensor:
    if padding_mask is None:
        return torch.ones(lead.numel(), dtype=torch.bool, device=device)
    if padding_mask.shape != lead:
        raise ValueError(
            f"padding_mask shape {tuple(padding_mask.shape)} must match the input's leading "
            f"dims {tuple(lead)}"
        )
    return ~padding_mask.reshape(-1).bool()
