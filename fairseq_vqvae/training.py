"""vqvae_nat's training: the named loss terms of one forward pass (``VQVAENATTraining``).

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1: encode the source, compress
and quantize the target, decode every target token in one pass from the up-sampled codes, and
teach the latent predictor the codes; beyond the paper, the ``curriculum``.
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from . import curriculum, quantize
from .errors import OptionError
from .lengths import ceil_div, pad_to, padding_mask, source_padding_mask, token_lengths
from .parts import trained_parts


class VQVAENATTraining:
    """The training half of ``VQVAENATModel`` (a mixin: it reads the model's parts and
    ``cfg``); ``forward`` returns the loss terms the ``vqvae_em`` criterion sums."""

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
        lengths = token_lengths(tgt_tokens, self.pad)
        predictor_source = scaled_gradient(encoder_out, self.cfg.latent_encoder_grad)
        with torch.no_grad() if self.cfg.token_decoder_only else nullcontext():
            latent_logits, latent_mask = self._predictor_pass(
                codes, lengths, predictor_source, latent_padding
            )  # (B, N, S, K), (B, N)
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
                    "mask": latent_mask,  # real latents (glanced ones left out)
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

    def _predictor_pass(self, codes, lengths, encoder_out, latent_padding):
        """The latent predictor's training logits (B, N, S, K) and the latents its loss reads
        (B, N). The parallel kind: one pass, glancing at gold codes (``glancing_pass``). The
        autoregressive kind reads ``codes`` (B, N, S) (teacher forcing), or with
        --latent-self-inputs P each latent, with probability P, its own best code from a first
        teacher-forced pass without gradient (two-pass scheduled sampling), so that it learns
        to go on from a prefix with its own mistakes."""
        ratio, lp = self.cfg.latent_self_inputs, self.latent_predictor
        if not lp.autoregressive:
            return lp.glancing_pass(codes, encoder_out, latent_padding, lengths)
        if ratio > 0 and self.training and lp.training:
            with torch.no_grad():
                first = lp(
                    lp.embed(codes, lengths=lengths), encoder_out, latent_padding
                )
            replace = torch.rand(codes.shape[:2], device=codes.device) < ratio
            replace &= ~latent_padding
            codes = torch.where(replace.unsqueeze(-1), first.argmax(-1), codes)
        logits = lp(lp.embed(codes, lengths=lengths), encoder_out, latent_padding)
        return logits, ~latent_padding

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


def scaled_gradient(encoder_out, scale: float):
    """``encoder_out`` whose encoding passes the gradient back times ``scale`` (1: as is;
    0: none, the value unchanged)."""
    if scale >= 1:
        return encoder_out
    x = encoder_out["encoder_out"][0]
    scaled = x.detach() if scale <= 0 else x.detach() + scale * (x - x.detach())
    return {**encoder_out, "encoder_out": [scaled]}
