"""vqvae_nat: non-autoregressive translation through an EM-trained discrete latent bottleneck.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1. Training: encode the source,
compress the target 2^n_c times and quantize it (VQBottleneck), decode every target token in
one pass from the up-sampled codes, and teach an autoregressive latent predictor the codes.
Inference (``VQVAENATGenerator``): predict the codes from the source, then decode in one pass.
"""

import argparse
import logging
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerEncoderBase
from fairseq.modules import LayerNorm
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
from torch import nn

from . import curriculum, quantize, register
from .bottleneck import BottleneckConfig, VQBottleneck
from .checks import (
    check_precision,
    check_state_dict,
    check_task,
    signature,
)
from .config import VQVAENATConfig, trained_parts, validate
from .errors import OptionError, install_one_line_errors
from .latent import (
    Compressor,
    Decompressor,
    LatentPredictor,
    sinusoidal_table,
)
from .latent_search import check_search
from .lengths import (
    LengthClassifier,
    ceil_div,
    pad_to,
    padding_mask,
    source_padding_mask,
    token_lengths,
)
from .presets import apply_preset
from .stages import stage

logger = logging.getLogger(__name__)
install_one_line_errors()


@register_model("vqvae_nat")
class VQVAENATModel(BaseFairseqModel):
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
        layers_cfg = _transformer_config(cfg)
        self.ae_layers = nn.ModuleList(
            TransformerDecoderLayerBase(layers_cfg) for _ in range(cfg.ae_layers)
        )
        self.compressor = Compressor(dim, cfg.compress_steps, cfg.dropout)
        self.bottleneck = VQBottleneck(_bottleneck_config(cfg))
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
        # checked when a checkpoint is loaded (checks.check_signature)
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
        embed_source = _embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad())
        embed_target = (
            embed_source
            if cfg.share_all_embeddings
            else _embedding(len(tgt_dict), cfg.encoder_embed_dim, tgt_dict.pad())
        )
        encoder = TransformerEncoderBase(
            _transformer_config(cfg), src_dict, embed_source
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

    def trained_parts(self) -> tuple[str, ...] | None:
        """Parameter-name prefixes of what this stage trains; None: everything (joint)."""
        return trained_parts(self.cfg)

    def train(self, mode: bool = True):
        """In a single-part stage (--latent-predictor-only, --token-decoder-only) every other
        part stays in evaluation mode: no dropout in the E-step, no EM statistics, nearest
        codes, a deterministic predictor."""
        if mode and quantize.is_int8(self):
            raise OptionError(
                "this model was quantized for inference (--gen-int8): train the checkpoint, "
                "not its int8 form"
            )
        super().train(mode)
        trained = self.trained_parts()
        if mode and trained is not None:
            for name, child in self.named_children():
                if name + "." not in trained:
                    child.train(False)
        return self

    @property
    def trains_autoencoder(self) -> bool:
        """In joint training: not in a single-part stage."""
        return self.training and self.trained_parts() is None

    @property
    def trains_decoder(self) -> bool:
        """In joint training and in the token-decoder stage (--token-decoder-only)."""
        return self.training and not self.cfg.latent_predictor_only

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    # Training -------------------------------------------------------------------------------

    def forward(
        self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None
    ):
        """Named loss terms for the ``vqvae_em`` criterion (prev_output_tokens is unused)."""
        if tgt_tokens is None:
            raise OptionError(
                "vqvae_nat trains with --criterion vqvae_em, which passes it the target tokens "
                "(tgt_tokens=...); other criteria cannot train it"
            )
        # A single-part stage measures the frozen parts without building their graph.
        frozen = torch.no_grad() if self.trained_parts() is not None else nullcontext()
        with frozen:
            encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
            target, latent_padding, z, vq = self.autoencode(
                tgt_tokens, src_lengths, encoder_out
            )
        codes, code_targets = self.predictor_targets(
            vq, target, latent_padding, encoder_out
        )
        lp = self.latent_predictor
        lengths = token_lengths(tgt_tokens, self.pad)
        predictor_source = scaled_gradient(encoder_out, self.cfg.latent_encoder_grad)
        with torch.no_grad() if self.cfg.token_decoder_only else nullcontext():
            inputs = self._predictor_inputs(
                codes, lengths, predictor_source, latent_padding
            )
            latent_logits = lp(
                lp.embed(inputs, lengths=lengths), predictor_source, latent_padding
            )  # (B, N, S, K)
        self._em_stats = vq.em_stats
        terms = {}
        # Training the predictor alone, the frozen decoder's word loss would only be logged:
        # it is left out there (two thirds of the stage's time), and measured on validation.
        if not (self.training and self.cfg.latent_predictor_only):
            with nullcontext() if self.trains_decoder else frozen:
                terms["word_ins"] = self._word_term(
                    vq, z, latent_logits, latent_padding, target, encoder_out
                )
        terms.update(
            {
                "latent": {
                    "out": latent_logits,
                    "tgt": code_targets,
                    "codes": codes,  # nearest codes, for latent_acc
                    "training_codes": vq.codes,  # the decoder's (training-mode) codes
                    "mask": ~latent_padding,
                    "label_smoothing": self.cfg.latent_label_smoothing,
                    "factor": self.cfg.latent_loss_factor
                    * curriculum.step_on(
                        self.num_updates, self.cfg.latent_loss_start_update
                    ),
                },
                "commit": {"loss": vq.commit_loss + vq.codebook_loss, "factor": 1.0},
            }
        )
        if self.cfg.prior_commitment_weight > 0 and self.trains_autoencoder:
            terms["prior_commit"] = {
                "loss": self.bottleneck.prior_commitment(
                    z, latent_logits, latent_padding
                ),
                "factor": self.cfg.prior_commitment_weight,
            }
        if self.length_head is not None:
            lengths = token_lengths(tgt_tokens, self.pad)
            terms["length"] = {
                "out": self.length_head(encoder_out),
                "tgt": self.length_head.classes(lengths, src_lengths),
                "factor": self.cfg.length_loss_factor,
            }
        extra = {
            "vq_stats": vq.stats,
            "codes": vq.codes,
            "latent_padding": latent_padding,
        }
        return terms, extra

    def _predictor_inputs(self, codes, lengths, encoder_out, latent_padding):
        """The codes the predictor reads in training (B, N, S): the targets' own (teacher
        forcing), or with --latent-self-inputs P each latent, with probability P, its own
        best code from a first teacher-forced pass without gradient (two-pass scheduled
        sampling), so that it learns to go on from a prefix with its own mistakes."""
        ratio = self.cfg.latent_self_inputs
        lp = self.latent_predictor
        if not (ratio > 0 and self.training and lp.training):
            return codes
        with torch.no_grad():
            first = lp(lp.embed(codes, lengths=lengths), encoder_out, latent_padding)
            own = first.argmax(-1)  # (B, N, S)
        replace = torch.rand(codes.shape[:2], device=codes.device) < ratio
        replace &= ~latent_padding
        return torch.where(replace.unsqueeze(-1), own, codes)

    def predictor_targets(self, vq, target, latent_padding, encoder_out):
        """The latent predictor's input codes (B, N, S) and targets (B, N, S, K): the
        bottleneck's training-mode codes and responsibilities, or with
        --latent-clean-targets (in joint training) the nearest codes of a gradient-free pass
        of the compressor and bottleneck in evaluation mode, what evaluation and
        --gen-oracle-latents give the same target."""
        if not (self.cfg.latent_clean_targets and self.trains_autoencoder):
            return vq.codes, vq.soft_targets
        parts = [self.compressor, self.bottleneck, self.ae_layers, self.dropout]
        modes = [part.training for part in parts]
        try:
            for part in parts:
                part.train(False)
            with torch.no_grad():
                z = self.compressor(
                    self.embed_for_compression(target, encoder_out),
                    target.eq(self.pad),
                )
                codes = self.bottleneck(z, latent_padding).codes
        finally:
            for part, mode in zip(parts, modes):
                part.train(mode)
        return codes, F.one_hot(codes, self.cfg.codebook_size).to(vq.soft_targets)

    def _word_term(self, vq, z, latent_logits, latent_padding, target, encoder_out):
        """The decoder's token loss term: one pass over the training latents (glancing at
        gold tokens where the curriculum says so)."""
        latents = self._training_latents(
            vq.quantized,
            z,
            latent_logits,
            latent_padding,
            encoder_out,
            token_lengths(target, self.pad),
        )
        h, token_padding = self.decoder_inputs(latents, latent_padding)
        glanced = self._glance(h, token_padding, target, encoder_out)  # or None
        word_mask = target.ne(self.pad)
        if glanced is not None:
            gold = self.embed_target(target) * self.scale
            h = torch.where(glanced.unsqueeze(-1), gold.to(h.dtype), h)
            word_mask &= ~glanced
        return {
            "out": self.decode_inputs(h, token_padding, encoder_out),  # (B, L, V)
            "tgt": target,
            "mask": word_mask,
            "label_smoothing": True,
            "factor": 1.0,
        }

    def _training_latents(
        self, quantized, continuous, latent_logits, latent_padding, encoder_out, lengths
    ):
        """What the decoder reads in training: the quantized latents, mixed with continuous
        ones during the bottleneck warm-up and with predicted codes' vectors under scheduled
        sampling of codes (``curriculum``); as they are in evaluation. The token-decoder
        stage samples the predictor's greedy codes, as the generator decodes them."""
        cfg = self.cfg
        if self.training and cfg.token_decoder_only:
            if cfg.predicted_latent_ratio <= 0:
                return quantized
            with torch.no_grad():
                codes, _ = self.latent_predictor.search(
                    encoder_out,
                    (~latent_padding).sum(1),
                    lengths=lengths,
                )  # (B, 1, N, S)
                predicted = self.bottleneck.lookup(codes[:, 0])
            return curriculum.mix_predicted(
                quantized, predicted, latent_padding, cfg.predicted_latent_ratio
            )
        if not self.trains_autoencoder:
            return quantized
        latents = curriculum.warmup_mix(
            quantized, continuous, self.num_updates, cfg.bottleneck_warmup_updates
        )
        if cfg.predicted_latent_ratio > 0:
            predicted = self.bottleneck.lookup(latent_logits.detach().argmax(-1))
            latents = curriculum.mix_predicted(
                latents, predicted, latent_padding, cfg.predicted_latent_ratio
            )
        return latents

    def autoencode(self, tgt_tokens, src_lengths, encoder_out):
        """Compress and quantize the target: (padded target (B, L), latent padding mask
        (B, N), continuous latents z (B, N, C), the bottleneck's VQOutput)."""
        lengths = token_lengths(tgt_tokens, self.pad)  # (B,) tokens + EOS
        num_latents = self.training_latent_counts(lengths, src_lengths)  # (B,)
        target = pad_to(
            tgt_tokens, int(num_latents.max()) * self.ratio, self.pad
        )  # (B, L)
        latent_padding = padding_mask(num_latents)  # (B, N) True at padding
        z = self.compressor(
            self.embed_for_compression(target, encoder_out), target.eq(self.pad)
        )  # (B, N, C)
        return target, latent_padding, z, self.bottleneck(z, latent_padding)

    def pop_em_statistics(self):
        """The EM statistics of the last training forward (None after eval/vqvae), once."""
        stats, self._em_stats = getattr(self, "_em_stats", None), None
        return stats

    def training_latent_counts(self, target_lengths, src_lengths):
        """Latents per example in training: ceil(T / 2^n_c), or the paper's max(T, 2|x|)."""
        lengths = target_lengths
        if self.cfg.latent_length == "source":
            lengths = torch.maximum(lengths, self._source_target_lengths(src_lengths))
        return ceil_div(lengths, self.ratio).clamp(1, self.max_latents)

    def embed_for_compression(self, target, encoder_out):
        """Target embeddings, zero at padding (t2t), optionally attending to the source."""
        x = self.embed_target(target) * self.scale * target.ne(self.pad).unsqueeze(-1)
        if not self.ae_layers:
            return x
        mask = target.eq(self.pad)
        h = self.dropout(x + self.positions[: x.shape[1]].to(x.dtype)).transpose(0, 1)
        for layer in self.ae_layers:
            h, _, _ = layer(
                h,
                encoder_out["encoder_out"][0],
                source_padding_mask(encoder_out),
                self_attn_padding_mask=mask,
            )
        return h.transpose(0, 1) * target.ne(self.pad).unsqueeze(-1)

    def glance_ratio(self) -> float:
        """GLAT's sampling ratio at this update (``curriculum.glance_ratio``)."""
        cfg = self.cfg
        return curriculum.glance_ratio(
            cfg.glance_ratio,
            cfg.glance_ratio_end,
            cfg.glance_anneal_updates,
            self.num_updates,
        )

    def _glance(self, h, token_padding, target, encoder_out):
        """Glancing (GLAT, beyond the paper): the (B, L) positions that read the reference
        token's embedding, from a first decoder pass without gradient; None when off or in
        evaluation (``curriculum.glance_positions``)."""
        ratio = self.glance_ratio() if self.trains_decoder else 0.0
        if ratio <= 0:
            return None
        with torch.no_grad():
            predicted = self.decode_inputs(h, token_padding, encoder_out).argmax(-1)
        return curriculum.glance_positions(predicted, target, self.pad, ratio)

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


def scaled_gradient(encoder_out, scale: float):
    """``encoder_out`` whose encoding passes the gradient back times ``scale`` (1: as is;
    0: none, the value unchanged)."""
    if scale >= 1:
        return encoder_out
    x = encoder_out["encoder_out"][0]
    scaled = x.detach() if scale <= 0 else x.detach() + scale * (x - x.detach())
    return {**encoder_out, "encoder_out": [scaled]}


def build_latent_predictor(cfg: VQVAENATConfig) -> LatentPredictor:
    """A freshly initialised latent predictor for a model of configuration ``cfg`` (also what
    scripts/fresh_latent_predictor.py puts into a trained model)."""
    return LatentPredictor(
        _transformer_config(cfg, dropout=cfg.latent_predictor_dropout),
        cfg.latent_layers,
        cfg.num_slices,
        cfg.codebook_size,
        max_latents(cfg),
        length_ratio=2**cfg.compress_steps if cfg.latent_length_condition else 0,
        code_dim=(cfg.code_dim or cfg.encoder_embed_dim) // cfg.num_slices
        if cfg.latent_tied_codes
        else 0,
    )


def max_latents(cfg: VQVAENATConfig) -> int:
    """The longest latent sequence: the longest target compressed 2^n_c times."""
    return cfg.max_target_positions // 2**cfg.compress_steps


def _transformer_config(cfg: VQVAENATConfig, dropout=None) -> TransformerConfig:
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


def _bottleneck_config(cfg: VQVAENATConfig) -> BottleneckConfig:
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


def _embedding(num, dim, pad):
    emb = nn.Embedding(num, dim, padding_idx=pad)
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.constant_(emb.weight[pad], 0)
    return emb


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
