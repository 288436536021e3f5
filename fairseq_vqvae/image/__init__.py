"""CIFAR-10 VQ-VAE with an EM-trained bottleneck (plain torch, never imports fairseq).

Roy et al. 2018, "Theory and Experiments on Vector Quantized Autoencoders"
(https://arxiv.org/abs/1805.11063), arXiv v1 CIFAR-10 experiment; the architecture follows
van den Oord et al. 2017 (https://arxiv.org/abs/1711.00937), section 4.1.

Entry points: ``python -m fairseq_vqvae.image.train`` and ``python -m fairseq_vqvae.image.evaluate``.
"""

from .config import EvaluateConfig, ImageVQVAEConfig, PriorConfig, TrainConfig
from .data import CifarFormatError, load_cifar10
from .model import ImageVQVAE
from .prior import LatentPrior

__all__ = [
    "CifarFormatError",
    "EvaluateConfig",
    "ImageVQVAE",
    "ImageVQVAEConfig",
    "LatentPrior",
    "PriorConfig",
    "TrainConfig",
    "load_cifar10",
]
