"""The EM algebra of a vector-quantized bottleneck, as pure functions.

Roy et al. 2018, "Theory and Experiments on Vector Quantized Autoencoders"
(https://arxiv.org/abs/1805.11063), sections 2.2 (hard EM / K-means) and 3.2 (soft EM).

Notation: N vectors x_i (after masking out padding), S independent slices (decomposed VQ of
Kaiser et al. 2018; S = 1 is plain VQ), each slice with its own codebook e_1..e_K of dimension D.

E-step (responsibilities r_ik, one row per vector and slice, each row sums to 1):
    distances   d_ik = ||x_i - e_k||^2                                  (always in fp32)
    hard EM     r_ik = 1[k = argmin_j d_ij]                              (K-means; also VQ-VAE)
    soft EM     r_ik = softmax_k(-d_ik / temperature)                    (exact posterior)
    MC soft EM  r_ik = (1/m) sum_l 1[z_i^l = k],  z_i^l ~ softmax(-d_i / temperature)
                (the paper's estimator with m samples; m = 1 is sampled hard EM)

Sufficient statistics of one optimizer update (summed over micro-batches and workers):
    n_k = sum_i r_ik                  s_k = sum_i r_ik x_i

M-step with an exponential moving average (decay lambda, paper: 0.999) and Laplace smoothing
(epsilon, paper: 1e-5) so that no count is ever zero:
    c_k <- lambda c_k + (1 - lambda) n_k         (EMA of counts)
    m_k <- lambda m_k + (1 - lambda) s_k         (EMA of *sums*, not of means)
    c~_k = (c_k + epsilon) / (C + K epsilon) * C,  C = sum_j c_j
    e_k <- m_k / c~_k

When: statistics are computed in every training forward, but they are applied once per
optimizer update, after the loss, in training only (never in eval mode and never for
fairseq's dummy / ``ignore_grad`` batches). See ``VQBottleneck.accumulate_`` / ``update_``.
"""

import torch

__all__ = [
    "squared_distances",
    "hard_assignments",
    "soft_responsibilities",
    "sample_responsibilities",
    "em_statistics",
    "ema_update",
    "laplace_smoothing",
    "codebook_from_ema",
    "perplexity",
]


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between vectors and the codes of their slice.

    Args:
        x: (N, S, D) vectors, any float dtype.
        codebook: (S, K, D) codes.

    Returns:
        (N, S, K) fp32 tensor, ``||x_n,s - codebook_s,k||^2`` clamped at 0.
    """
    x = x.float()
    codebook = codebook.float()
    x_sq = x.pow(2).sum(-1, keepdim=True)  # (N, S, 1)
    code_sq = codebook.pow(2).sum(-1)  # (S, K)
    cross = torch.einsum("nsd,skd->nsk", x, codebook)  # (N, S, K)
    return (x_sq - 2.0 * cross + code_sq.unsqueeze(0)).clamp_min_(0.0)


def hard_assignments(distances: torch.Tensor) -> torch.Tensor:
    """E-step of hard EM: the index of the nearest code, (N, S, K) -> (N, S) int64."""
    return distances.argmin(dim=-1)


def soft_responsibilities(
    distances: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Exact E-step of soft EM: softmax(-d / temperature) over codes, (N, S, K) -> (N, S, K)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(-distances / temperature, dim=-1)


def sample_responsibilities(
    distances: torch.Tensor,
    num_samples: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo E-step of soft EM (paper eq. 11-12): m samples with replacement per vector.

    Args:
        distances: (N, S, K) squared distances.
        num_samples: m >= 1.
        temperature: softmax temperature (paper: 1).
        generator: optional random generator for reproducible draws.

    Returns:
        ``(responsibilities, samples)``: (N, S, K) fp32 averaged one-hots (rows sum to 1) and
        (N, S, m) int64 sampled code indices.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n, s, k = distances.shape
    probs = soft_responsibilities(distances, temperature).reshape(n * s, k)
    if n * s == 0:
        samples = distances.new_zeros((n, s, num_samples), dtype=torch.long)
        return distances.new_zeros((n, s, k)), samples
    # NB: a NaN/inf input would make multinomial raise; sample such rows uniformly instead
    # (their statistics stay non-finite, so the codebook update skips them).
    bad = ~probs.isfinite().all(dim=-1)
    if bool(bad.any()):
        probs = torch.where(bad[:, None], torch.full_like(probs, 1.0 / k), probs)
    samples = torch.multinomial(
        probs, num_samples, replacement=True, generator=generator
    )
    # Average of the m one-hots: exact integer counts / m, without an (N*S, m, K) one-hot.
    ones = torch.ones(samples.shape, device=samples.device)
    counts = torch.zeros(n * s, k, device=samples.device).scatter_add_(1, samples, ones)
    responsibilities = (counts / num_samples).reshape(n, s, k)
    return responsibilities, samples.reshape(n, s, num_samples)


def em_statistics(
    x: torch.Tensor, responsibilities: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sufficient statistics n_k = sum_i r_ik and s_k = sum_i r_ik x_i, per slice.

    Args:
        x: (N, S, D) vectors (padding already removed).
        responsibilities: (N, S, K), rows summing to 1.

    Returns:
        ``(counts, sums)``: (S, K) and (S, K, D), fp32.
    """
    r = responsibilities.float()
    counts = r.sum(dim=0)  # (S, K)
    sums = torch.einsum("nsk,nsd->skd", r, x.float())  # (S, K, D)
    return counts, sums


def ema_update(
    ema_counts: torch.Tensor,
    ema_sums: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    decay: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EMA step of counts (S, K) and sums (S, K, D); returns new tensors."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    new_counts = decay * ema_counts + (1.0 - decay) * counts
    new_sums = decay * ema_sums + (1.0 - decay) * sums
    return new_counts, new_sums


def laplace_smoothing(counts: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(c_k + eps) / (C + K eps) * C along the last dim: no zero count, same total C."""
    total = counts.sum(dim=-1, keepdim=True)
    num_codes = counts.shape[-1]
    return (counts + epsilon) / (total + num_codes * epsilon) * total


def codebook_from_ema(
    ema_counts: torch.Tensor, ema_sums: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """M-step: e_k = m_k / c~_k with Laplace-smoothed counts, (S, K), (S, K, D) -> (S, K, D).

    NB: a code that is never chosen keeps a smoothed count near epsilon while its sum decays
    by lambda per update, so it jumps to about init / epsilon and is not chosen again until
    lambda^t has shrunk it back to the scale of the inputs (about 830 updates at lambda =
    0.99, 8,400 at 0.999): a "dead code", the index collapse of Kaiser et al.
    ``dead_code_threshold`` restarts such codes from current inputs instead.
    """
    smoothed = laplace_smoothing(ema_counts, epsilon)
    return ema_sums / smoothed.clamp_min(1e-12).unsqueeze(-1)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a histogram along its last dim (1 = one code, K = uniform).

    An all-zero histogram has perplexity 0 (nothing was assigned).
    """
    counts = counts.float()
    total = counts.sum(dim=-1, keepdim=True)
    probs = counts / total.clamp_min(1e-12)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))
