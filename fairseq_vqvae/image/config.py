"""Configuration dataclasses of the CIFAR-10 VQ-VAE, and the argparse built from them.

Every option is declared once, here, with its help text; ``add_arguments`` turns a dataclass
into command-line flags (``code_dim`` -> ``--code-dim``) and ``from_args`` turns them back.
"""

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field

from ..bottleneck import BOTTLENECKS, INITS, BottleneckConfig

__all__ = [
    "LIKELIHOODS",
    "EvaluateConfig",
    "ImageVQVAEConfig",
    "PriorConfig",
    "TrainConfig",
    "add_arguments",
    "from_args",
]

LIKELIHOODS = ("logistic_mixture", "categorical")


def _opt(default, help: str, **extra):
    """A dataclass field with argparse metadata (``help``, optional ``choices``/``required``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ImageVQVAEConfig:
    """The convolutional VQ-VAE and its bottleneck (van den Oord et al. 2017, section 4.1)."""

    bottleneck: str = _opt(
        "hard_em",
        "vqvae (codebook loss), hard_em (EMA K-means) or soft_em (MC soft EM)",
        choices=BOTTLENECKS,
    )
    codebook_size: int = _opt(
        512, "K, codes per slice"
    )  # van den Oord et al. CIFAR-10: 512
    code_dim: int = _opt(64, "dimension of a latent vector")  # van den Oord et al.: 64
    num_slices: int = _opt(1, "decomposed-VQ slices; 1 = plain VQ (paper)")
    hidden_channels: int = _opt(
        64, "channels of the conv stacks"
    )  # van den Oord et al.: 256
    residual_channels: int = _opt(32, "bottleneck channels inside a residual block")
    num_residual_blocks: int = _opt(
        2, "residual blocks in encoder and decoder"
    )  # vdO: 2
    num_downsamples: int = _opt(
        2, "stride-2 convs; 2 gives an 8x8 latent grid for 32x32"
    )
    # Paper: 0.999 over ~1M steps; with a few thousand updates 0.999 would leave the
    # codebook mostly at its initialisation, so short runs use 0.99.
    decay: float = _opt(0.99, "EMA decay in [0, 1); used by hard_em and soft_em")
    epsilon: float = _opt(1e-5, "Laplace smoothing of EMA counts")  # tensor2tensor
    commitment_weight: float = _opt(
        0.25, "beta of the commitment loss"
    )  # paper section 2.1
    num_samples: int = _opt(10, "m, samples per latent; soft_em only")  # paper Table 1
    temperature: float = _opt(1.0, "soft_em sampling temperature (paper: 1)")
    dead_code_threshold: float = _opt(
        0.0, "restart codes used less than this per update; 0 = off (paper)"
    )
    codebook_init: str = _opt(
        "uniform",
        "how the codes start: uniform (paper's code) or data (K encoder outputs of the "
        "first update, drawn at random)",
        choices=tuple(INITS),
    )
    latent_norm: str = _opt(
        "batch",
        "normalisation of the encoder output: batch (per-channel BatchNorm without affine, "
        "so latents start spread out instead of all near one point) or none",
        choices=("batch", "none"),
    )
    likelihood: str = _opt(
        "logistic_mixture",
        "per-pixel discretized logistic mixture (PixelCNN++) or 256-way categorical "
        "per sub-pixel (tensor2tensor)",
        choices=LIKELIHOODS,
    )
    num_mixtures: int = _opt(5, "logistic components per pixel; logistic_mixture only")

    def bottleneck_config(self) -> BottleneckConfig:
        """The shared bottleneck's options (no projection: input_dim = code_dim)."""
        return BottleneckConfig(
            bottleneck=self.bottleneck,
            codebook_size=self.codebook_size,
            code_dim=self.code_dim,
            num_slices=self.num_slices,
            decay=self.decay,
            epsilon=self.epsilon,
            commitment_weight=self.commitment_weight,
            num_samples=self.num_samples,
            temperature=self.temperature,
            dead_code_threshold=self.dead_code_threshold,
            codebook_init=self.codebook_init,
        )


@dataclass
class TrainConfig:
    """Optimisation, data and output options of ``fairseq_vqvae.image.train``."""

    data: str = _opt(
        "", "CIFAR-10 folder (cifar-10-batches-py or its parent)", required=True
    )
    save_dir: str = _opt(
        "", "output folder: checkpoints, metrics.json, PNGs", required=True
    )
    max_updates: int = _opt(
        2000, "optimizer updates in total (resume continues to this)"
    )
    batch_size: int = _opt(32, "images per update")
    lr: float = _opt(1e-3, "Adam learning rate")
    codebook_lr_scale: float = _opt(
        1.0, "learning-rate multiplier of the gradient-trained codebook; vqvae only"
    )
    seed: int = _opt(1, "seed of initialisation, data order and soft-EM sampling")
    device: str = _opt("cpu", "torch device, e.g. cpu or cuda")
    threads: int = _opt(0, "torch CPU threads; 0 = torch default")
    log_interval: int = _opt(50, "updates between log lines / history entries")
    save_interval: int = _opt(500, "updates between checkpoints (one also at the end)")
    eval_batch_size: int = _opt(250, "images per evaluation batch")
    max_train_images: int = _opt(0, "use only the first N training images; 0 = all")
    max_eval_images: int = _opt(0, "evaluate on the first N test images; 0 = all")
    resume: bool = _opt(True, "continue from save_dir/checkpoint_last.pt if it exists")
    progress: bool = _opt(True, "show a tqdm progress bar")


@dataclass
class PriorConfig:
    """The causal transformer prior over the latent grid and its training."""

    prior_layers: int = _opt(2, "transformer layers")
    prior_dim: int = _opt(64, "model width")
    prior_heads: int = _opt(4, "attention heads")
    prior_dropout: float = _opt(0.1, "dropout (4,000 training images overfit fast)")
    prior_updates: int = _opt(1000, "optimizer updates")
    prior_batch_size: int = _opt(32, "code grids per update")
    prior_lr: float = _opt(1e-3, "Adam learning rate (cosine decay to 0)")


@dataclass
class EvaluateConfig(PriorConfig):
    """Options of ``fairseq_vqvae.image.evaluate``: test metrics, prior, samples."""

    checkpoint: str = _opt("", "VQ-VAE checkpoint (checkpoint_last.pt)", required=True)
    data: str = _opt(
        "", "CIFAR-10 folder (cifar-10-batches-py or its parent)", required=True
    )
    out_dir: str = _opt("", "output folder; empty = the checkpoint's folder")
    num_sample_images: int = _opt(64, "images to sample from the prior")
    seed: int = _opt(1, "seed of prior initialisation, data order and sampling")
    device: str = _opt("cpu", "torch device")
    threads: int = _opt(0, "torch CPU threads; 0 = torch default")
    eval_batch_size: int = _opt(250, "images per evaluation batch")
    max_train_images: int = _opt(0, "train the prior on the first N images; 0 = all")
    max_eval_images: int = _opt(0, "evaluate on the first N test images; 0 = all")
    reuse_prior: bool = _opt(False, "load out_dir/prior.pt instead of training a prior")
    progress: bool = _opt(True, "show a tqdm progress bar")


def _argument_type(annotation):
    """``int``/``float``/``str``/``bool`` from a field annotation (also ``X | None``)."""
    if (
        isinstance(annotation, types.UnionType)
        or typing.get_origin(annotation) is typing.Union
    ):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


# Integer options are counts: >= 0 (0 means "none" or "all" where the help says so), and >= 1
# for these, where 0 has no meaning.
_AT_LEAST_ONE = {
    "codebook_size",
    "code_dim",
    "num_slices",
    "hidden_channels",
    "residual_channels",
    "num_downsamples",
    "max_updates",
    "batch_size",
    "log_interval",
    "save_interval",
    "eval_batch_size",
    "prior_layers",
    "prior_dim",
    "prior_heads",
    "prior_updates",
    "prior_batch_size",
}


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def add_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Add one ``--kebab-case`` flag per field of ``config_class`` to ``parser``."""
    group = parser.add_argument_group(config_class.__name__)
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        kind = _argument_type(f.type)
        if kind is int:
            kind = _at_least(1 if f.name in _AT_LEAST_ONE else 0)
        meta = dict(f.metadata)
        help_text = meta.pop("help", "")
        if kind is bool:
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=help_text,
            )
            continue
        if meta.get("required"):
            group.add_argument(flag, type=kind, help=help_text, **meta)
        else:
            group.add_argument(
                flag,
                type=kind,
                default=f.default,
                help=f"{help_text} (default: {f.default})",
                **meta,
            )


def from_args(config_class: type, args: argparse.Namespace):
    """Build ``config_class`` from the parsed flags that ``add_arguments`` declared."""
    names = [f.name for f in dataclasses.fields(config_class)]
    return config_class(**{name: getattr(args, name) for name in names})
