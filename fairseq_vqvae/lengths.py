"""Target lengths and latent counts of vqvae_nat: the length classifier and the padding helpers.

The classifier predicts T - |x| from the mean-pooled source encoding, as fairseq's NAT models
(``NATransformerDecoder.forward_length``); the paper's code uses T = 2|x| instead
(``--latent-length source``, Roy et al. 2018, https://arxiv.org/abs/1805.11063, section 5.1).
"""

import torch
import torch.nn.functional as F
from torch import nn

LENGTH_OFFSET = 128  # classes are T - |x| + 128, in [0, 256)


class LengthClassifier(nn.Linear):
    """(B, 256) logits over T - |x| + 128 (T counts EOS) from the pooled source encoding."""

    def __init__(self, dim: int):
        super().__init__(dim, 2 * LENGTH_OFFSET)

    def forward(self, encoder_out):
        enc = encoder_out["encoder_out"][0].transpose(0, 1)  # (B, S, C)
        mask = source_padding_mask(encoder_out)
        keep = torch.ones_like(enc[..., 0]) if mask is None else (~mask).to(enc.dtype)
        pooled = (enc * keep.unsqueeze(-1)).sum(1) / keep.sum(
            1, keepdim=True
        ).clamp_min(1)
        return super().forward(pooled)

    @staticmethod
    def classes(target_lengths, src_lengths):
        """The classes of target lengths T (the training targets)."""
        return (target_lengths - src_lengths + LENGTH_OFFSET).clamp(
            0, 2 * LENGTH_OFFSET - 1
        )

    @staticmethod
    def lengths(classes, src_lengths):
        """Target lengths T of classes (the inverse of ``classes``), at least 1."""
        return (src_lengths + classes - LENGTH_OFFSET).clamp_min(1)


def token_lengths(tokens, pad: int):
    """(B, L) right-padded targets -> (B,) lengths, tokens + EOS."""
    return tokens.ne(pad).sum(1)


def ceil_div(x, d):
    return torch.div(x + d - 1, d, rounding_mode="floor")


def padding_mask(lengths):
    """(B,) lengths -> (B, max) bool, True at padding."""
    positions = torch.arange(int(lengths.max()), device=lengths.device)
    return positions[None, :] >= lengths[:, None]


def pad_to(tokens, length: int, pad: int):
    """Tokens (B, L) cut or right-padded to (B, length)."""
    if tokens.shape[1] >= length:
        return tokens[:, :length]
    return F.pad(tokens, (0, length - tokens.shape[1]), value=pad)


def source_padding_mask(encoder_out):
    """The source padding mask (B, S) of a fairseq encoder output, or None (no padding)."""
    masks = encoder_out["encoder_padding_mask"]
    return masks[0] if masks else None
