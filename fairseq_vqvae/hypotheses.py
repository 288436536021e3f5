"""From the decoder's logits to fairseq's hypotheses: where each sentence ends (``--gen-eos``,
``EOS_POLICIES``), the hypothesis dictionaries, and how candidates are ranked (``--gen-rescore``,
``RESCORERS``). Used by ``VQVAENATGenerator``.
"""

import torch

from .errors import OptionError

# Where the sentence ends (--gen-eos). In training a target of T tokens (EOS included) is
# compressed into N = ceil(T / 2^n_c) latents, so its EOS always lies in the last latent's
# 2^n_c positions and the positions after it are padding (no loss).
# Refusals shared by check_models (when the generator is built) and the decoding steps.
LENGTH_BEAM_NEEDS_A_LENGTH_HEAD = (
    "--gen-length-beam needs a model trained with --latent-length predict (this one decodes "
    "the paper's fixed ratio x source length)"
)
EOS_LENGTH_NEEDS_A_LENGTH_HEAD = (
    "--gen-eos length needs a model trained with --latent-length predict; use --gen-eos "
    "last-latent or first"
)
EOS_POLICIES = {
    "first": "cut at the first position whose best token is EOS, anywhere (the paper's rule)",
    "last-latent": "EOS only inside the last latent's 2^n_c positions, at its most likely one there",
    "length": "exactly the predicted length T (needs --latent-length predict)",
}


# How candidates are ranked (--gen-rescore); a hypothesis' "score" stays the decoder's mean
# token log-probability, its "rank_score" is the ranking's.
RESCORERS = {
    "latent": "the latent predictor's log-probability of the codes, plus the length classifier's of the length",
    "model": "the model's joint log-probability of codes and translation, (log p(T, z | x) + log p(y | z, x)) / |y|",
    "teacher": "an autoregressive model's mean token log-probability of the translation, one teacher-forced pass over all candidates; the AR model is the second checkpoint: --path student.pt:teacher.pt",
}


def best_tokens(logits, banned, eos: int):
    """(tokens, their scores, EOS scores, EOS is best), each (C, L): every position's best token
    other than EOS and ``banned``, and the log-probability of EOS, from token logits (C, L, V).
    """
    logits = logits.float()
    # The best token and the EOS score per position, from one max and one logsumexp
    # (no (C, L, V) log-softmax): EOS goes at the end only.
    logits[..., banned] = float("-inf")
    eos_logits = logits[..., eos].clone()  # (C, L)
    logits[..., eos] = float("-inf")
    best, tokens = logits.max(-1)  # (C, L)
    normalizer = torch.logaddexp(logits.logsumexp(-1), eos_logits)
    scores, eos_scores = best - normalizer, eos_logits - normalizer
    return tokens, scores, eos_scores, eos_logits >= best


def sentence_ends(policy, eos_scores, eos_best, lengths, ratio, target_lengths):
    """Index of each sentence's EOS among its decoded positions (== length: none found).

    Args:
        policy: one of ``EOS_POLICIES`` (--gen-eos).
        eos_scores: (B, L) log-probability of EOS at each position.
        eos_best: (B, L) True where EOS is the position's best token.
        lengths: (B,) decoded positions (latents * 2^n_c) per sentence.
        ratio: 2^n_c, positions per latent.
        target_lengths: (B,) predicted (or oracle) lengths T, EOS included, or None.
    """
    # (1, L)
    positions = torch.arange(eos_scores.shape[1], device=eos_scores.device)[None]
    inside = positions < lengths[:, None]  # (B, L)
    if policy == "first":
        return torch.where(eos_best & inside, positions, lengths[:, None]).min(1).values
    if policy == "length":
        if target_lengths is None:
            raise OptionError(EOS_LENGTH_NEEDS_A_LENGTH_HEAD)
        return torch.minimum(target_lengths, lengths).clamp_min(1) - 1
    window = inside & (
        positions >= lengths[:, None] - ratio
    )  # the last latent's positions
    return eos_scores.masked_fill(~window, float("-inf")).argmax(1)


def hypothesis(tokens, scores, eos_scores, end, length, eos: int, dedup: bool):
    """Tokens before ``end``, then EOS (fairseq hypotheses end with EOS).

    Args:
        tokens, scores: (L,) best non-EOS token per position and its log-probability.
        eos_scores: (L,) log-probability of EOS per position.
        end: EOS position; ``length`` (no EOS decoded) gives EOS a score of 0.
        length: positions decoded for this sentence.
        eos: the EOS symbol.
        dedup: drop every token equal to the one before it (--gen-dedup).
    """
    tokens, scores = tokens[:end], scores[:end]
    if dedup and end > 1:
        keep = torch.cat(
            [tokens.new_ones(1, dtype=torch.bool), tokens[1:] != tokens[:-1]]
        )
        tokens, scores = tokens[keep], scores[keep]
    eos_score = eos_scores[end : end + 1] if end < length else scores.new_zeros(1)
    positional = torch.cat([scores, eos_score])
    tokens = torch.cat([tokens, tokens.new_full((1,), eos)])
    return {
        "tokens": tokens,
        "score": positional.mean(),
        "positional_scores": positional,
        "attention": None,
        "alignment": None,
        "steps": 0,
    }


def rank_scores(
    rescore: str, hypos, log_prior, sentence, teacher, sample, pad: int, eos: int
) -> torch.Tensor:
    """(C,) the ``rescore`` (one of ``RESCORERS``) score of every candidate (higher is better),
    from its hypothesis, its log-prior (C,) and its source ``sentence`` (C,)."""
    if rescore == "latent":
        return log_prior.float().cpu()
    if rescore == "model":
        totals = torch.stack([h["positional_scores"].sum() for h in hypos]).cpu()
        counts = torch.tensor([h["positional_scores"].numel() for h in hypos])
        return (log_prior.float().cpu() + totals) / counts
    return teacher_scores(
        teacher,
        sample,
        sentence,
        [h["tokens"] for h in hypos],
        pad,
        eos,
    )


def teacher_scores(
    teacher, sample, sentence, candidates, pad: int, eos: int
) -> torch.Tensor:
    """(C,) an autoregressive fairseq model's mean token log-probability of each candidate
    translation (EOS included) of source ``sentence[c]``: one teacher-forced pass over all."""
    net_input = sample["net_input"]
    encoder_out = teacher.encoder(
        net_input["src_tokens"], src_lengths=net_input["src_lengths"]
    )
    encoder_out = teacher.encoder.reorder_encoder_out(encoder_out, sentence)
    tokens = torch.nn.utils.rnn.pad_sequence(
        list(candidates), batch_first=True, padding_value=pad
    )
    previous = torch.cat(
        [tokens.new_full((tokens.shape[0], 1), eos), tokens[:, :-1]], dim=1
    )
    output = teacher.decoder(previous, encoder_out=encoder_out)
    logp = teacher.get_normalized_probs(output, log_probs=True).float()
    real = tokens.ne(pad)
    token_logp = (
        logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).masked_fill(~real, 0.0)
    )
    return (token_logp.sum(1) / real.sum(1)).cpu()
