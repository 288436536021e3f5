"""Discrete bottleneck library (plain torch, no fairseq): VQ-VAE, hard EM and soft EM.

Roy et al. 2018, https://arxiv.org/abs/1805.11063. Used by the translation model and by
``fairseq_vqvae.image``.
"""

from . import em
from .codebook import Codebook
from .quantizer import (
    BOTTLENECKS,
    BottleneckConfig,
    EMStatistics,
    VQBottleneck,
    VQOutput,
)
from .restarts import INITS

__all__ = [
    "BOTTLENECKS",
    "BottleneckConfig",
    "Codebook",
    "INITS",
    "EMStatistics",
    "VQBottleneck",
    "VQOutput",
    "em",
]
