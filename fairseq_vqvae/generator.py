"""VQVAENATGenerator: codes from the latent predictor, then every token in one parallel pass.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1: greedy decoding of the
ceil(T / 2^n_c) latent codes (T from the length classifier, or the paper's 2|x|), codebook
look-up, one decoder pass, output cut at the first EOS. No reference length is ever used.
Returns fairseq's hypothesis format, so fairseq-generate, fairseq-interactive, the hub
interface and --eval-bleu all work unchanged.
"""

import logging

import torch

logger = logging.getLogger(__name__)


class VQVAENATGenerator:
    """Generator for ``vqvae_nat`` models.

    Args:
        tgt_dict: target dictionary (for EOS/PAD and the symbols never to emit).
        latent_beam: beam size over latent codes (1 = greedy, the paper's choice).
    """

    def __init__(self, tgt_dict, latent_beam: int = 1, oracle_latents: bool = False):
        if latent_beam < 1:
            raise ValueError(f"--gen-latent-beam must be >= 1, got {latent_beam}")
        self.oracle_latents = oracle_latents
        self.tgt_dict = tgt_dict
        self.eos = tgt_dict.eos()
        self.pad = tgt_dict.pad()
        self.banned = [tgt_dict.pad(), tgt_dict.bos()]
        self.latent_beam = latent_beam

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **kwargs):
        """One hypothesis per sentence: ``[[{"tokens", "score", "positional_scores", ...}]]``."""
        if len(models) != 1:
            raise ValueError("vqvae_nat does not support ensembles yet: pass one --path")
        if prefix_tokens is not None or constraints is not None:
            raise ValueError(
                "vqvae_nat decodes all tokens at once: --prefix-size and constraints are not supported"
            )
        model = models[0]
        src_tokens = sample["net_input"]["src_tokens"]
        src_lengths = sample["net_input"]["src_lengths"]
        encoder_out = model.encoder(src_tokens, src_lengths=src_lengths)
        if self.oracle_latents:
            codes, latent_mask = self.oracle_codes(model, sample, encoder_out)
            num_latents = (~latent_mask).sum(1)
        else:
            num_latents = model.inference_latent_counts(encoder_out, src_lengths)  # (B,)
            codes = self.predict_codes(model, encoder_out, num_latents)  # (B, N, S)
            latent_mask = (
                torch.arange(codes.shape[1], device=codes.device)[None] >= num_latents[:, None]
            )
        latents = model.bottleneck.lookup(codes).to(encoder_out["encoder_out"][0].dtype)
        logits = model.decode(latents, latent_mask, encoder_out)  # (B, L, V)
        logits[..., self.banned] = float("-inf")
        lprobs = logits.float().log_softmax(-1)
        scores, tokens = lprobs.max(-1)  # (B, L)
        lengths = num_latents * model.ratio
        empty = src_lengths <= 1  # only EOS: an empty input line
        if bool(empty.any()):
            logger.warning(
                "%d input sentence(s) are empty; their translations are empty", int(empty.sum())
            )
        return [
            [self._hypothesis(tokens[i, : lengths[i]], scores[i, : lengths[i]], bool(empty[i]))]
            for i in range(tokens.shape[0])
        ]

    @staticmethod
    def oracle_codes(model, sample, encoder_out):
        """Diagnostic (--gen-oracle-latents): the codes the autoencoder gives the reference.

        Decoding them bounds what a perfect latent predictor (and length) would reach; the gap
        to predicted codes is the latent predictor's share of the BLEU lost.
        """
        target = sample.get("target")
        if target is None:
            raise ValueError(
                "--gen-oracle-latents decodes the references' own codes: it needs a test set "
                "with targets (fairseq-generate), not fairseq-interactive"
            )
        _, latent_mask, _, vq = model.autoencode(
            target, sample["net_input"]["src_lengths"], encoder_out
        )
        return vq.codes, latent_mask

    def predict_codes(self, model, encoder_out, num_latents):
        predictor = model.latent_predictor
        batch_size = num_latents.shape[0]
        if self.latent_beam == 1 or batch_size != 1:
            if self.latent_beam > 1:
                logger.warning("latent beam search runs at --batch-size 1 only; using greedy")
            device = num_latents.device
            return predictor.greedy(encoder_out, int(num_latents.max()), batch_size, device)
        return predictor.beam(encoder_out, int(num_latents.max()), self.latent_beam)

    def _hypothesis(self, tokens, scores, empty_input):
        """Cut at the first EOS (kept, as fairseq hypotheses end with EOS)."""
        if empty_input:
            tokens, scores = tokens[:0], scores[:0]
        eos = (tokens == self.eos).nonzero()
        end = int(eos[0]) if eos.numel() else tokens.shape[0]
        positional = torch.cat(
            [scores[:end], scores.new_zeros(1) if end == tokens.shape[0] else scores[end : end + 1]]
        )
        tokens = torch.cat([tokens[:end], tokens.new_full((1,), self.eos)])
        return {
            "tokens": tokens,
            "score": positional.mean(),
            "positional_scores": positional,
            "attention": None,
            "alignment": None,
            "steps": 0,
        }
