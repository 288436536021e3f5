"""vqvae_nat: non-autoregressive translation through an EM-trained discrete latent bottleneck.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1. Training: encode the source,
compress the target 2^n_c times and quantize it (VQBottleneck), decode every target token in
one pass from the up-sampled codes, and teach an autoregressive latent predictor the codes.
Inference (``VQVAENATGenerator``): predict the codes from the source, then decode in one pass.
"""

import argparse
import logging

import torch
import torch.nn.functional as F
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerEncoderBase
from fairseq.modules import LayerNorm
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
from torch import nn

from .bottleneck import BottleneckConfig, VQBottleneck, em
from .config import VQVAENATConfig, validate
from .errors import OptionError, install_one_line_errors
from .latent import (
    Compressor,
    Decompressor,
    LatentPredictor,
    sinusoidal_table,
    source_padding_mask,
)

logger = logging.getLogger(__name__)
install_one_line_errors()

LENGTH_OFFSET = 128  # length classes predict T - |x| + 128, as fairseq's NAT models


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
        self.max_latents = cfg.max_target_positions // self.ratio
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
        self.latent_predictor = LatentPredictor(
            layers_cfg,
            cfg.latent_layers,
            cfg.num_slices,
            cfg.codebook_size,
            self.max_latents,
        )
        self.length_head = (
            nn.Linear(dim, 2 * LENGTH_OFFSET)
            if cfg.latent_length == "predict"
            else None
        )
        self.register_buffer(
            "positions",
            sinusoidal_table(cfg.max_target_positions + 1, dim),
            persistent=False,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_updates = 0

    @classmethod
    def add_args(cls, parser):
        # No argparse defaults, so that the architecture presets can fill them in.
        gen_parser_from_dataclass(
            parser, VQVAENATConfig(), delete_default=True, with_prefix=""
        )

    @classmethod
    def build_model(cls, args, task):
        vqvae_nat(args)
        _check_precision(args)
        cfg = VQVAENATConfig.from_namespace(args)
        _validate(cfg, task)
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
        """fairseq's hub loader, plus: keyword options of the ``translation_vqvae`` task (e.g.
        ``gen_dedup=True``) take effect on checkpoints trained before the task had them.

        fairseq applies keyword overrides only to options a checkpoint saved, and drops the
        others without a word; ``fairseq-generate`` is not affected (it builds the task from
        the command line).
        """
        from omegaconf import open_dict

        from .task import TranslationVQVAENATConfig

        hub = super().from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, **kwargs
        )
        task_options = TranslationVQVAENATConfig.__dataclass_fields__
        with open_dict(hub.task.cfg):
            for key, value in kwargs.items():
                if key in task_options and key in hub.task.cfg:
                    hub.task.cfg[key] = value
        return hub

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
            raise ValueError(
                "vqvae_nat trains with --criterion vqvae_em, which passes it the target tokens "
                "(tgt_tokens=...); other criteria cannot train it"
            )
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
        target_lengths = tgt_tokens.ne(self.pad).sum(1)  # (B,) tokens + EOS
        target, latent_mask, z, vq = self.autoencode(
            tgt_tokens, src_lengths, encoder_out
        )
        lp = self.latent_predictor
        latent_logits = lp(lp.embed(vq.codes), encoder_out, latent_mask)  # (B, N, S, K)
        latents = self._warmup_mix(vq.quantized, z)
        latents = self._mix_predicted(latents, latent_logits, latent_mask)
        h, token_mask = self.decoder_inputs(latents, latent_mask)
        glanced = self._glance(
            h, token_mask, target, encoder_out
        )  # (B, L) bool or None
        if glanced is not None:
            gold = self.embed_target(target) * self.scale
            h = torch.where(glanced.unsqueeze(-1), gold.to(h.dtype), h)
        word_logits = self.decode_inputs(h, token_mask, encoder_out)  # (B, L, V)
        word_mask = (
            target.ne(self.pad) if glanced is None else target.ne(self.pad) & ~glanced
        )
        self._em_stats = vq.em_stats
        latent_factor = self.cfg.latent_loss_factor * em.step_on(
            self.num_updates, self.cfg.latent_loss_start_update
        )
        terms = {
            "word_ins": {
                "out": word_logits,
                "tgt": target,
                "mask": word_mask,
                "label_smoothing": True,
                "factor": 1.0,
            },
            "latent": {
                "out": latent_logits,
                "tgt": vq.soft_targets,
                "codes": vq.codes,  # nearest codes, for latent_acc
                "mask": ~latent_mask,
                "factor": latent_factor,
            },
            "commit": {"loss": vq.commit_loss + vq.codebook_loss, "factor": 1.0},
        }
        if self.length_head is not None:
            terms["length"] = {
                "out": self.length_logits(encoder_out),
                "tgt": self.length_classes(target_lengths, src_lengths),
                "factor": self.cfg.length_loss_factor,
            }
        extra = {"vq_stats": vq.stats, "codes": vq.codes, "latent_mask": latent_mask}
        return terms, extra

    def autoencode(self, tgt_tokens, src_lengths, encoder_out):
        """Compress and quantize the target: (padded target (B, L), latent padding mask
        (B, N), continuous latents z (B, N, C), the bottleneck's VQOutput)."""
        target_lengths = tgt_tokens.ne(self.pad).sum(1)  # (B,) tokens + EOS
        num_latents = self.training_latent_counts(target_lengths, src_lengths)  # (B,)
        target = _pad_to(
            tgt_tokens, int(num_latents.max()) * self.ratio, self.pad
        )  # (B, L)
        latent_mask = _length_mask(num_latents)  # (B, N) True at padding
        z = self.compressor(
            self.embed_for_compression(target, encoder_out), target.eq(self.pad)
        )  # (B, N, C)
        return target, latent_mask, z, self.bottleneck(z, latent_mask)

    def pop_em_statistics(self):
        """The EM statistics of the last training forward (None after eval/vqvae), once."""
        stats, self._em_stats = getattr(self, "_em_stats", None), None
        return stats

    def training_latent_counts(self, target_lengths, src_lengths):
        """Latents per example in training: ceil(T / 2^n_c), or the paper's max(T, 2|x|)."""
        lengths = target_lengths
        if self.cfg.latent_length == "source":
            lengths = torch.maximum(lengths, self._source_target_lengths(src_lengths))
        return _ceil_div(lengths, self.ratio).clamp(1, self.max_latents)

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
        """GLAT's sampling ratio at this update: --glance-ratio annealed linearly to
        --glance-ratio-end over --glance-anneal-updates (constant when that is 0)."""
        start, end, span = (
            self.cfg.glance_ratio,
            self.cfg.glance_ratio_end,
            self.cfg.glance_anneal_updates,
        )
        if span <= 0:
            return start
        return start + (end - start) * min(1.0, self.num_updates / span)

    def _glance(self, h, token_mask, target, encoder_out):
        """Glancing (GLAT, Qian et al. 2021, beyond the paper): a first decoder pass without
        gradient counts each sentence's wrong tokens; ratio x wrong of its real positions,
        chosen at random, get the reference token's embedding as decoder input, and the loss
        is taken on the other positions only. Returns the (B, L) glanced positions, or None
        (off, or in evaluation)."""
        ratio = self.glance_ratio() if self.training else 0.0
        if ratio <= 0:
            return None
        real = target.ne(self.pad)
        with torch.no_grad():
            predicted = self.decode_inputs(h, token_mask, encoder_out).argmax(-1)
            wrong = (predicted.ne(target) & real).sum(1)  # (B,)
            count = (wrong.float() * ratio).long()  # GLAT rounds down
            scores = torch.rand(target.shape, device=target.device).masked_fill(
                ~real, 2.0
            )
            rank = scores.argsort(1).argsort(
                1
            )  # a random order of the real positions first
        return rank < count.unsqueeze(1)

    def _mix_predicted(self, latents, latent_logits, latent_mask):
        """Scheduled sampling of codes (CNAT / latent-GLAT, beyond the paper): in training,
        each real latent position takes, with probability --predicted-latent-ratio, the
        vector of the latent predictor's teacher-forced best code instead of the target's,
        so that the decoder learns to translate from predicted codes as at inference."""
        ratio = self.cfg.predicted_latent_ratio if self.training else 0.0
        if ratio <= 0:
            return latents
        predicted = self.bottleneck.lookup(
            latent_logits.detach().argmax(-1)
        )  # (B, N, C)
        chosen = torch.rand(latent_mask.shape, device=latents.device) < ratio
        chosen = (chosen & ~latent_mask).unsqueeze(-1)
        return torch.where(chosen, predicted.to(latents.dtype), latents)

    def _warmup_mix(self, quantized, continuous):
        """Bottleneck warm-up: per example, quantized with probability p(t), else continuous."""
        if not self.training or self.cfg.bottleneck_warmup_updates <= 0:
            return quantized
        p = em.inverse_exp_decay(self.num_updates, self.cfg.bottleneck_warmup_updates)
        use_quantized = (
            torch.rand(quantized.shape[0], 1, 1, device=quantized.device) < p
        )
        return torch.where(use_quantized, quantized, continuous)

    # Shared by training and inference ------------------------------------------------------

    def decode(self, latents, latent_mask, encoder_out):
        """One parallel pass: latents (B, N, C) -> token logits (B, N * 2^n_c, V)."""
        return self.decode_inputs(
            *self.decoder_inputs(latents, latent_mask), encoder_out
        )

    def decoder_inputs(self, latents, latent_mask):
        """Decompressed latents (B, L, C) and the token padding mask (B, L), True at padding."""
        h = self.decompressor(latents, latent_mask)  # (B, L, C)
        return h, latent_mask.repeat_interleave(self.ratio, dim=1)

    def decode_inputs(self, h, token_mask, encoder_out):
        """The token decoder on its inputs (B, L, C) -> token logits (B, L, V)."""
        h = self.dropout(h + self.positions[: h.shape[1]].to(h.dtype)).transpose(
            0, 1
        )  # (L, B, C)
        enc, enc_mask = encoder_out["encoder_out"][0], source_padding_mask(encoder_out)
        for layer in self.decoder_layers:
            h, _, _ = layer(h, enc, enc_mask, self_attn_padding_mask=token_mask)
        if self.decoder_norm is not None:
            h = self.decoder_norm(h)
        return F.linear(h.transpose(0, 1), self.embed_target.weight)

    def length_logits(self, encoder_out):
        """(B, 256) logits over T - |x| + 128 from the mean-pooled source encoding."""
        enc = encoder_out["encoder_out"][0].transpose(0, 1)  # (B, S, C)
        mask = source_padding_mask(encoder_out)
        keep = torch.ones_like(enc[..., 0]) if mask is None else (~mask).to(enc.dtype)
        pooled = (enc * keep.unsqueeze(-1)).sum(1) / keep.sum(
            1, keepdim=True
        ).clamp_min(1)
        return self.length_head(pooled)

    def length_classes(self, target_lengths, src_lengths):
        return (target_lengths - src_lengths + LENGTH_OFFSET).clamp(
            0, 2 * LENGTH_OFFSET - 1
        )

    def inference_lengths(self, encoder_out, src_lengths):
        """(B,) predicted target lengths T (EOS included), or None without a length head."""
        if self.length_head is None:
            return None
        return self.class_lengths(
            self.length_logits(encoder_out).argmax(-1), src_lengths
        )

    def class_lengths(self, classes, src_lengths):
        """Target lengths T of length classes (inverse of ``length_classes``)."""
        return (src_lengths + classes - LENGTH_OFFSET).clamp_min(1)

    def inference_latent_counts(self, encoder_out, src_lengths, lengths=None):
        """Latents per example at inference: predicted length (``lengths`` when the caller has
        them from ``inference_lengths``), or ceil(ratio * |x|)."""
        if lengths is None:
            lengths = self.inference_lengths(encoder_out, src_lengths)
        if lengths is None:
            lengths = self._source_target_lengths(src_lengths)
        counts = _ceil_div(lengths, self.ratio)
        if bool((counts > self.max_latents).any()):
            logger.warning(
                "a sentence needs %d latents but --max-target-positions %d allows %d; its "
                "translation is truncated",
                int(counts.max()),
                self.cfg.max_target_positions,
                self.max_latents,
            )
        return counts.clamp(1, self.max_latents)

    def _source_target_lengths(self, src_lengths):
        return torch.ceil(src_lengths.float() * self.cfg.length_ratio).long()

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        _check_compatible(self, state_dict)
        return super().load_state_dict(
            state_dict, strict=strict, model_cfg=model_cfg, args=args
        )


def _check_compatible(model, state_dict):
    if "bottleneck.codebook.weight" not in state_dict:
        raise OptionError(
            "this checkpoint is not a vqvae_nat model (it has no bottleneck.codebook.weight); "
            "load it with the task and --arch it was trained with"
        )
    for key in (
        "bottleneck.codebook.weight",
        "bottleneck.codebook.ema_counts",
        "bottleneck.codebook.ema_sums",
    ):
        if key in state_dict and not bool(torch.isfinite(state_dict[key]).all()):
            raise OptionError(
                f"this checkpoint's codebook is not finite ({key} holds NaN or inf): the run "
                f"diverged before it was saved; load or resume from an earlier checkpoint"
            )
    ours = model.state_dict()
    for key, what in (
        ("encoder.embed_tokens.weight", "source"),
        ("embed_target.weight", "target"),
    ):
        if key not in state_dict or key not in ours:
            continue
        theirs = state_dict[key].shape
        if ours[key].shape != theirs:
            raise OptionError(
                f"dictionary mismatch: the checkpoint's {what} dictionary has {theirs[0]} "
                f"symbols, the data's has {ours[key].shape[0]}; binarize the data with the checkpoint's "
                f"dictionaries (fairseq-preprocess --srcdict/--tgtdict, or --joined-dictionary)"
            )


def _check_precision(args):
    """fairseq's --fp16 and --bf16 fail deep inside fairseq under --cpu (a CUDA assertion, an
    XLA attribute error); say what works instead, before they are reached."""
    if not getattr(args, "cpu", False):
        return
    for name in ("fp16", "memory_efficient_fp16", "bf16", "memory_efficient_bf16"):
        if getattr(args, name, False):
            flag = "--" + name.replace("_", "-")
            raise OptionError(
                f"{flag} needs a GPU ({flag} with --cpu fails inside fairseq); on a CPU, "
                f"drop {flag} and train in mixed precision with --bf16-autocast"
            )


def _validate(cfg, task):
    from .task import TranslationVQVAENATTask

    if not isinstance(task, TranslationVQVAENATTask):
        # Another task would train an EM codebook that never updates (the M-step runs in this
        # task's optimizer_step) and could not decode the codes.
        raise OptionError(
            f"--arch vqvae_nat needs --task translation_vqvae (it applies the codebook's EM "
            f"updates and decodes the latent codes); got a {type(task).__name__}"
        )
    validate(cfg)
    ratio = 2**cfg.compress_steps
    if ratio > cfg.max_target_positions:
        raise OptionError(
            f"--compress-steps {cfg.compress_steps} compresses 2^{cfg.compress_steps} = {ratio} "
            f"tokens into one latent, more than --max-target-positions {cfg.max_target_positions}; "
            f"lower --compress-steps or raise --max-target-positions"
        )
    if cfg.share_all_embeddings and task.source_dictionary != task.target_dictionary:
        raise OptionError(
            "--share-all-embeddings needs a joined dictionary (fairseq-preprocess --joined-dictionary)"
        )
    code_dim = cfg.code_dim or cfg.encoder_embed_dim
    if code_dim % cfg.num_slices:
        raise OptionError(
            f"--code-dim ({code_dim}) must be divisible by --num-slices ({cfg.num_slices})"
        )


def _transformer_config(cfg: VQVAENATConfig) -> TransformerConfig:
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
        dropout=cfg.dropout,
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
    )


def _embedding(num, dim, pad):
    emb = nn.Embedding(num, dim, padding_idx=pad)
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.constant_(emb.weight[pad], 0)
    return emb


def _ceil_div(x, d):
    return torch.div(x + d - 1, d, rounding_mode="floor")


def _length_mask(lengths):
    """(B,) lengths -> (B, max) bool, True at padding."""
    return (
        torch.arange(int(lengths.max()), device=lengths.device)[None, :]
        >= lengths[:, None]
    )


def _pad_to(tokens, length, pad):
    if tokens.shape[1] >= length:
        return tokens[:, :length]
    return F.pad(tokens, (0, length - tokens.shape[1]), value=pad)


# Architecture presets. Each fills only what the user did not set on the command line.

_PRESETS = {
    "vqvae_nat": {},  # the paper's base model (d=512, 6 layers per stack, K=2^12, n_c=3)
    "vqvae_nat_small": dict(  # Multi30k on a 2-core CPU
        encoder_embed_dim=256,
        encoder_ffn_embed_dim=1024,
        decoder_ffn_embed_dim=1024,
        encoder_layers=3,
        decoder_layers=3,
        latent_layers=2,
        codebook_size=1024,
        # A few thousand updates: the paper's 0.999 (a 1000-update memory) would lag; plain
        # EMA collapses onto a few codes here (examples/bottleneck_demo), so restart them.
        codebook_decay=0.99,
        dead_code_threshold=0.01,
        # The recipe ablations' best variant (examples/multi30k/ablations, 2026-12-02): dropout
        # 0.1 and glancing 0.5 -> 0.3 over 1,000 updates (with --warmup-updates 200 on the command
        # line) reached validation BLEU 19.56 at 1,000 updates against 16.24 for the study's
        # recipe (dropout 0.3, no glancing). Attention and activation dropout cost a fifth of a
        # CPU update (Bernoulli sampling) for no gain at this size.
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        glance_ratio=0.5,
        glance_ratio_end=0.3,
        glance_anneal_updates=1000,
    ),
    "vqvae_nat_tiny": dict(  # tests and the README demo
        encoder_embed_dim=64,
        encoder_ffn_embed_dim=128,
        decoder_ffn_embed_dim=128,
        encoder_layers=2,
        decoder_layers=2,
        latent_layers=1,
        encoder_attention_heads=4,
        codebook_size=64,
        codebook_decay=0.99,
        dead_code_threshold=0.05,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
    ),
}


def _apply_preset(args, name):
    preset = _PRESETS[name]
    legacy = getattr(
        args, "normalize_before", None
    )  # checkpoints from before --post-norm
    if getattr(args, "post_norm", None) is None and legacy is not None:
        args.post_norm = not legacy
    for fld in VQVAENATConfig.__dataclass_fields__.values():
        if getattr(args, fld.name, None) is None:
            default = preset.get(fld.name, fld.default)
            if isinstance(default, str) and default.startswith("${"):
                continue  # interpolations such as max_target_positions come from the task
            setattr(args, fld.name, default)


@register_model_architecture("vqvae_nat", "vqvae_nat")
def vqvae_nat(args):
    _apply_preset(args, "vqvae_nat")


@register_model_architecture("vqvae_nat", "vqvae_nat_base")
def vqvae_nat_base(args):
    _apply_preset(args, "vqvae_nat")


@register_model_architecture("vqvae_nat", "vqvae_nat_small")
def vqvae_nat_small(args):
    _apply_preset(args, "vqvae_nat_small")


@register_model_architecture("vqvae_nat", "vqvae_nat_tiny")
def vqvae_nat_tiny(args):
    _apply_preset(args, "vqvae_nat_tiny")


# Importing the model alone (``from fairseq_vqvae.model import VQVAENATModel``, then
# ``from_pretrained(..., user_dir=...)``) must register the task and criterion its checkpoints
# name too: fairseq skips the user_dir import when fairseq_vqvae is already imported.
from . import criterion as _criterion  # noqa: E402,F401
from . import task as _task  # noqa: E402,F401
