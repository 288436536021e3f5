"""The parts of a vqvae_nat model built from its configuration: ``build_model`` turns a
``VQVAENATConfig`` into their constructor arguments here, and nowhere else; and the parts a
single-part training stage trains (``trained_parts``).
"""

import argparse

from fairseq.models.transformer import TransformerConfig
from torch import nn

from .bottleneck import BottleneckConfig
from .config import VQVAENATConfig
from .latent import LatentPredictor
from .parallel_latent import ParallelLatentPredictor


def build_latent_predictor(cfg: VQVAENATConfig) -> LatentPredictor:
    """A freshly initialised latent predictor for a model of configuration ``cfg`` (also what
    scripts/fresh_latent_predictor.py puts into a trained model): autoregressive, or with
    --latent-predictor-kind parallel a ``ParallelLatentPredictor``."""
    args = (
        transformer_config(cfg, dropout=cfg.latent_predictor_dropout),
        cfg.latent_layers,
        cfg.num_slices,
        cfg.codebook_size,
        max_latents(cfg),
    )
    kwargs = dict(
        length_ratio=2**cfg.compress_steps if cfg.latent_length_condition else 0,
        code_dim=(cfg.code_dim or cfg.encoder_embed_dim) // cfg.num_slices
        if cfg.latent_tied_codes
        else 0,
    )
    if cfg.latent_predictor_kind == "parallel":
        return ParallelLatentPredictor(
            *args, glance_ratio=cfg.latent_glance_ratio, **kwargs
        )
    return LatentPredictor(*args, **kwargs)


def max_latents(cfg: VQVAENATConfig) -> int:
    """The longest latent sequence: the longest target compressed 2^n_c times."""
    return cfg.max_target_positions // 2**cfg.compress_steps


def transformer_config(cfg: VQVAENATConfig, dropout=None) -> TransformerConfig:
    """fairseq's layer config from ours; ``dropout`` (None: --dropout) for one module's layers."""
    dim = cfg.encoder_embed_dim
    ns = argparse.Namespace(
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=cfg.encoder_ffn_embed_dim,
        encoder_layers=cfg.encoder_layers,
        encoder_attention_heads=cfg.encoder_attention_heads,
        encoder_normalize_before=not cfg.post_norm,
        decoder_embed_dim=dim,
        decoder_ffn_embed_dim=cfg.decoder_ffn_embed_dim,
        decoder_layers=cfg.decoder_layers,
        decoder_attention_heads=cfg.encoder_attention_heads,
        decoder_normalize_before=not cfg.post_norm,
        decoder_output_dim=dim,
        decoder_input_dim=dim,
        dropout=cfg.dropout if dropout is None else dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        max_source_positions=cfg.max_source_positions,
        max_target_positions=cfg.max_target_positions,
        share_all_embeddings=cfg.share_all_embeddings,
    )
    return TransformerConfig.from_namespace(ns)


def bottleneck_config(cfg: VQVAENATConfig) -> BottleneckConfig:
    return BottleneckConfig(
        bottleneck=str(cfg.bottleneck),
        codebook_size=cfg.codebook_size,
        code_dim=cfg.code_dim or cfg.encoder_embed_dim,
        input_dim=cfg.encoder_embed_dim,
        num_slices=cfg.num_slices,
        decay=cfg.codebook_decay,
        epsilon=cfg.codebook_epsilon,
        commitment_weight=cfg.commitment_weight,
        num_samples=cfg.num_samples,
        temperature=cfg.soft_em_temperature,
        dead_code_threshold=cfg.dead_code_threshold,
        restart_grace=cfg.restart_grace_updates,
        codebook_init=str(cfg.codebook_init),
    )


def embedding(num, dim, pad):
    emb = nn.Embedding(num, dim, padding_idx=pad)
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.constant_(emb.weight[pad], 0)
    return emb


# The parts each single-part training stage trains (model attribute names, as parameter-name
# prefixes); everything else is loaded and frozen, the codebook included.
STAGE_PARTS = {
    "latent_predictor_only": ("latent_predictor.",),
    "token_decoder_only": ("decompressor.", "decoder_layers.", "decoder_norm."),
}


def trained_parts(cfg) -> tuple[str, ...] | None:
    """Parameter-name prefixes of what this stage trains; None: everything (joint training)."""
    for name, parts in STAGE_PARTS.items():
        if getattr(cfg, name, False):
            return parts
    return None


def frozen_codebook(cfg) -> bool:
    """A stage that trains one part of a loaded model: its codebook must not move."""
    return trained_parts(cfg) is not None
