"""The latent predictor's search over codes at inference: greedy, beam and sampled code
sequences, one latent step at a time with cached self-attention (``CachedSteps``, or fairseq's
incremental state in ``FairseqSteps``).

Beyond the paper's greedy decoding (Roy et al. 2018, https://arxiv.org/abs/1805.11063, section
5.1): a beam over codes and ancestral samples, as in noisy parallel decoding (Gu et al. 2018).
Shapes are batch-first (B, T, C) unless noted.
"""

import torch
import torch.nn.functional as F

from .errors import OptionError
from .lengths import source_padding_mask


@torch.no_grad()
def search(
    predictor,
    encoder_out,
    num_latents: torch.Tensor,
    beam_size: int = 1,
    samples: int = 0,
    lengths=None,
):
    """Candidate code sequences per sentence of ``predictor`` (a ``latent.LatentPredictor``),
    with cached self-attention.

    Args:
        encoder_out: the source encoding with each of the B sentences repeated
            ``beam_size + samples`` times in a row (``encoder.reorder_encoder_out``).
        num_latents: (B,) latents per sentence; a sentence's codes after its own count
            are 0 and cost nothing.
        beam_size: the best code sequences by beam search (1 = greedy, the paper's
            choice); beam search over several slices is not supported.
        samples: further sequences drawn ancestrally from the predictor.
        lengths: (B,) target lengths T of the rows of ``encoder_out``, which a
            length-conditioned predictor reads (``embed``); None otherwise.

    Returns:
        codes (B, C, N, S) and their log-probabilities (B, C), C = beam_size + samples;
        the beams first, best first.
    """
    batch, beams, slices, size = (
        num_latents.shape[0],
        beam_size,
        predictor.num_slices,
        predictor.codebook_size,
    )
    width = beams + samples
    check_search(predictor, beams)
    device = num_latents.device
    codes = torch.zeros(batch * width, 0, slices, dtype=torch.long, device=device)
    scores = torch.zeros(batch, width, device=device)
    # The beams start identical: extend only the first.
    scores[:, 1:beams] = float("-inf")
    # (B, 1): each sentence's first row
    rows = (torch.arange(batch, device=device) * width)[:, None]
    keep_samples = torch.arange(beams, width, device=device).expand(batch, samples)
    steps = (
        CachedSteps(predictor, encoder_out)
        if CachedSteps.supports(predictor)
        else FairseqSteps(predictor, encoder_out)
    )
    finished = torch.full((slices, size), float("-inf"), device=device)
    finished[:, 0] = 0.0  # a finished sentence goes on with code 0 at no cost
    for step in range(int(num_latents.max())):
        previous = codes.new_zeros(batch * width, 1, slices) if step == 0 else codes
        logits = steps(predictor.embed(previous, offset=step, lengths=lengths))[:, -1]
        logp = logits.float().log_softmax(-1).view(batch, width, slices, size)
        active = (step < num_latents).view(batch, 1, 1, 1)
        logp = torch.where(active, logp, finished)
        if beams == 1:  # greedy: the best code of every slice
            best, beam_codes = logp[:, :1].max(-1)  # (B, 1, S)
            scores[:, :1] += best.sum(-1)
        else:
            total = (scores[:, :beams, None] + logp[:, :beams, 0]).view(batch, -1)
            scores[:, :beams], flat = total.topk(beams, dim=1)
            parents, beam_codes = flat // size, (flat % size).unsqueeze(-1)
        step_codes = [beam_codes]
        if samples:
            drawn = torch.multinomial(logp[:, beams:].exp().reshape(-1, size), 1)
            drawn = drawn.view(batch, samples, slices)
            scores[:, beams:] += (
                logp[:, beams:].gather(-1, drawn.unsqueeze(-1)).squeeze(-1).sum(-1)
            )
            step_codes.append(drawn)
        if beams > 1:  # the beams' rows follow their parents; samples stay put
            order = (rows + torch.cat([parents, keep_samples], dim=1)).view(-1)
            codes = codes[order]
            steps.reorder(order)
        codes = torch.cat(
            [codes, torch.cat(step_codes, dim=1).view(-1, 1, slices)], dim=1
        )
    return codes.view(batch, width, -1, slices), scores


def check_search(predictor, beam_size: int):
    """Refuse a latent beam ``predictor`` cannot search."""
    if beam_size > 1 and not predictor.autoregressive:
        raise OptionError(
            "--gen-latent-beam needs an autoregressive latent predictor; the parallel one "
            "(--latent-predictor-kind parallel) takes each position's best codes, exact in one "
            "pass: use --gen-latent-beam 1 (more candidates: --gen-latent-samples)"
        )
    if beam_size > 1 and predictor.num_slices != 1:
        raise OptionError(
            "latent beam search needs --num-slices 1; use --gen-latent-beam 1"
        )
    if beam_size > predictor.codebook_size:
        raise OptionError(
            f"--gen-latent-beam {beam_size} is more than the {predictor.codebook_size} codes "
            f"per slice"
        )


class FairseqSteps:
    """One latent step at a time through the predictor's fairseq layers and their incremental
    state: every layer configuration fairseq has, and training mode (dropout)."""

    def __init__(self, predictor, encoder_out):
        self.predictor, self.encoder_out = predictor, encoder_out
        self.incremental_state: dict = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The next step's embedded input (B, 1, C) -> its logits (B, 1, S, K)."""
        return self.predictor(
            x, self.encoder_out, incremental_state=self.incremental_state
        )

    def reorder(self, order: torch.Tensor):
        for layer in self.predictor.layers:
            layer.self_attn.reorder_incremental_state(self.incremental_state, order)


class CachedSteps:
    """``FairseqSteps``' steps in evaluation mode, with the keys and values of the steps so
    far and of the source held as plain (B, H, T, C / H) tensors, and each layer's
    query/key/value projections packed into one matrix product.

    Written by hand because at batch size 1 fairseq's incremental state (a dictionary of
    buffers per attention, re-read and re-written at every step) and its general attention
    cost more than the arithmetic: batch-1 decoding of the n_c = 2 student on Multi30k is 6%
    faster end to end this way, with the same tokens (``research/fast_path_speed.py --path
    latent-steps``; README, "Where batch-1 time goes"). The layers' own parameters and layer
    norms are used, so nothing is converted or stored twice; any configuration outside the one
    built here (see ``supports``) takes ``FairseqSteps``.
    """

    def __init__(self, predictor, encoder_out):
        self.predictor = predictor
        enc = encoder_out["encoder_out"][0].transpose(0, 1)  # (B, S, C)
        mask = source_padding_mask(encoder_out)
        # Boolean SDPA mask, True where attending; None when no source position is padding.
        self.source_mask = (
            None if mask is None or not bool(mask.any()) else ~mask[:, None, None, :]
        )
        self.packed, self.source, self.past = [], [], []
        for layer in predictor.layers:
            attn, cross = layer.self_attn, layer.encoder_attn
            self.packed.append(_packed(attn.q_proj, attn.k_proj, attn.v_proj))
            weight, bias = _packed(cross.k_proj, cross.v_proj)
            self.source.append(_heads(F.linear(enc, weight, bias), 2, cross.num_heads))
            self.past.append(None)

    @staticmethod
    def supports(predictor) -> bool:
        """Whether every layer is the plain pre- or post-norm decoder layer, in evaluation and
        without dropout kept for inference (fairseq-generate's ``--retain-dropout``)."""
        retained = any(
            getattr(module, "apply_during_inference", False)
            for module in predictor.layers.modules()
        )
        return not (predictor.training or retained) and all(
            not layer.cross_self_attention
            and layer.c_attn is None
            and layer.attn_ln is None
            and layer.ffn_layernorm is None
            and layer.w_resid is None
            and layer.encoder_attn is not None
            and all(
                attn.bias_k is None
                and not attn.add_zero_attn
                and attn.q_proj.bias is not None
                and attn.k_proj.bias is not None
                and attn.v_proj.bias is not None
                for attn in (layer.self_attn, layer.encoder_attn)
            )
            for layer in predictor.layers
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        predictor = self.predictor
        for i, layer in enumerate(predictor.layers):
            pre = layer.normalize_before
            h = layer.self_attn_layer_norm(x) if pre else x
            heads = layer.self_attn.num_heads
            query, key, value = _heads(F.linear(h, *self.packed[i]), 3, heads)
            if self.past[i] is not None:
                key = torch.cat([self.past[i][0], key], dim=2)
                value = torch.cat([self.past[i][1], value], dim=2)
            self.past[i] = (key, value)
            h = F.scaled_dot_product_attention(query, key, value)
            x = x + layer.self_attn.out_proj(_merge_heads(h))
            if not pre:
                x = layer.self_attn_layer_norm(x)
            h = layer.encoder_attn_layer_norm(x) if pre else x
            query = _heads(
                layer.encoder_attn.q_proj(h), 1, layer.encoder_attn.num_heads
            )[0]
            h = F.scaled_dot_product_attention(
                query, *self.source[i], attn_mask=self.source_mask
            )
            x = x + layer.encoder_attn.out_proj(_merge_heads(h))
            if not pre:
                x = layer.encoder_attn_layer_norm(x)
            h = layer.final_layer_norm(x) if pre else x
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
            if not pre:
                x = layer.final_layer_norm(x)
        if predictor.final_norm is not None:
            x = predictor.final_norm(x)
        return predictor.logits(x)  # (B, 1, S, K)

    def reorder(self, order: torch.Tensor):
        # The source rows need no reordering: beams only move within their sentence's rows.
        self.past = [(key[order], value[order]) for key, value in self.past]


def _packed(*projections):
    """One (k C, C) weight and (k C,) bias from k linear projections."""
    return (
        torch.cat([p.weight for p in projections]),
        torch.cat([p.bias for p in projections]),
    )


def _heads(x: torch.Tensor, parts: int, heads: int):
    """(B, T, parts * C) -> ``parts`` tensors (B, H, T, C / H)."""
    batch, length, _ = x.shape
    return x.view(batch, length, parts, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, C / H) -> (B, T, C)."""
    return x.transpose(1, 2).flatten(2)
