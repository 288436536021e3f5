"""vqvae_nat's training curriculum: what the token decoder reads besides the quantized codes.

Three schedules, each off unless its option is set: the bottleneck warm-up of the paper's code
(Roy et al. 2018, https://arxiv.org/abs/1805.11063, section 5.1; tensor2tensor
``bottleneck_warmup_steps``), glancing (GLAT, Qian et al. 2021, https://arxiv.org/abs/2008.07905)
and scheduled sampling of codes (CNAT, Bao et al. 2021; latent-GLAT, Bao et al. 2022); and the
model's schedules, pure functions of the update number (``step_on``, ``inverse_exp_decay``).
"""

import math

import torch


def warmup_mix(quantized, continuous, num_updates: int, warmup_updates: int):
    """Bottleneck warm-up: per example, the quantized latents (B, N, C) with probability
    p(t) (``inverse_exp_decay``), else the continuous ones; quantized when it is off."""
    if warmup_updates <= 0:
        return quantized
    p = inverse_exp_decay(num_updates, warmup_updates)
    use_quantized = torch.rand(quantized.shape[0], 1, 1, device=quantized.device) < p
    return torch.where(use_quantized, quantized, continuous)


def mix_predicted(latents, predicted, latent_padding, ratio: float):
    """Scheduled sampling of codes: each real latent position (``latent_padding`` True at
    padding) takes the predictor's vector ``predicted`` (B, N, C) with probability ``ratio``,
    so that the decoder learns to translate from predicted codes as at inference."""
    if ratio <= 0:
        return latents
    chosen = torch.rand(latent_padding.shape, device=latents.device) < ratio
    chosen = (chosen & ~latent_padding).unsqueeze(-1)
    return torch.where(chosen, predicted.to(latents.dtype), latents)


def glance_ratio(
    start: float, end: float, anneal_updates: int, num_updates: int
) -> float:
    """GLAT's sampling ratio at this update: ``start`` annealed linearly to ``end`` over
    ``anneal_updates`` (constant ``start`` when that is 0)."""
    if anneal_updates <= 0:
        return start
    return start + (end - start) * min(1.0, num_updates / anneal_updates)


@torch.no_grad()
def glance_positions(predicted, target, pad: int, ratio: float):
    """GLAT's glanced positions (B, L), or None when ``ratio`` is 0: given the first pass's
    ``predicted`` tokens, ``ratio`` x (a sentence's wrong tokens) of its real positions, chosen
    at random, get the reference token as decoder input; the loss skips them."""
    if ratio <= 0:
        return None
    real = target.ne(pad)
    return glance_among(predicted.ne(target) & real, real, ratio)


@torch.no_grad()
def glance_among(wrong, real, ratio: float):
    """GLAT's choice of glanced positions (B, L): of each row's ``real`` positions (B, L),
    ``ratio`` x (its ``wrong`` ones (B, L)), rounded down, chosen at random (the token decoder's
    glancing over tokens, the parallel latent predictor's over codes)."""
    count = (wrong.sum(1).float() * ratio).long()  # (B,); GLAT rounds down
    scores = torch.rand(real.shape, device=real.device).masked_fill(~real, 2.0)
    rank = scores.argsort(1).argsort(1)  # a random order of the real positions first
    return rank < count.unsqueeze(1)


# Schedules, f(num_updates) -> float. They reach the model through fairseq's set_num_updates.


def step_on(num_updates: int, start_update: int) -> float:
    """0 before ``start_update``, 1 from it on (paper: latent loss after 50k steps)."""
    return 1.0 if num_updates >= start_update else 0.0


def inverse_exp_decay(
    num_updates: int, warmup_updates: int, min_value: float = 0.01
) -> float:
    """tensor2tensor's ``inverse_exp_decay``: min_value at 0, rising exponentially to 1 at
    ``warmup_updates`` (the paper's bottleneck warm-up probability, 0.01 -> 1 over 10k steps)."""
    if warmup_updates <= 0 or num_updates >= warmup_updates:
        return 1.0
    base = math.exp(math.log(min_value) / warmup_updates)
    return base ** (warmup_updates - max(0, num_updates))
