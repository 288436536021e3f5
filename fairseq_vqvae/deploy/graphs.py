"""The three inference graphs ``deploy.export`` hands to ONNX Runtime, written as plain tensor
functions of a ``vqvae_nat`` model's own parameters: the source encoder with the length
classifier (``EncoderGraph``), one latent-predictor step (``LatentStepGraph``: the greedy code
and the k best, for the runtime's beam) and codes -> tokens (``DecoderGraph``: look-up,
decompressor, decoder, vocabulary, arg-max and the scores the ranking reads).

They compute what ``VQVAENATGenerator`` computes through ``model.encode``,
``length_candidates``, ``predict_codes`` and ``decode_codes`` (Roy et al. 2018,
https://arxiv.org/abs/1805.11063, section 5.1), batch-first and without fairseq's
dictionaries, incremental state or data-dependent branches, so that torch.onnx traces them
with dynamic batch and lengths. Shapes are (B, T, C) unless noted.
"""

import torch
import torch.nn.functional as F
from fairseq.modules import SinusoidalPositionalEmbedding
from torch import nn

from ..lengths import LENGTH_OFFSET

__all__ = ["EncoderGraph", "LatentStepGraph", "DecoderGraph"]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C / H)."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _attend(attn, h, keys, values, bias=None) -> torch.Tensor:
    """fairseq's multi-head attention of queries from ``h`` (B, T, C) over ``keys``,
    ``values`` (B, H, S, C / H); ``bias`` (B, 1, 1, S) is -inf at padding."""
    query = _heads(attn.q_proj(h) * attn.scaling, attn.num_heads)
    scores = torch.matmul(query, keys.transpose(-1, -2))  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    out = torch.matmul(scores.softmax(-1), values).transpose(1, 2)  # (B, T, H, C / H)
    return attn.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


def _keys_values(attn, h) -> tuple:
    """Keys and values (B, H, S, C / H) of ``attn`` for ``h`` (B, S, C)."""
    heads = attn.num_heads
    return _heads(attn.k_proj(h), heads), _heads(attn.v_proj(h), heads)


def _sublayer(x, norm, pre: bool, block) -> torch.Tensor:
    """A residual block, pre-norm (``x + block(norm(x))``) or post-norm."""
    if pre:
        return x + block(norm(x))
    return norm(x + block(x))


def _feed_forward(layer, h) -> torch.Tensor:
    return layer.fc2(layer.activation_fn(layer.fc1(h)))


def _padding_bias(padding: torch.Tensor) -> torch.Tensor:
    """(B, S) bool, True at padding -> (B, 1, 1, S) additive attention bias."""
    zeros = torch.zeros_like(padding, dtype=torch.float32)
    return zeros.masked_fill(padding, float("-inf"))[:, None, None, :]


def _memory(layers, enc) -> list:
    """[keys, values, keys, values, ...] (B, H, S, C / H): every layer's cross-attention
    keys and values of ``enc``, as separate tensors (a stacked one is copied apart again)."""
    return [t for layer in layers for t in _keys_values(layer.encoder_attn, enc)]


def _self_attention(attn, bias=None):
    """The block of a self-attention over its own (normalized) input."""
    return lambda h: _attend(attn, h, *_keys_values(attn, h), bias)


def _decoder_layer(layer, x, self_attention, memory, source_bias):
    """One fairseq decoder layer: ``self_attention`` (a block: normalized input -> output),
    cross-attention over ``memory`` (keys, values), feed-forward."""
    pre = layer.normalize_before
    x = _sublayer(x, layer.self_attn_layer_norm, pre, self_attention)
    x = _sublayer(
        x,
        layer.encoder_attn_layer_norm,
        pre,
        lambda h: _attend(layer.encoder_attn, h, memory[0], memory[1], source_bias),
    )
    return _sublayer(x, layer.final_layer_norm, pre, lambda h: _feed_forward(layer, h))


class EncoderGraph(nn.Module):
    """Source tokens (B, S) int64, padded with pad -> (encoder_out (B, S, C), target lengths
    T (B,), latent counts (B,), the length classifier's log-probabilities (B, 256) float32
    (zeros (B, 1) without one; the runtime's length beam reads them), then the keys and values
    (B, H, S, C / H) of each latent predictor layer's cross-attention), as ``model.encode`` +
    ``inference_latent_counts`` (+ ``length_candidates``)."""

    def __init__(self, model):
        super().__init__()
        self.model, encoder = model, model.encoder
        self.pad = encoder.padding_idx
        table = SinusoidalPositionalEmbedding.get_embedding(
            encoder.max_source_positions + self.pad + 1,
            encoder.embed_tokens.embedding_dim,
            self.pad,
        )
        self.register_buffer("source_positions", table, persistent=False)

    def forward(self, src_tokens: torch.Tensor):
        model, encoder = self.model, self.model.encoder
        padding = src_tokens.eq(self.pad)  # (B, S)
        keep = (~padding).long()
        positions = torch.cumsum(keep, 1) * keep + self.pad  # fairseq's make_positions
        x = encoder.embed_scale * encoder.embed_tokens(src_tokens)
        x = (x + self.source_positions[positions]) * keep.unsqueeze(-1).float()
        bias = _padding_bias(padding)
        for layer in encoder.layers:
            pre = layer.normalize_before
            x = _sublayer(
                x,
                layer.self_attn_layer_norm,
                pre,
                _self_attention(layer.self_attn, bias),
            )
            x = _sublayer(
                x, layer.final_layer_norm, pre, lambda h, f=layer: _feed_forward(f, h)
            )
        if encoder.layer_norm is not None:
            x = encoder.layer_norm(x)
        src_lengths = keep.sum(1)
        lengths, length_logp = self._lengths(x, keep, src_lengths)
        ratio = model.ratio
        counts = torch.div(lengths + ratio - 1, ratio, rounding_mode="floor")
        memory = _memory(model.latent_predictor.layers, x)
        return (x, lengths, counts.clamp(1, model.max_latents), length_logp, *memory)

    def _lengths(self, enc, keep, src_lengths) -> tuple:
        """((B,) T: the length classifier's best, or ceil(length_ratio * |x|); its
        log-probabilities (B, 256), or zeros (B, 1) without a length classifier)."""
        head = self.model.length_head
        if head is None:
            ratio = self.model.cfg.length_ratio
            no_head = torch.zeros_like(src_lengths, dtype=torch.float32)[:, None]
            return torch.ceil(src_lengths.float() * ratio).long(), no_head
        weights = keep.float().unsqueeze(-1)
        pooled = (enc * weights).sum(1) / weights.sum(1).clamp_min(1)
        logits = F.linear(pooled, head.weight, head.bias)
        lengths = (src_lengths + logits.argmax(-1) - LENGTH_OFFSET).clamp_min(1)
        return lengths, logits.float().log_softmax(-1)


class LatentStepGraph(nn.Module):
    """One step of the latent predictor, with its self-attention cache: (the previous
    step's codes (B, S) int64 (read from step 1 on), the step (1,) int64, target lengths
    T (B,) int64 (read by a length-conditioned predictor), the source padding (B, S) bool,
    then each layer's past keys and values (B, H, t, C / H), then the ``EncoderGraph``'s
    keys and values) -> (this step's greedy codes (B, S) int64, the ``top_k`` best codes'
    log-probabilities (B, S, k) float32 (log-softmax over the codebook, best first) and those
    codes (B, S, k) int64, then each layer's keys and values (B, H, t + 1, C / H))."""

    def __init__(self, model, top_k: int = 1):
        super().__init__()
        self.predictor = predictor = model.latent_predictor
        self.top_k = top_k
        slices, size = predictor.num_slices, predictor.codebook_size
        self.register_buffer(
            "slice_offsets", torch.arange(slices) * size, persistent=False
        )
        self.start = slices * size  # the start symbol's row of embed_codes

    def forward(self, codes, step, lengths, padding, *tensors):
        predictor = self.predictor
        table = predictor.embed_codes.weight
        previous = F.embedding((codes + self.slice_offsets).clamp_min(0), table).sum(1)
        x = torch.where(step.eq(0)[:, None], table[self.start][None], previous)
        x = x * predictor.scale + predictor.positions[step]  # (B, C)
        if predictor.length_ratio:
            x = x + self._length_embedding(lengths, step)
        x = x.unsqueeze(1)  # (B, 1, C)
        layers = len(predictor.layers)
        past, memory = tensors[: 2 * layers], tensors[2 * layers :]
        bias, cache = _padding_bias(padding), []
        for i, layer in enumerate(predictor.layers):
            block = self._cached(layer, past[2 * i : 2 * i + 2], cache)
            x = _decoder_layer(layer, x, block, memory[2 * i : 2 * i + 2], bias)
        if predictor.final_norm is not None:
            x = predictor.final_norm(x)
        # (B, S, K); from (B, 1, C), whose product is a MatMul (int8 weights), not a Gemm
        logits = predictor.logits(x)[:, 0]
        logp = logits.float().log_softmax(-1)
        top_logp, top_codes = logp.topk(self.top_k, dim=-1)
        return (logp.argmax(-1), top_logp, top_codes, *cache)

    @staticmethod
    def _cached(layer, past, cache):
        """A layer's self-attention over its ``past`` (keys, values) and this step; appends
        its keys and values (B, H, t + 1, C / H) to ``cache``."""

        def block(h):
            keys, values = _keys_values(layer.self_attn, h)
            keys = torch.cat([past[0], keys], dim=2)
            values = torch.cat([past[1], values], dim=2)
            cache.extend([keys, values])
            return _attend(layer.self_attn, h, keys, values)

        return block

    def _length_embedding(self, lengths, step) -> torch.Tensor:
        """``LatentPredictor.length_embedding`` at position ``step`` (1,): (B, C)."""
        predictor = self.predictor
        ratio, most = predictor.length_ratio, predictor.max_latents
        count = torch.div(lengths + ratio - 1, ratio, rounding_mode="floor")
        count = count.clamp(1, most)
        fill = (lengths - (count - 1) * ratio).clamp(1, ratio) - 1
        to_go = (count - 1 - step).clamp(0, most - 1)
        embedded = predictor.embed_to_go(to_go) + predictor.embed_fill(fill)
        return embedded * predictor.scale


class DecoderGraph(nn.Module):
    """(codes (B, N, S) int64 of sentences with N latents each, encoder_out (B, S', C), the
    source padding (B, S') bool, a window W (1,) int64) -> (the best token other than EOS
    and the banned ones (B, L) int64, EOS is the best token (B, L) bool, the EOS
    log-probability of the last W positions (B, W) float32 and the best token's (B, W)
    float32), L = N * 2^n_c: ``decode_codes`` then ``hypotheses.best_tokens`` (W = L for the
    runtime's ``model`` ranking, which reads every position's scores)."""

    def __init__(self, model, banned, eos: int):
        super().__init__()
        self.model = model
        codebook = model.bottleneck.codebook
        slices, size = codebook.num_slices, codebook.codebook_size
        self.register_buffer(
            "codes_flat", codebook.weight.detach().reshape(slices * size, -1), False
        )
        self.register_buffer("slice_offsets", torch.arange(slices) * size, False)
        weight = model.embed_target.weight.detach()  # (V, C)
        allowed = torch.ones(weight.shape[0], dtype=torch.bool)
        allowed[list(banned) + [eos]] = False
        self.register_buffer("allowed", allowed.nonzero()[:, 0], persistent=False)
        self.register_buffer("allowed_weight", weight[allowed], persistent=False)
        self.register_buffer("eos_weight", weight[eos : eos + 1], persistent=False)

    def forward(self, codes, encoder_out, padding, eos_window):
        model = self.model
        latents = F.embedding(codes + self.slice_offsets, self.codes_flat).flatten(2)
        project_out = model.bottleneck.project_out
        if project_out is not None:
            latents = project_out(latents)
        h = model.decompressor(latents)  # (B, L, C)
        h = h + model.positions[: h.shape[1]]
        bias = _padding_bias(padding)
        for layer in model.decoder_layers:
            memory = _keys_values(layer.encoder_attn, encoder_out)
            h = _decoder_layer(layer, h, _self_attention(layer.self_attn), memory, bias)
        if model.decoder_norm is not None:
            h = model.decoder_norm(h)
        # The allowed tokens' logits (B, L, V') and EOS's (B, L) from two matrix products:
        # no (B, L, V) tensor to mask, and one pass for the best token.
        logits = F.linear(h, self.allowed_weight).float()
        eos_logits = F.linear(h, self.eos_weight).float()[..., 0]
        best_allowed = logits.argmax(-1, keepdim=True)  # (B, L, 1)
        best = logits.gather(-1, best_allowed)[..., 0]
        tokens = self.allowed[best_allowed[..., 0]]
        # EOS log-probabilities of the last ``eos_window`` positions only (2^n_c for
        # --gen-eos last-latent, else 1): each position's normalizer costs about as much as
        # its share of the projection.
        start = logits.shape[1] - eos_window[0]
        rest = logits[:, start:].logsumexp(-1)
        last = eos_logits[:, start:]
        top = torch.maximum(rest, last)  # log(exp(rest) + exp(eos)), stably
        normalizer = top + torch.log(torch.exp(rest - top) + torch.exp(last - top))
        token_scores = best[:, start:] - normalizer
        return tokens, eos_logits >= best, last - normalizer, token_scores
