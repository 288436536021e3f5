"""VQVAENATGenerator: codes from the latent predictor, then every token in one parallel pass.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1: greedy decoding of the
ceil(T / 2^n_c) latent codes (T from the length classifier, or the paper's 2|x|), codebook
look-up, one decoder pass, then the end of the sentence (``--gen-eos``, below). No reference
length is ever used (except by the ``--gen-oracle-latents`` diagnostic).
Returns fairseq's hypothesis format, so fairseq-generate, fairseq-interactive, the hub
interface and --eval-bleu all work unchanged.
"""

import logging

import torch

logger = logging.getLogger(__name__)

# Where the sentence ends (--gen-eos). In training a target of T tokens (EOS included) is
# compressed into N = ceil(T / 2^n_c) latents, so its EOS always lies in the last latent's
# 2^n_c positions and the positions after it are padding (no loss).
EOS_POLICIES = {
    "first": "cut at the first position whose best token is EOS, anywhere (the paper's rule)",
    "last-latent": "EOS only inside the last latent's 2^n_c positions, at its most likely one there",
    "length": "exactly the predicted length T (needs --latent-length predict)",
}


class VQVAENATGenerator:
    """Generator for ``vqvae_nat`` models.

    Args:
        tgt_dict: target dictionary (for EOS/PAD and the symbols never to emit).
        latent_beam: beam size over latent codes (1 = greedy, the paper's choice).
        oracle_latents: diagnostic; decode the references' own codes and lengths.
        eos: where the sentence ends, one of ``EOS_POLICIES``.
        dedup: drop a token equal to the one before it (a one-pass decoder's typical error).
    """

    def __init__(
        self,
        tgt_dict,
        latent_beam: int = 1,
        oracle_latents: bool = False,
        eos: str = "first",
        dedup: bool = False,
    ):
        if latent_beam < 1:
            raise ValueError(f"--gen-latent-beam must be >= 1, got {latent_beam}")
        if eos not in EOS_POLICIES:
            raise ValueError(f"--gen-eos must be one of {', '.join(EOS_POLICIES)}, got {eos!r}")
        self.eos_policy = eos
        self.dedup = dedup
        self.oracle_latents = oracle_latents
        self.tgt_dict = tgt_dict
        self.eos = tgt_dict.eos()
        self.pad = tgt_dict.pad()
        self.banned = [tgt_dict.pad(), tgt_dict.bos()]
        self.latent_beam = latent_beam
        self._warned_greedy = False

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
        src_lengths = sample["net_input"]["src_lengths"]
        encoder_out = model.encoder(sample["net_input"]["src_tokens"], src_lengths=src_lengths)
        codes, latent_mask, target_lengths = self.latent_codes(model, sample, encoder_out)
        latents = model.bottleneck.lookup(codes).to(encoder_out["encoder_out"][0].dtype)
        logits = model.decode(latents, latent_mask, encoder_out)  # (B, L, V)
        logits[..., self.banned] = float("-inf")
        lprobs = logits.float().log_softmax(-1)  # (B, L, V)
        eos_scores = lprobs[..., self.eos].clone()  # (B, L)
        lengths = (~latent_mask).sum(1) * model.ratio  # decoded positions per sentence
        ends = self.sentence_ends(lprobs, lengths, model.ratio, target_lengths)  # (B,)
        lprobs[..., self.eos] = float("-inf")  # EOS goes at the end only
        scores, tokens = lprobs.max(-1)  # (B, L)
        empty = src_lengths <= 1  # only EOS: an empty input line
        if bool(empty.any()):
            logger.warning(
                "%d input sentence(s) are empty; their translations are empty", int(empty.sum())
            )
            ends = ends.masked_fill(empty, 0)
        return [
            [self._hypothesis(tokens[i], scores[i], eos_scores[i], int(ends[i]), int(lengths[i]))]
            for i in range(tokens.shape[0])
        ]

    def latent_codes(self, model, sample, encoder_out):
        """(codes (B, N, S), latent padding mask (B, N), target lengths T (B,) or None):
        predicted, or the references' own with --gen-oracle-latents."""
        if self.oracle_latents:
            return self.oracle_codes(model, sample, encoder_out)
        src_lengths = sample["net_input"]["src_lengths"]
        target_lengths = model.inference_lengths(encoder_out, src_lengths)  # (B,) or None
        num_latents = model.inference_latent_counts(encoder_out, src_lengths, target_lengths)
        codes = self.predict_codes(model, encoder_out, num_latents)  # (B, N, S)
        positions = torch.arange(codes.shape[1], device=codes.device)[None]  # (1, N)
        return codes, positions >= num_latents[:, None], target_lengths

    def sentence_ends(self, lprobs, lengths, ratio, target_lengths):
        """Index of each sentence's EOS among its decoded positions (== length: none found).

        Args:
            lprobs: (B, L, V) log-probabilities of the one decoder pass.
            lengths: (B,) decoded positions (latents * 2^n_c) per sentence.
            ratio: 2^n_c, positions per latent.
            target_lengths: (B,) predicted (or oracle) lengths T, EOS included, or None.
        """
        positions = torch.arange(lprobs.shape[1], device=lprobs.device)[None]  # (1, L)
        inside = positions < lengths[:, None]  # (B, L)
        if self.eos_policy == "first":
            is_eos = lprobs.argmax(-1).eq(self.eos) & inside
            return torch.where(is_eos, positions, lengths[:, None]).min(1).values
        if self.eos_policy == "length":
            if target_lengths is None:
                raise ValueError(
                    "--gen-eos length needs a model trained with --latent-length predict; use "
                    "--gen-eos last-latent or first"
                )
            return torch.minimum(target_lengths, lengths).clamp_min(1) - 1
        window = inside & (positions >= lengths[:, None] - ratio)  # the last latent's positions
        return lprobs[..., self.eos].masked_fill(~window, float("-inf")).argmax(1)

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
        return vq.codes, latent_mask, target.ne(model.pad).sum(1)

    def predict_codes(self, model, encoder_out, num_latents):
        predictor = model.latent_predictor
        batch_size = num_latents.shape[0]
        if self.latent_beam == 1 or batch_size != 1:
            if self.latent_beam > 1 and not self._warned_greedy:
                self._warned_greedy = True  # once per generator, not once per batch
                logger.warning("latent beam search runs at --batch-size 1 only; using greedy")
            device = num_latents.device
            return predictor.greedy(encoder_out, int(num_latents.max()), batch_size, device)
        return predictor.beam(encoder_out, int(num_latents.max()), self.latent_beam)

    def _hypothesis(self, tokens, scores, eos_scores, end, length):
        """Tokens before ``end``, then EOS (fairseq hypotheses end with EOS).

        Args:
            tokens, scores: (L,) best non-EOS token per position and its log-probability.
            eos_scores: (L,) log-probability of EOS per position.
            end: EOS position; ``length`` (no EOS decoded) gives EOS a score of 0.
            length: positions decoded for this sentence.
        """
        tokens, scores = tokens[:end], scores[:end]
        if self.dedup and end > 1:
            keep = torch.cat([tokens.new_ones(1, dtype=torch.bool), tokens[1:] != tokens[:-1]])
            tokens, scores = tokens[keep], scores[keep]
        eos_score = eos_scores[end : end + 1] if end < length else scores.new_zeros(1)
        positional = torch.cat([scores, eos_score])
        tokens = torch.cat([tokens, tokens.new_full((1,), self.eos)])
        return {
            "tokens": tokens,
            "score": positional.mean(),
            "positional_scores": positional,
            "attention": None,
            "alignment": None,
            "steps": 0,
        }
