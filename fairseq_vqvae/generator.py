"""VQVAENATGenerator: codes from the latent predictor, then every token in one parallel pass.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1: greedy decoding of the
ceil(T / 2^n_c) latent codes (T from the length classifier, or the paper's 2|x|), codebook
look-up, one decoder pass, then the end of the sentence (``--gen-eos``, ``hypotheses``). No
reference length is ever used (except by the ``--gen-oracle-latents`` diagnostic). The
generator calls the model through its decoding interface only (``VQVAENATModel.encode``,
``length_candidates``, ``predict_codes``, ``decode_codes``, ...).

Beyond the paper, a search over latents (noisy parallel decoding, Gu et al. 2018; LaNMT's
latent search): candidates from several lengths (``--gen-length-beam``), a beam over codes
(``--gen-latent-beam``) and codes sampled from the predictor (``--gen-latent-samples``) are all
decoded in one batched pass, then ranked (``--gen-rescore``, ``RESCORERS``).
Returns fairseq's hypothesis format, best first, so fairseq-generate (``--nbest``),
fairseq-interactive, the hub interface and --eval-bleu all work unchanged.
"""

import logging

import torch

from . import hypotheses
from .candidates import Candidates, latent_count_groups, predicted_candidates
from .errors import OptionError
from .hypotheses import (
    EOS_LENGTH_NEEDS_A_LENGTH_HEAD,
    EOS_POLICIES,
    LENGTH_BEAM_NEEDS_A_LENGTH_HEAD,
    RESCORERS,
)
from .lengths import token_lengths
from .stages import STAGES, stage  # noqa: F401  (STAGES: read from here by scripts/bench)

logger = logging.getLogger(__name__)


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
            encoder_out = model.encode(sample["net_input"]["src_tokens"], src_lengths)
        cand = self.candidates(model, sample, encoder_out)
        if cand.sentence.shape[0] != src_lengths.shape[0]:
            encoder_out = model.reorder_encoder_out(encoder_out, cand.sentence)
        empty_source = src_lengths <= 1  # only EOS: an empty input line
        if bool(empty_source.any()):
            logger.warning(
                "%d input sentence(s) are empty; their translations are empty",
                int(empty_source.sum()),
            )
        hypos = [None] * cand.sentence.shape[0]
        # Candidates with the same latent count are decoded together, so that no decoder
        # position is padding: at large batches a quarter of the positions were.
        for group in latent_count_groups(cand.latent_padding):
            for i, hypo in zip(
                group.tolist() if group is not None else range(len(hypos)),
                self.decode_group(model, cand, group, encoder_out, src_lengths),
            ):
                hypos[i] = hypo
        with stage("ranking"):
            ranks = hypotheses.rank_scores(
                self.rescore,
                hypos,
                cand.log_prior,
                cand.sentence,
                teacher,
                sample,
                self.pad,
                self.eos,
            )
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
        if model.length_classes is None:
            if self.length_beam > 1:
                raise OptionError(LENGTH_BEAM_NEEDS_A_LENGTH_HEAD)
            if self.eos_policy == "length":
                raise OptionError(EOS_LENGTH_NEEDS_A_LENGTH_HEAD)
        elif self.length_beam > model.length_classes:
            raise OptionError(
                f"--gen-length-beam {self.length_beam} is more than the "
                f"{model.length_classes} length classes of the model"
            )
        model.check_search(self.latent_beam)

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
            encoder_out = model.reorder_encoder_out(encoder_out, group)
        # (C, L, V); the model labels its decompressor and decoder stages
        logits = model.decode_codes(codes, latent_padding, encoder_out)
        with stage("output"):
            tokens, scores, eos_scores, eos_best = hypotheses.best_tokens(
                logits, self.banned, self.eos
            )
            # Decoded positions per candidate.
            lengths = (~latent_padding).sum(1) * model.ratio
            ends = self.sentence_ends(
                eos_scores, eos_best, lengths, model.ratio, target_lengths
            )
            if self.max_len is not None:  # fairseq's --max-len-a/b, per sentence
                a, b = self.max_len
                limit = (a * src_lengths.float() + b).long()
                ends = torch.minimum(ends, limit[sentence].clamp_min(0))
            ends = ends.masked_fill(src_lengths[sentence] <= 1, 0)  # empty inputs
            # One host transfer for all candidates' ends and lengths, not two per candidate.
            return [
                hypotheses.hypothesis(
                    tokens[i],
                    scores[i],
                    eos_scores[i],
                    end,
                    length,
                    self.eos,
                    self.dedup,
                )
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
        return predicted_candidates(
            model,
            encoder_out,
            src_lengths,
            lengths,
            length_prior,
            self.latent_beam,
            self.latent_samples,
        )

    def length_candidates(self, model, encoder_out, src_lengths):
        """(lengths T (B, Lb), their log-probabilities (B, Lb)): the length classifier's
        --gen-length-beam best, or (None, zeros (B, 1)) without a length head."""
        if model.length_classes is None and self.length_beam > 1:
            raise OptionError(LENGTH_BEAM_NEEDS_A_LENGTH_HEAD)
        return model.length_candidates(encoder_out, src_lengths, self.length_beam)

    def sentence_ends(self, eos_scores, eos_best, lengths, ratio, target_lengths):
        """``hypotheses.sentence_ends`` under this generator's --gen-eos."""
        return hypotheses.sentence_ends(
            self.eos_policy, eos_scores, eos_best, lengths, ratio, target_lengths
        )

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
