"""Building blocks of vqvae_nat: the target compressor/decompressor and the latent predictor.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1, following the Latent
Transformer of Kaiser et al. 2018: n_c residual-conv + stride-2 steps shorten the target
2^n_c times; the decompressor mirrors them with depth-to-space up-sampling; an
autoregressive Transformer decoder predicts the codes from the source (its search over codes
at inference: ``latent_search``).
Shapes are batch-first (B, T, C) unless noted; fairseq layers take (T, B, C).
"""

import torch
import torch.nn.functional as F
from fairseq.modules import LayerNorm, SinusoidalPositionalEmbedding
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
from torch import nn

# CachedSteps, FairseqSteps: read from here too (research/fast_path_speed.py, swap_codes.py)
from .latent_search import CachedSteps, FairseqSteps, search  # noqa: F401
from .lengths import source_padding_mask

__all__ = ["Compressor", "Decompressor", "LatentPredictor", "sinusoidal_table"]


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """(num_positions, dim) fixed sinusoidal position table (fairseq's, without padding row)."""
    return SinusoidalPositionalEmbedding.get_embedding(num_positions, dim)


class ResidualConv(nn.Module):
    """x + dropout(conv_stack(LN(x))), conv_stack = [ReLU, Conv1d k=3 (no bias), LN] x 3.

    tensor2tensor's ``residual_conv`` (one block), kernel 3 along time, SAME padding.
    ``padding_mask`` (B, T), True at padding, zeroes the conv inputs there, so that a
    sentence's output does not depend on how much padding its batch adds.
    """

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, 3, padding=1, bias=False) for _ in range(3)
        )
        self.norms = nn.ModuleList(LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        h = self.norm(x)
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(h)
            if padding_mask is not None:
                h = h.masked_fill(padding_mask.unsqueeze(-1), 0.0)
            h = norm(same_conv(conv, h))
        return x + self.dropout(h)


def same_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (kernel 3, stride 1, zero padding 1) on batch-first x (B, T, C), as one
    matrix product over each position's three neighbours: the same function and parameters as
    ``conv(x.transpose(1, 2)).transpose(1, 2)``, faster on a CPU: at batch size 1, where the
    small convolution takes torch's slow unfolding path, decoding is 4-8% faster
    (``research/fast_path_speed.py``; README, "Where batch-1 time goes")."""
    padded = F.pad(x, (0, 0, 1, 1))  # (B, T + 2, C)
    # (B, T, C, 3) flattened channel-major, as the weight (C', C, 3) is stored: no weight copy
    window = torch.stack([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=-1)
    return F.linear(window.flatten(2), conv.weight.flatten(1), conv.bias)


def strided_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2, no padding) on batch-first x (B, T, C), T even: each pair
    of positions through one linear map, as ``conv(x.transpose(1, 2)).transpose(1, 2)``."""
    if x.shape[1] % 2:
        raise ValueError(
            f"strided_conv needs an even length, got {x.shape[1]}: pad to a multiple of 2"
        )
    pairs = x.reshape(x.shape[0], x.shape[1] // 2, -1)  # (B, T / 2, 2C): [x_2t, x_2t+1]
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)  # (C', 2C)
    return F.linear(pairs, weight, conv.bias)


class Compressor(nn.Module):
    """(B, L, C) -> (B, L / 2^n_c, C): n_c residual blocks, then n_c stride-2 convs.

    L must be a multiple of 2^n_c (the model pads the target to one).
    """

    def __init__(self, dim: int, compress_steps: int, dropout: float):
        super().__init__()
        self.residual = nn.Sequential(
            *(ResidualConv(dim, dropout) for _ in range(compress_steps))
        )
        self.downsample = nn.ModuleList(
            nn.Conv1d(dim, dim, 2, stride=2) for _ in range(compress_steps)
        )
        self.norms = nn.ModuleList(LayerNorm(dim) for _ in range(compress_steps))

    def forward(self, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
        for residual in self.residual:
            x = residual(x, padding_mask)
        for conv, norm in zip(self.downsample, self.norms):
            x = norm(strided_conv(conv, F.relu(x)))
        return x


class Decompressor(nn.Module):
    """(B, N, C) -> (B, N * 2^n_c, C): n_c x [residual block, 1x1 conv to 2C, depth-to-space]."""

    def __init__(self, dim: int, compress_steps: int, dropout: float):
        super().__init__()
        self.residual = nn.ModuleList(
            ResidualConv(dim, dropout) for _ in range(compress_steps)
        )
        self.expand = nn.ModuleList(
            nn.Linear(dim, 2 * dim) for _ in range(compress_steps)
        )

    def forward(self, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
        for residual, expand in zip(self.residual, self.expand):
            x = expand(residual(x, padding_mask))  # (B, N, 2C)
            x = x.reshape(x.shape[0], x.shape[1] * 2, -1)  # (B, 2N, C)
            if padding_mask is not None:
                padding_mask = padding_mask.repeat_interleave(2, dim=1)
        return x


class LatentPredictor(nn.Module):
    """Autoregressive Transformer decoder over code ids, attending to the source encoding.

    Input at latent step t is the learned embedding of code t-1 (a start symbol at t = 0),
    summed over slices; the output is S x K logits. It is trained by teacher forcing on the
    autoencoder's codes, with no gradient into the autoencoder (see README, "Design").

    Args:
        cfg: fairseq ``TransformerConfig`` whose ``decoder`` fields size the layers.
        num_layers: number of Transformer decoder layers.
        num_slices: S codes per latent position.
        codebook_size: K codes per slice.
        max_latents: longest latent sequence (for the position table).
        length_ratio: 2^n_c tokens per latent, to condition every step on the target length
            T (``--latent-length-condition``): the latents still to come after this one and
            the number of tokens (EOS included) in the last latent's window; 0 = off.
        code_dim: with ``tie`` (``--latent-tied-codes``), the dimension of one slice's code
            vectors, which then give the inputs and the logits; 0 = free tables.
    """

    autoregressive = True  # causal self-attention (``ParallelLatentPredictor``: False)

    def __init__(
        self,
        cfg,
        num_layers: int,
        num_slices: int,
        codebook_size: int,
        max_latents: int,
        length_ratio: int = 0,
        code_dim: int = 0,
    ):
        super().__init__()
        dim = cfg.decoder.embed_dim
        self.num_slices, self.codebook_size = num_slices, codebook_size
        self.max_latents, self.length_ratio = max_latents, length_ratio
        # Row S*K is the start symbol; slice s uses rows [s*K, (s+1)*K).
        self.embed_codes = nn.Embedding(num_slices * codebook_size + 1, dim)
        nn.init.normal_(self.embed_codes.weight, std=dim**-0.5)
        if length_ratio:
            self.embed_to_go = nn.Embedding(max_latents, dim)
            self.embed_fill = nn.Embedding(length_ratio, dim)
            for table in (self.embed_to_go, self.embed_fill):
                nn.init.normal_(table.weight, std=dim**-0.5)
        self.register_buffer(
            "positions", sinusoidal_table(max_latents + 1, dim), persistent=False
        )
        self.layers = nn.ModuleList(
            TransformerDecoderLayerBase(cfg) for _ in range(num_layers)
        )
        self.final_norm = LayerNorm(dim) if cfg.decoder.normalize_before else None
        self.code_dim, self._codebook = code_dim, None
        if code_dim:  # the codebook's geometry: code vectors in, distances out
            self.embed_vectors = nn.Linear(code_dim, dim, bias=False)
            self.output = nn.Linear(dim, num_slices * code_dim)
            self.code_bias = nn.Parameter(torch.zeros(num_slices, codebook_size))
            self.log_scale = nn.Parameter(torch.zeros(()))
        else:
            self.output = nn.Linear(dim, num_slices * codebook_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = dim**0.5

    def tie(self, codebook) -> None:
        """Read the code vectors of ``codebook`` (a ``Codebook``; not a submodule, so not
        saved twice) as inputs and for the logits, without gradient into them."""
        if not self.code_dim:
            raise ValueError("a predictor with free tables (code_dim 0) cannot be tied")
        object.__setattr__(self, "_codebook", codebook)

    def _vectors(self) -> torch.Tensor:
        if self._codebook is None:
            raise ValueError(
                "this latent predictor reads the codebook (--latent-tied-codes): tie() it"
            )
        return self._codebook.weight.detach()  # (S, K, D)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> code logits (..., S, K): a free output table, or (tied)
        minus the squared distance per dimension of a predicted vector to every code, times
        a learned scale, plus a learned per-code bias. A near miss is then a near code."""
        out = self.output(h)
        if not self.code_dim:
            return out.reshape(*out.shape[:-1], self.num_slices, self.codebook_size)
        query = out.reshape(*out.shape[:-1], self.num_slices, self.code_dim).float()
        codes = self._vectors().float()
        closeness = 2 * torch.einsum("...sd,skd->...sk", query, codes)
        closeness = (closeness - codes.pow(2).sum(-1)) / self.code_dim
        return (closeness * self.log_scale.exp() + self.code_bias).to(out.dtype)

    def embed(self, codes: torch.Tensor, offset: int = 0, lengths=None) -> torch.Tensor:
        """Decoder inputs for ``codes`` (B, N, S) -> (B, N, C).

        With ``offset == 0``: teacher forcing, inputs [start, codes[:, :-1]]. With
        ``offset > 0``: one incremental step, the input at position ``offset`` is the
        embedding of the last code so far, ``codes[:, -1]``. ``lengths`` (B,): the target
        lengths T (EOS included) a length-conditioned predictor reads (``length_ratio``).
        """
        if offset > 0:
            x = self._code_inputs(codes[:, -1:])  # (B, 1, C)
        else:
            # The start symbol's row (the last) looked up, not sliced from the weight: the
            # same numbers either way, but a slice's gradient sums in another order, and the
            # recorded rows (and tests/test_learning.py's seed) reproduce only with the lookup.
            start = self.embed_codes(
                codes.new_full((codes.shape[0], 1), self.embed_codes.num_embeddings - 1)
            )
            x = torch.cat([start, self._code_inputs(codes[:, :-1])], dim=1)
        return self.position_inputs(x, offset, lengths)

    def position_inputs(self, x, offset: int, lengths) -> torch.Tensor:
        """Inputs (B, N, C) on the tables' scale -> the layers' inputs: scaled, plus the
        positions ``offset ..`` and (``length_ratio``) the length embedding, with dropout."""
        x = x * self.scale + self.positions[offset : offset + x.shape[1]].to(x.dtype)
        if self.length_ratio:
            x = x + self.length_embedding(lengths, offset, x.shape[1]).to(x.dtype)
        return self.dropout(x)

    def _code_inputs(self, codes) -> torch.Tensor:
        """(B, N, S) codes -> (B, N, C) inputs, summed over slices: rows of the free table
        (slice s: rows [s*K, (s+1)*K)), or (tied) the projected code vectors, on the table's
        scale."""
        slices = torch.arange(self.num_slices, device=codes.device)
        if not self.code_dim:
            return self.embed_codes(
                (codes + slices * self.codebook_size).clamp_min(0)
            ).sum(2)
        picked = self._vectors()[slices, codes.clamp_min(0)]  # (B, N, S, D)
        weight = self.embed_vectors.weight
        return self.embed_vectors(picked.to(weight.dtype)).sum(2) / self.scale

    def length_embedding(self, lengths, offset: int, steps: int) -> torch.Tensor:
        """(B, steps, C): what a length-conditioned predictor adds at latent positions
        ``offset ..``: embeddings of the latents still to come after each position, of
        ceil(T / 2^n_c), and of the last latent's fill, T - 2^n_c (ceil(T / 2^n_c) - 1)."""
        if lengths is None:
            raise ValueError(
                "this latent predictor is conditioned on the target length "
                "(--latent-length-condition): pass lengths"
            )
        ratio = self.length_ratio
        count = torch.div(lengths + ratio - 1, ratio, rounding_mode="floor")
        count = count.clamp(1, self.max_latents)  # (B,)
        fill = (lengths - (count - 1) * ratio).clamp(1, ratio) - 1  # (B,) in [0, ratio)
        position = torch.arange(offset, offset + steps, device=lengths.device)
        to_go = (count[:, None] - 1 - position[None]).clamp(0, self.max_latents - 1)
        return (self.embed_to_go(to_go) + self.embed_fill(fill)[:, None]) * self.scale

    def forward(
        self, x, encoder_out, padding_mask=None, incremental_state=None
    ) -> torch.Tensor:
        """Embedded inputs (B, N, C) -> logits (B, N, S, K)."""
        enc = encoder_out["encoder_out"][0]  # (S_src, B, C)
        enc_mask = source_padding_mask(encoder_out)
        length = x.shape[1]
        h = x.transpose(0, 1)  # (N, B, C)
        causal = None
        if incremental_state is None and self.autoregressive:
            causal = torch.triu(h.new_full((length, length), float("-inf")), diagonal=1)
        for layer in self.layers:
            h, _, _ = layer(
                h,
                enc,
                enc_mask,
                incremental_state=incremental_state,
                self_attn_mask=causal,
                self_attn_padding_mask=padding_mask
                if incremental_state is None
                else None,
            )
        if self.final_norm is not None:
            h = self.final_norm(h)
        return self.logits(h.transpose(0, 1))  # (B, N, S, K)

    def search(self, encoder_out, num_latents, beam_size=1, samples=0, lengths=None):
        """Candidate code sequences per sentence (``latent_search.search``)."""
        return search(self, encoder_out, num_latents, beam_size, samples, lengths)
