"""VQVAENATGenerator: codes from the latent predictor, then every token in one parallel pass.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1: greedy decoding of the
ceil(T / 2^n_c) latent codes (T from the length classifier, or the paper's 2|x|), codebook
look-up, one decoder pass, then the end of the sentence (``--gen-eos``, below). No reference
length is ever used (except by the ``--gen-oracle-latents`` diagnostic).

Beyond the paper, a search over latents (noisy parallel decoding, Gu et al. 2018; LaNMT's
latent search): candidates from several lengths (``--gen-length-beam``), a beam over codes
(``--gen-latent-beam``) and codes sampled from the predictor (``--gen-latent-samples``) are all
decoded in one batched pass, then ranked (``--gen-rescore``, ``RESCORERS``).
Returns fairseq's hypothesis format, best first, so fairseq-generate (``--nbest``),
fairseq-interactive, the hub interface and --eval-bleu all work unchanged.
"""

import logging
from typing import NamedTuple

import torch

from .errors import OptionError
from .lengths import token_lengths
from .stages import STAGES, stage  # noqa: F401  (STAGES: read from here by scripts/bench)

logger = logging.getLogger(__name__)

# Where the sentence ends (--gen-eos). In training a target of T tokens (EOS included) is
# compressed into N = ceil(T / 2^n_c) latents, so its EOS always lies in the last latent's
# 2^n_c positions and the positions after it are padding (no loss).
# Refusals shared by check_models (when the generator is built) and the decoding steps.
LENGTH_BEAM_NEEDS_A_LENGTH_HEAD = (
    "--gen-length-beam needs a model trained with --latent-length predict (this one decodes "
    "the paper's fixed ratio x source length)"
)
EOS_LENGTH_NEEDS_A_LENGTH_HEAD = (
    "--gen-eos length needs a model trained with --latent-length predict; use --gen-eos "
    "last-latent or first"
)
EOS_POLICIES = {
    "first": "cut at the first position whose best token is EOS, anywhere (the paper's rule)",
    "last-latent": "EOS only inside the last latent's 2^n_c positions, at its most likely one there",
    "length": "exactly the predicted length T (needs --latent-length predict)",
}


# How candidates are ranked (--gen-rescore); a hypothesis' "score" stays the decoder's mean
# token log-probability, its "rank_score" is the ranking's.
RESCORERS = {
    "latent": "the latent predictor's log-probability of the codes, plus the length classifier's of the length",
    "model": "the model's joint log-probability of codes and translation, (log p(T, z | x) + log p(y | z, x)) / |y|",
    "teacher": "an autoregressive model's mean token log-probability of the translation, one teacher-forced pass over all candidates; the AR model is the second checkpoint: --path student.pt:teacher.pt",
}


class Candidates(NamedTuple):
    """Every sentence's candidate latent sequences, flattened and grouped by sentence."""

    sentence: torch.Tensor  # (C,) the source sentence of each candidate
    codes: torch.Tensor  # (C, N, S)
    latent_padding: torch.Tensor  # (C, N) True at padding
    target_lengths: (
        torch.Tensor | None
    )  # (C,) T, EOS included, or None without a length head
    log_prior: torch.Tensor  # (C,) log p(T | x) + log p(z | x, T); 0 for oracle latents


class VQVAENATGenerator:
    """Generator for ``vqvae_nat`` models.

    Args:
        tgt_dict: target dictionary (for EOS/PAD and the symbols never to emit).
        latent_beam: beam size over latent codes (1 = greedy, the paper's choice).
        latent_samples: further candidates sampled from the latent predictor.
        length_beam: the most likely target lengths tried (needs ``--latent-length predict``).
        rescore: how candidates are ranked, one of ``RESCORERS``.
        oracle_latents: diagnostic; decode the references' own codes and lengths.
        eos: where the sentence ends, one of ``EOS_POLICIES``.
        dedup: drop a token equal to the one before it (a one-pass decoder's typical error).
        max_len_a, max_len_b: at most a * |x| + b tokens before EOS, as fairseq's
            ``--max-len-a/b``, per sentence; no limit when ``max_len_b`` is None.
    """

    def __init__(
        self,
        tgt_dict,
        latent_beam: int = 1,
        oracle_latents: bool = False,
        eos: str = "first",
        dedup: bool = False,
        latent_samples: int = 0,
        length_beam: int = 1,
        rescore: str = "model",
        max_len_a: float = 0,
        max_len_b: int | None = None,
    ):
        for flag, value, low in (
            ("--gen-latent-beam", latent_beam, 1),
            ("--gen-latent-samples", latent_samples, 0),
            ("--gen-length-beam", length_beam, 1),
        ):
            if value < low:
                raise OptionError(f"{flag} must be >= {low}, got {value}")
        if eos not in EOS_POLICIES:
            raise OptionError(
                f"--gen-eos must be one of {', '.join(EOS_POLICIES)}, got {eos!r}"
            )
        if rescore not in RESCORERS:
            raise OptionError(
                f"--gen-rescore must be one of {', '.join(RESCORERS)}, got {rescore!r}"
            )
        self.eos_policy = eos
        self.dedup = dedup
        self.oracle_latents = oracle_latents
        self.tgt_dict = tgt_dict
        self.eos = tgt_dict.eos()
        self.pad = tgt_dict.pad()
        self.banned = [tgt_dict.pad(), tgt_dict.bos()]
        self.latent_beam = latent_beam
        self.latent_samples = latent_samples
        self.length_beam = length_beam
        self.rescore = rescore
        self.max_len = None if max_len_b is None else (max_len_a, max_len_b)

    def generate(self, models, sample, prefix_tokens=None, constraints=None, **kwargs):
        """Every sentence's hypotheses, best first: ``[[{"tokens", "score", ...}, ...]]``."""
        with torch.inference_mode():
            results = self._generate(models, sample, prefix_tokens, constraints)
        # Plain tensors out (inference-mode ones cannot enter a caller's autograd graph).
        return [
            [
                {k: v.clone() if torch.is_tensor(v) else v for k, v in hypo.items()}
                for hypo in hypos
            ]
            for hypos in results
        ]

    def _generate(self, models, sample, prefix_tokens, constraints):
        model, teacher = self._models(models)
        if prefix_tokens is not None or constraints is not None:
            raise OptionError(
                "vqvae_nat decodes all tokens at once: --prefix-size and constraints are not supported"
            )
        src_lengths = sample["net_input"]["src_lengths"]
        with stage("encoder"):
            encoder_out = model.encoder(
                sample["net_input"]["src_tokens"], src_lengths=src_lengths
            )
        cand = self.candidates(model, sample, encoder_out)
        if cand.sentence.shape[0] != src_lengths.shape[0]:
            encoder_out = model.encoder.reorder_encoder_out(encoder_out, cand.sentence)
        empty_source = src_lengths <= 1  # only EOS: an empty input line
        if bool(empty_source.any()):
            logger.warning(
                "%d input sentence(s) are empty; their translations are empty",
                int(empty_source.sum()),
            )
        hypos = [None] * cand.sentence.shape[0]
        # Candidates with the same latent count are decoded together, so that no decoder
        # position is padding: at large batches a quarter of the positions were.
        for group in self.latent_count_groups(cand.latent_padding):
            for i, hypo in zip(
                group.tolist() if group is not None else range(len(hypos)),
                self.decode_group(model, cand, group, encoder_out, src_lengths),
            ):
                hypos[i] = hypo
        with stage("ranking"):
            ranks = self.rank_scores(hypos, cand, teacher, sample)
            results = [[] for _ in range(src_lengths.shape[0])]
            for i, (hypo, sentence) in enumerate(zip(hypos, cand.sentence.tolist())):
                hypo["rank_score"] = float(ranks[i])
                # (N, S): the codes this hypothesis was decoded from
                hypo["latent_codes"] = cand.codes[i][~cand.latent_padding[i]]
                results[sentence].append(hypo)
            for hyps in results:  # a stable sort: ties keep the beam's order
                hyps.sort(key=lambda h: -h["rank_score"])
        return results

    def check_models(self, models):
        """Refuse the options this checkpoint cannot decode with, where fairseq-generate and
        fairseq-interactive build the generator (before the first sentence); decoding checks
        them again for a generator built directly."""
        model, _ = self._models(models)
        if model.length_head is None:
            if self.length_beam > 1:
                raise OptionError(LENGTH_BEAM_NEEDS_A_LENGTH_HEAD)
            if self.eos_policy == "length":
                raise OptionError(EOS_LENGTH_NEEDS_A_LENGTH_HEAD)
        elif self.length_beam > model.length_head.out_features:
            raise OptionError(
                f"--gen-length-beam {self.length_beam} is more than the "
                f"{model.length_head.out_features} length classes of the model"
            )
        model.latent_predictor.check_search(self.latent_beam)

    def _models(self, models):
        """(the vqvae_nat model, the AR teacher or None)."""
        if self.rescore == "teacher":
            if len(models) != 2:
                raise OptionError(
                    "--gen-rescore teacher needs the autoregressive teacher as a second checkpoint: "
                    "--path student.pt:teacher.pt"
                )
            return models[0], models[1]
        if len(models) != 1:
            raise OptionError(
                "vqvae_nat does not support ensembles: pass one --path (a second checkpoint is "
                "read only as the --gen-rescore teacher)"
            )
        return models[0], None

    @staticmethod
    def latent_count_groups(latent_padding):
        """Index tensors of the candidates that share a latent count, fewest latents first; a
        single ``None`` (every candidate, in order) when they all share one."""
        counts = (~latent_padding).sum(1)
        distinct = counts.unique()
        if distinct.numel() <= 1:
            return [None]
        return [(counts == n).nonzero().squeeze(1) for n in distinct]

    def decode_group(self, model, cand, group, encoder_out, src_lengths):
        """Hypotheses of the candidates ``group`` (an index tensor, or None: all), decoded in
        one pass over their own latent count."""
        codes, latent_padding = cand.codes, cand.latent_padding
        sentence, target_lengths = cand.sentence, cand.target_lengths
        if group is not None:
            width = int((~latent_padding[group[0]]).sum())
            codes, latent_padding = codes[group, :width], latent_padding[group, :width]
            sentence = sentence[group]
            if target_lengths is not None:
                target_lengths = target_lengths[group]
            encoder_out = model.encoder.reorder_encoder_out(encoder_out, group)
        with stage("decompressor"):
            latents = model.bottleneck.lookup(codes).to(
                encoder_out["encoder_out"][0].dtype
            )
        # (C, L, V); the model labels its decompressor and decoder stages
        logits = model.decode(latents, latent_padding, encoder_out)
        with stage("output"):
            logits = logits.float()
            # The best token and the EOS score per position, from one max and one logsumexp
            # (no (C, L, V) log-softmax): EOS goes at the end only.
            logits[..., self.banned] = float("-inf")
            eos_logits = logits[..., self.eos].clone()  # (C, L)
            logits[..., self.eos] = float("-inf")
            best, tokens = logits.max(-1)  # (C, L)
            normalizer = torch.logaddexp(logits.logsumexp(-1), eos_logits)
            scores, eos_scores = best - normalizer, eos_logits - normalizer
            # Decoded positions per candidate.
            lengths = (~latent_padding).sum(1) * model.ratio
            ends = self.sentence_ends(
                eos_scores, eos_logits >= best, lengths, model.ratio, target_lengths
            )
            if self.max_len is not None:  # fairseq's --max-len-a/b, per sentence
                a, b = self.max_len
                limit = (a * src_lengths.float() + b).long()
                ends = torch.minimum(ends, limit[sentence].clamp_min(0))
            ends = ends.masked_fill(src_lengths[sentence] <= 1, 0)  # empty inputs
            # One host transfer for all candidates' ends and lengths, not two per candidate.
            return [
                self._hypothesis(tokens[i], scores[i], eos_scores[i], end, length)
                for i, (end, length) in enumerate(zip(ends.tolist(), lengths.tolist()))
            ]

    def candidates(self, model, sample, encoder_out) -> Candidates:
        """Every sentence's candidates: --gen-length-beam lengths x (--gen-latent-beam beams
        + --gen-latent-samples samples), or the references' own codes with --gen-oracle-latents."""
        src_lengths = sample["net_input"]["src_lengths"]
        batch, device = src_lengths.shape[0], src_lengths.device
        if self.oracle_latents:
            with stage("latent_predictor"):  # here: the autoencoder on the reference
                codes, latent_padding, target_lengths = self.oracle_codes(
                    model, sample, encoder_out
                )
            prior = torch.zeros(batch, device=device)
            return Candidates(
                torch.arange(batch, device=device),
                codes,
                latent_padding,
                target_lengths,
                prior,
            )
        # (B, Lb) each
        with stage("length"):
            lengths, length_prior = self.length_candidates(
                model, encoder_out, src_lengths
            )
        per_length = lengths.shape[1] if lengths is not None else 1
        width = self.latent_beam + self.latent_samples
        if per_length > 1:
            encoder_out = model.encoder.reorder_encoder_out(
                encoder_out,
                torch.arange(batch, device=device).repeat_interleave(per_length),
            )
            src_lengths = src_lengths.repeat_interleave(per_length)
        flat_lengths = lengths.reshape(-1) if lengths is not None else None
        with stage("latent_predictor"):
            num_latents = model.inference_latent_counts(
                encoder_out, src_lengths, flat_lengths
            )  # (B * Lb,)
            if width > 1:
                order = torch.arange(
                    num_latents.shape[0], device=device
                ).repeat_interleave(width)
                encoder_out = model.encoder.reorder_encoder_out(encoder_out, order)
            codes, code_prior = model.latent_predictor.search(
                encoder_out,
                num_latents,
                self.latent_beam,
                self.latent_samples,
                # what a length-conditioned predictor reads (--latent-length-condition)
                lengths=flat_lengths.repeat_interleave(width)
                if flat_lengths is not None
                else None,
            )  # (B * Lb, W, N, S), (B * Lb, W)
        num_latents = num_latents.repeat_interleave(width)
        positions = torch.arange(codes.shape[2], device=device)[None]
        return Candidates(
            sentence=torch.arange(batch, device=device).repeat_interleave(
                per_length * width
            ),
            codes=codes.flatten(0, 1),
            latent_padding=positions >= num_latents[:, None],
            target_lengths=flat_lengths.repeat_interleave(width)
            if lengths is not None
            else None,
            log_prior=(code_prior + length_prior.reshape(-1, 1)).reshape(-1),
        )

    def length_candidates(self, model, encoder_out, src_lengths):
        """(lengths T (B, Lb), their log-probabilities (B, Lb)): the length classifier's
        --gen-length-beam best, or (None, zeros (B, 1)) without a length head."""
        no_prior = torch.zeros(src_lengths.shape[0], 1, device=src_lengths.device)
        if model.length_head is None:
            if self.length_beam > 1:
                raise OptionError(LENGTH_BEAM_NEEDS_A_LENGTH_HEAD)
            return None, no_prior
        if self.length_beam == 1:
            return model.inference_lengths(encoder_out, src_lengths)[:, None], no_prior
        logp = model.length_head(encoder_out).float().log_softmax(-1)
        prior, classes = logp.topk(self.length_beam, dim=-1)
        return model.length_head.lengths(classes, src_lengths[:, None]), prior

    def rank_scores(self, hypos, cand, teacher, sample) -> torch.Tensor:
        """(C,) the --gen-rescore score of every candidate (higher is better)."""
        if self.rescore == "latent":
            return cand.log_prior.float().cpu()
        if self.rescore == "model":
            totals = torch.stack([h["positional_scores"].sum() for h in hypos]).cpu()
            counts = torch.tensor([h["positional_scores"].numel() for h in hypos])
            return (cand.log_prior.float().cpu() + totals) / counts
        return teacher_scores(
            teacher,
            sample,
            cand.sentence,
            [h["tokens"] for h in hypos],
            self.pad,
            self.eos,
        )

    def sentence_ends(self, eos_scores, eos_best, lengths, ratio, target_lengths):
        """Index of each sentence's EOS among its decoded positions (== length: none found).

        Args:
            eos_scores: (B, L) log-probability of EOS at each position.
            eos_best: (B, L) True where EOS is the position's best token.
            lengths: (B,) decoded positions (latents * 2^n_c) per sentence.
            ratio: 2^n_c, positions per latent.
            target_lengths: (B,) predicted (or oracle) lengths T, EOS included, or None.
        """
        # (1, L)
        positions = torch.arange(eos_scores.shape[1], device=eos_scores.device)[None]
        inside = positions < lengths[:, None]  # (B, L)
        if self.eos_policy == "first":
            return (
                torch.where(eos_best & inside, positions, lengths[:, None])
                .min(1)
                .values
            )
        if self.eos_policy == "length":
            if target_lengths is None:
                raise OptionError(EOS_LENGTH_NEEDS_A_LENGTH_HEAD)
            return torch.minimum(target_lengths, lengths).clamp_min(1) - 1
        window = inside & (
            positions >= lengths[:, None] - ratio
        )  # the last latent's positions
        return eos_scores.masked_fill(~window, float("-inf")).argmax(1)

    @staticmethod
    def oracle_codes(model, sample, encoder_out):
        """Diagnostic (--gen-oracle-latents): the codes the autoencoder gives the reference.

        Decoding them bounds what a perfect latent predictor (and length) would reach; the gap
        to predicted codes is the latent predictor's share of the BLEU lost.
        """
        target = sample.get("target")
        if target is None:
            raise OptionError(
                "--gen-oracle-latents decodes the references' own codes: it needs a test set "
                "with targets (fairseq-generate), not fairseq-interactive"
            )
        _, latent_padding, _, vq = model.autoencode(
            target, sample["net_input"]["src_lengths"], encoder_out
        )
        return vq.codes, latent_padding, token_lengths(target, model.pad)

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
            keep = torch.cat(
                [tokens.new_ones(1, dtype=torch.bool), tokens[1:] != tokens[:-1]]
            )
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


def teacher_scores(
    teacher, sample, sentence, candidates, pad: int, eos: int
) -> torch.Tensor:
    """(C,) an autoregressive fairseq model's mean token log-probability of each candidate
    translation (EOS included) of source ``sentence[c]``: one teacher-forced pass over all."""
    net_input = sample["net_input"]
    encoder_out = teacher.encoder(
        net_input["src_tokens"], src_lengths=net_input["src_lengths"]
    )
    encoder_out = teacher.encoder.reorder_encoder_out(encoder_out, sentence)
    tokens = torch.nn.utils.rnn.pad_sequence(
        list(candidates), batch_first=True, padding_value=pad
    )
    previous = torch.cat(
        [tokens.new_full((tokens.shape[0], 1), eos), tokens[:, :-1]], dim=1
    )
    output = teacher.decoder(previous, encoder_out=encoder_out)
    logp = teacher.get_normalized_probs(output, log_probs=True).float()
    real = tokens.ne(pad)
    token_logp = (
        logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).masked_fill(~real, 0.0)
    )
    return (token_logp.sum(1) / real.sum(1)).cpu()
