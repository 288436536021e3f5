"""The parallel latent predictor (``--latent-predictor-kind parallel``): every latent's codes
in one pass from the source, trained with glancing over codes.

latent-GLAT (Bao et al. 2022, https://arxiv.org/abs/2204.02030, section 3; its code:
baoy-nlp/Latent-GLAT, ``latent_glat.py``) predicts its codes non-autoregressively, glancing
as GLAT does over tokens (Qian et al. 2021, https://arxiv.org/abs/2008.07905, section 3.1).
Beyond Roy et al. 2018, whose predictor is autoregressive (``latent.LatentPredictor``).
Shapes are batch-first (B, N, ...) unless noted.
"""

import torch

from . import curriculum
from .latent import LatentPredictor
from .latent_search import check_search
from .lengths import padding_mask

__all__ = ["ParallelLatentPredictor"]


class ParallelLatentPredictor(LatentPredictor):
    """``LatentPredictor``'s layers, tables and output without the causal mask, and no
    parameter of its own (an autoregressive predictor's state dict loads into it).

    The input at every latent position is the learned mask embedding (the autoregressive
    predictor's start-symbol row of ``embed_codes``), plus the sinusoidal position and, when
    length-conditioned, the length embedding; self-attention sees every real latent of the
    sentence (padding masked), so a sentence's logits do not depend on its batch's padding.

    Args:
        *args, **kwargs: as ``LatentPredictor``.
        glance_ratio: ``--latent-glance-ratio`` in [0, 1]: in training, this share of a first
            pass's wrong latents read their gold code (``glancing_pass``); 0 = no glancing.
    """

    autoregressive = False

    def __init__(self, *args, glance_ratio: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.glance_ratio = glance_ratio

    def embed(self, codes, offset: int = 0, lengths=None, revealed=None):
        """Inputs (B, N, C) of one pass over N = ``codes.shape[1]`` latents: the mask
        embedding everywhere, except, where ``revealed`` (B, N) is True (glancing), the
        embedding of the gold ``codes`` (B, N, S); ``codes`` are read only there.

        Raises:
            ValueError: for ``offset`` > 0 (an incremental step: there are none).
        """
        if offset:
            raise ValueError("the parallel latent predictor has no incremental steps")
        batch, length = codes.shape[:2]
        x = self.embed_codes.weight[-1].expand(batch, length, -1)  # (B, N, C)
        if revealed is not None:
            gold = self._code_inputs(codes).to(x.dtype)
            x = torch.where(revealed.unsqueeze(-1), gold, x)
        return self.position_inputs(x, 0, lengths)

    def forward(self, x, encoder_out, padding_mask=None, incremental_state=None):
        """Embedded inputs (B, N, C) -> logits (B, N, S, K), every position in one call."""
        if incremental_state is not None:
            raise ValueError("the parallel latent predictor has no incremental state")
        return super().forward(x, encoder_out, padding_mask)

    def glancing_pass(self, codes, encoder_out, padding, lengths=None):
        """The training pass: logits (B, N, S, K) and the latents the loss reads (B, N).

        In training with ``glance_ratio`` > 0 (latent-GLAT): a first pass without gradient
        predicts every code; of a sentence's real latents, ratio x (those wrong in any slice
        against ``codes`` (B, N, S)), rounded down, chosen at random
        (``curriculum.glance_among``), read their gold code in the second pass and are left
        out of the loss, as latent-GLAT leaves them. Otherwise one pass, every real latent.
        """
        real = ~padding  # (B, N)
        revealed = None
        if self.training and self.glance_ratio > 0:
            with torch.no_grad():
                first = self(self.embed(codes, lengths=lengths), encoder_out, padding)
            wrong = first.argmax(-1).ne(codes).any(-1) & real  # (B, N)
            revealed = curriculum.glance_among(wrong, real, self.glance_ratio)
            real = real & ~revealed
        x = self.embed(codes, lengths=lengths, revealed=revealed)
        return self(x, encoder_out, padding), real

    @torch.no_grad()
    def search(self, encoder_out, num_latents, beam_size=1, samples=0, lengths=None):
        """Candidate codes in one pass: each position's best codes, then ``samples``
        candidates drawn at every position and slice independently.

        Args and returns as ``latent_search.search`` (``encoder_out``'s rows: each sentence
        repeated 1 + ``samples`` times; ``lengths`` per row); ``beam_size`` must be 1.
        """
        check_search(self, beam_size)
        width = beam_size + samples
        padding = padding_mask(num_latents.repeat_interleave(width))  # (B W, N)
        rows, length = padding.shape
        codes = padding.new_zeros((rows, length, self.num_slices), dtype=torch.long)
        x = self.embed(codes, lengths=lengths)
        logp = self(x, encoder_out, padding).float().log_softmax(-1)  # (B W, N, S, K)
        logp = logp.view(num_latents.shape[0], width, *logp.shape[1:])
        codes = logp.argmax(-1)  # (B, W, N, S)
        if samples:
            drawn = torch.multinomial(logp[:, 1:].exp().reshape(-1, logp.shape[-1]), 1)
            codes[:, 1:] = drawn.view(codes[:, 1:].shape)
        real = ~padding.view(codes.shape[:3])  # (B, W, N)
        codes = codes * real.unsqueeze(
            -1
        )  # codes after a sentence's count: 0, as search's
        picked = logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)  # (B, W, N)
        return codes, (picked * real).sum(-1)
