"""vqvae_nat: non-autoregressive translation through an EM-trained discrete latent bottleneck.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1. Training: encode the source,
compress the target 2^n_c times and quantize it (VQBottleneck), decode every target token in
one pass from the up-sampled codes, and teach an autoregressive latent predictor the codes.
Inference (``VQVAENATGenerator``): predict the codes from the source, then decode in one pass.
"""

import logging

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.models.transformer import TransformerEncoderBase
from fairseq.modules import LayerNorm
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
from torch import nn

from . import quantize, register
from .bottleneck import VQBottleneck
from .checkpoint_checks import check_state_dict, signature
from .checks import check_precision, check_task
from .config import VQVAENATConfig, validate
from .errors import install_one_line_errors
from .latent import Compressor, Decompressor, sinusoidal_table
from .latent_search import check_search
from .lengths import LengthClassifier, ceil_div, source_padding_mask
from .parts import (
    bottleneck_config,
    build_latent_predictor,
    embedding,
    max_latents,
    transformer_config,
)
from .presets import apply_preset
from .stages import stage
from .training import VQVAENATTraining

logger = logging.getLogger(__name__)
install_one_line_errors()


@register_model("vqvae_nat")
class VQVAENATModel(VQVAENATTraining, BaseFairseqModel):
    """Source encoder + target autoencoder with a VQ bottleneck + latent predictor + decoder."""

    def __init__(self, cfg: VQVAENATConfig, encoder, embed_target, target_dictionary):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.embed_target = embed_target
        self.pad = target_dictionary.pad()
        self.eos = target_dictionary.eos()
        dim = cfg.encoder_embed_dim
        self.scale = dim**0.5
        self.ratio = 2**cfg.compress_steps
        self.max_latents = max_latents(cfg)
        layers_cfg = transformer_config(cfg)
        self.ae_layers = nn.ModuleList(
            TransformerDecoderLayerBase(layers_cfg) for _ in range(cfg.ae_layers)
        )
        self.compressor = Compressor(dim, cfg.compress_steps, cfg.dropout)
        self.bottleneck = VQBottleneck(bottleneck_config(cfg))
        self.decompressor = Decompressor(dim, cfg.compress_steps, cfg.dropout)
        self.decoder_layers = nn.ModuleList(
            TransformerDecoderLayerBase(layers_cfg) for _ in range(cfg.decoder_layers)
        )
        self.decoder_norm = None if cfg.post_norm else LayerNorm(dim)
        self.latent_predictor = build_latent_predictor(cfg)
        if cfg.latent_tied_codes:
            self.latent_predictor.tie(self.bottleneck.codebook)
        self.length_head = (
            LengthClassifier(dim) if cfg.latent_length == "predict" else None
        )
        self.register_buffer(
            "positions",
            sinusoidal_table(cfg.max_target_positions + 1, dim),
            persistent=False,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_updates = 0
        trained = self.trained_parts()
        if trained is not None:
            for name, param in self.named_parameters():
                if not name.startswith(trained):
                    param.requires_grad_(False)  # fairseq's optimizer leaves them out
        # checked when a checkpoint is loaded (checkpoint_checks.check_signature)
        self.register_buffer(
            "signature", signature(cfg, encoder.dictionary, target_dictionary)
        )

    @classmethod
    def add_args(cls, parser):
        # No argparse defaults, so that the architecture presets can fill them in. Registered
        # without ``dataclass=`` as fairseq's own ``transformer`` (transformer_legacy.py): with
        # it, fairseq fills every default before the architecture function runs, and a preset
        # could not tell an unset option from a default one. ``build_model`` turns the
        # namespace into the typed ``VQVAENATConfig`` (``from_namespace``) and validates it.
        gen_parser_from_dataclass(
            parser, VQVAENATConfig(), delete_default=True, with_prefix=""
        )

    @classmethod
    def build_model(cls, args, task):
        vqvae_nat(args)
        check_precision(args)
        cfg = VQVAENATConfig.from_namespace(args)
        validate(cfg)
        check_task(cfg, task)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        embed_source = embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad())
        embed_target = (
            embed_source
            if cfg.share_all_embeddings
            else embedding(len(tgt_dict), cfg.encoder_embed_dim, tgt_dict.pad())
        )
        encoder = TransformerEncoderBase(
            transformer_config(cfg), src_dict, embed_source
        )
        return cls(cfg, encoder, embed_target, tgt_dict)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path,
        checkpoint_file="model.pt",
        data_name_or_path=".",
        **kwargs,
    ):
        """fairseq's hub interface, batching by the model's positions rather than the
        training run's --max-tokens (which refused a sentence of 1,001 tokens at 1,000),
        unless ``max_tokens`` or ``batch_size`` is given here."""
        from omegaconf import open_dict

        register()  # the task and criterion its checkpoint names, for a model imported alone
        hub = super().from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, **kwargs
        )
        dataset = hub.cfg.dataset
        if "max_tokens" not in kwargs and "batch_size" not in kwargs:
            longest = max(hub.max_positions) if hub.max_positions else None
            if longest and (dataset.max_tokens or 0) < longest:
                with open_dict(hub.cfg):
                    dataset.max_tokens = longest
        return hub

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    # Shared by training and inference ------------------------------------------------------

    def decode(self, latents, latent_padding, encoder_out):
        """One parallel pass: latents (B, N, C) -> token logits (B, N * 2^n_c, V)."""
        with stage("decompressor"):
            h, token_padding = self.decoder_inputs(latents, latent_padding)
        with stage("decoder"):
            return self.decode_inputs(h, token_padding, encoder_out)

    def decoder_inputs(self, latents, latent_padding):
        """Decompressed latents (B, L, C) and the token padding mask (B, L), True at padding."""
        h = self.decompressor(latents, latent_padding)  # (B, L, C)
        return h, latent_padding.repeat_interleave(self.ratio, dim=1)

    def decode_inputs(self, h, token_padding, encoder_out):
        """The token decoder on its inputs (B, L, C) -> token logits (B, L, V)."""
        h = self.dropout(h + self.positions[: h.shape[1]].to(h.dtype)).transpose(
            0, 1
        )  # (L, B, C)
        enc, enc_mask = encoder_out["encoder_out"][0], source_padding_mask(encoder_out)
        for layer in self.decoder_layers:
            h, _, _ = layer(h, enc, enc_mask, self_attn_padding_mask=token_padding)
        if self.decoder_norm is not None:
            h = self.decoder_norm(h)
        return quantize.project(self, h.transpose(0, 1))

    def inference_lengths(self, encoder_out, src_lengths):
        """(B,) predicted target lengths T (EOS included), or None without a length head."""
        if self.length_head is None:
            return None
        classes = self.length_head(encoder_out).argmax(-1)
        return self.length_head.lengths(classes, src_lengths)

    def inference_latent_counts(self, encoder_out, src_lengths, lengths=None):
        """Latents per example at inference: predicted length (``lengths`` when the caller has
        them from ``inference_lengths``), or ceil(ratio * |x|)."""
        if lengths is None:
            lengths = self.inference_lengths(encoder_out, src_lengths)
        if lengths is None:
            lengths = self._source_target_lengths(src_lengths)
        counts = ceil_div(lengths, self.ratio)
        if bool((counts > self.max_latents).any()):
            logger.warning(
                "a sentence needs %d latents but --max-target-positions %d allows %d; its "
                "translation is truncated",
                int(counts.max()),
                self.cfg.max_target_positions,
                self.max_latents,
            )
        return counts.clamp(1, self.max_latents)

    # The decoding interface: what VQVAENATGenerator calls ------------------------------------

    def encode(self, src_tokens, src_lengths):
        """The source encoding: fairseq's ``encoder_out`` dictionary ((S, B, C) inside)."""
        return self.encoder(src_tokens, src_lengths=src_lengths)

    def reorder_encoder_out(self, encoder_out, order):
        """``encoder_out`` with its sentences in ``order`` (C,) (repeats allowed)."""
        return self.encoder.reorder_encoder_out(encoder_out, order)

    @property
    def length_classes(self) -> int | None:
        """The length classifier's number of classes; None without one."""
        return None if self.length_head is None else self.length_head.out_features

    def length_candidates(self, encoder_out, src_lengths, beam: int = 1):
        """(lengths T (B, beam), their log-probabilities (B, beam)): the length classifier's
        ``beam`` best (``beam`` 1: its best, with 0), or (None, zeros (B, 1)) without one."""
        no_prior = torch.zeros(src_lengths.shape[0], 1, device=src_lengths.device)
        if self.length_head is None:
            return None, no_prior
        if beam == 1:
            return self.inference_lengths(encoder_out, src_lengths)[:, None], no_prior
        logp = self.length_head(encoder_out).float().log_softmax(-1)
        prior, classes = logp.topk(beam, dim=-1)
        return self.length_head.lengths(classes, src_lengths[:, None]), prior

    def check_search(self, beam_size: int) -> None:
        """Refuse a latent beam the latent predictor cannot search."""
        check_search(self.latent_predictor, beam_size)

    def predict_codes(
        self, encoder_out, num_latents, beam_size=1, samples=0, lengths=None
    ):
        """The latent predictor's candidate codes (B, W, N, S) and their log-probabilities
        (B, W), W = beam_size + samples (``latent_search.search``)."""
        return self.latent_predictor.search(
            encoder_out, num_latents, beam_size, samples, lengths=lengths
        )

    def decode_codes(self, codes, latent_padding, encoder_out):
        """Codes (B, N, S) -> token logits (B, N * 2^n_c, V): look-up, then ``decode``."""
        with stage("decompressor"):
            latents = self.bottleneck.lookup(codes).to(
                encoder_out["encoder_out"][0].dtype
            )
        return self.decode(latents, latent_padding, encoder_out)

    def _source_target_lengths(self, src_lengths):
        return torch.ceil(src_lengths.float() * self.cfg.length_ratio).long()

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_state_dict(self, state_dict)
        return super().load_state_dict(
            state_dict, strict=strict, model_cfg=model_cfg, args=args
        )


@register_model_architecture("vqvae_nat", "vqvae_nat")
def vqvae_nat(args):
    apply_preset(args, "vqvae_nat")


@register_model_architecture("vqvae_nat", "vqvae_nat_base")
def vqvae_nat_base(args):
    apply_preset(args, "vqvae_nat")


@register_model_architecture("vqvae_nat", "vqvae_nat_small")
def vqvae_nat_small(args):
    apply_preset(args, "vqvae_nat_small")


@register_model_architecture("vqvae_nat", "vqvae_nat_tiny")
def vqvae_nat_tiny(args):
    apply_preset(args, "vqvae_nat_tiny")
