"""The candidates ``VQVAENATGenerator`` decodes: latent sequences from several lengths, a beam
over codes and sampled codes (noisy parallel decoding, Gu et al. 2018), flattened and grouped
by sentence.
"""

from typing import NamedTuple

import torch

from .stages import stage


class Candidates(NamedTuple):
    """Every sentence's candidate latent sequences, flattened and grouped by sentence."""

    sentence: torch.Tensor  # (C,) the source sentence of each candidate
    codes: torch.Tensor  # (C, N, S)
    latent_padding: torch.Tensor  # (C, N) True at padding
    target_lengths: (
        torch.Tensor | None
    )  # (C,) T, EOS included, or None without a length head
    log_prior: torch.Tensor  # (C,) log p(T | x) + log p(z | x, T); 0 for oracle latents


def latent_count_groups(latent_padding):
    """Index tensors of the candidates that share a latent count, fewest latents first; a
    single ``None`` (every candidate, in order) when they all share one."""
    counts = (~latent_padding).sum(1)
    distinct = counts.unique()
    if distinct.numel() <= 1:
        return [None]
    return [(counts == n).nonzero().squeeze(1) for n in distinct]


def predicted_candidates(
    model, encoder_out, src_lengths, lengths, length_prior, latent_beam, latent_samples
) -> Candidates:
    """The predictor's candidates of every sentence: for each of its lengths T (B, Lb) (None
    without a length head; log-probabilities ``length_prior`` (B, Lb)), ``latent_beam`` beams and
    ``latent_samples`` samples of codes (``VQVAENATModel.predict_codes``)."""
    batch, device = src_lengths.shape[0], src_lengths.device
    per_length = lengths.shape[1] if lengths is not None else 1
    width = latent_beam + latent_samples
    if per_length > 1:
        encoder_out = model.reorder_encoder_out(
            encoder_out,
            torch.arange(batch, device=device).repeat_interleave(per_length),
        )
        src_lengths = src_lengths.repeat_interleave(per_length)
    flat_lengths = lengths.reshape(-1) if lengths is not None else None
    with stage("latent_predictor"):
        num_latents = model.inference_latent_counts(
            encoder_out, src_lengths, flat_lengths
        )  # (B * Lb,)
        if width > 1:
            order = torch.arange(num_latents.shape[0], device=device).repeat_interleave(
                width
            )
            encoder_out = model.reorder_encoder_out(encoder_out, order)
        codes, code_prior = model.predict_codes(
            encoder_out,
            num_latents,
            latent_beam,
            latent_samples,
            # what a length-conditioned predictor reads (--latent-length-condition)
            lengths=flat_lengths.repeat_interleave(width)
            if flat_lengths is not None
            else None,
        )  # (B * Lb, W, N, S), (B * Lb, W)
    num_latents = num_latents.repeat_interleave(width)
    positions = torch.arange(codes.shape[2], device=device)[None]
    return Candidates(
        sentence=torch.arange(batch, device=device).repeat_interleave(
            per_length * width
        ),
        codes=codes.flatten(0, 1),
        latent_padding=positions >= num_latents[:, None],
        target_lengths=flat_lengths.repeat_interleave(width)
        if lengths is not None
        else None,
        log_prior=(code_prior + length_prior.reshape(-1, 1)).reshape(-1),
    )
