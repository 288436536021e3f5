"""vqvae_em: the EM-bottleneck criterion of vqvae_nat.

The model returns named loss terms (``VQVAENATModel.forward``), each with a ``factor``; the loss
is their weighted sum, as in fairseq's ``nat_loss``, so a new term needs no change here:

  word_ins   CE(tokens) [label smoothing optional, real tokens + EOS only; its NLL is nll_loss]
  latent     CE(latent predictor, codes)  [soft targets under soft EM]
  commit     commitment (+ codebook loss for bottleneck=vqvae), computed by the bottleneck
  prior_commit  commitment to the code the latent predictor expects [--prior-commitment-weight > 0]
  length     CE(length classifier)        [latent_length=predict]

A term holds either ``loss`` (a scalar) or ``out`` and ``tgt`` (integer class targets, or
per-class soft targets in the last dimension) with an optional ``mask`` of the positions that
count; ``label_smoothing: True`` applies --label-smoothing to it, a number is its own epsilon
(hard and soft targets). Logged: ``loss`` and every
``<name>_loss`` are factor-weighted and in bits, so the parts add up to ``loss``; ``nll_loss``
is the token NLL in bits, as in fairseq. Roy et al. 2018 (https://arxiv.org/abs/1805.11063),
section 5.1. Each term is a mean over its own positions, so ``sample_size`` is 1 per batch, as
in fairseq's ``nat_loss``.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass

from .bottleneck import em
from .errors import OptionError

# Scalar logging keys other than the loss terms, each a per-batch mean summed over batches.
MEAN_KEYS = ("ema_perplexity",)


@dataclass
class VQVAEEMLossConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "epsilon in [0, 1) of label smoothing on target tokens; 0 = none (paper)"
        },
    )


@register_criterion("vqvae_em", dataclass=VQVAEEMLossConfig)
class VQVAEEMLoss(FairseqCriterion):
    def __init__(self, task, label_smoothing=0.0):
        super().__init__(task)
        if not 0.0 <= label_smoothing < 1.0:
            raise OptionError(
                f"--label-smoothing must be in [0, 1), got {label_smoothing}"
            )
        self.label_smoothing = label_smoothing

    def forward(self, model, sample, reduce=True):
        net_input = sample["net_input"]
        terms, extra = model(
            net_input["src_tokens"],
            net_input["src_lengths"],
            tgt_tokens=sample["target"],
        )
        total, nll = 0.0, None
        logging_output = {}
        for name, term in terms.items():
            value, term_nll = self.term_loss(term)  # unweighted, nats
            weighted = term.get("factor", 1.0) * value
            total = total + weighted
            logging_output[f"{name}_loss"] = weighted.detach()
            if name == "word_ins":
                nll = term_nll
        correct, count = self.latent_accuracy(terms["latent"])
        agree = self.target_agreement(terms["latent"])
        if agree is not None:  # --latent-clean-targets in training
            logging_output["latent_agree"] = agree
        if nll is not None:  # no word term while the predictor trains alone
            logging_output["nll_loss"] = nll.detach()
        logging_output.update(
            {
                "loss": total.detach(),
                "latent_correct": correct,
                "latent_total": count,
                "ema_perplexity": extra["vq_stats"]["ema_perplexity"].detach(),
                "code_counts": _code_histogram(extra, model_codebook_size(terms)),
                "ntokens": sample["ntokens"],
                "nsentences": sample["nsentences"],
                "sample_size": 1,
            }
        )
        return total, 1, logging_output

    def term_loss(self, term):
        """One term's unweighted loss and NLL (nats; the NLL is None without class targets): its
        ``loss``, or the mean cross-entropy of ``out`` against ``tgt`` (class ids, or soft
        targets) over the positions in ``mask``."""
        if "loss" in term:
            return term["loss"].float(), None
        out, target = term["out"], term["tgt"]
        if "mask" in term:
            out, target = out[term["mask"]], target[term["mask"]]
        lprobs = F.log_softmax(out.float(), dim=-1)
        lprobs = lprobs.reshape(-1, lprobs.shape[-1])
        if target.numel() == 0:
            zero = term["out"].float().sum() * 0
            return zero, zero
        smoothing = term.get("label_smoothing", False)
        epsilon = self.label_smoothing if smoothing is True else float(smoothing or 0)
        if target.is_floating_point():  # soft targets (..., K)
            target = target.reshape(-1, target.shape[-1]).float()
            if epsilon > 0:
                target = (1 - epsilon) * target + epsilon / target.shape[-1]
            return -(target * lprobs).sum(-1).mean(), None
        target = target.reshape(-1)
        loss, nll = label_smoothed_nll_loss(lprobs, target, epsilon, reduce=True)
        return loss / target.numel(), nll / target.numel()

    @staticmethod
    def latent_accuracy(term):
        """(predictions equal to the nearest code, latents x slices) over the mask."""
        mask = term["mask"]  # (B, N) True at real latents
        predicted = term["out"][mask].argmax(-1)  # (M, S)
        # Against the nearest code (what greedy decoding must find), not the most sampled one:
        # under soft EM the two differ.
        codes = term["codes"][mask] if "codes" in term else term["tgt"][mask].argmax(-1)
        return int((predicted == codes).sum()), predicted.numel()

    @staticmethod
    def target_agreement(term):
        """Real latents x slices whose training-mode code (the decoder's) is the predictor's
        target, or None when the two are the same codes (no --latent-clean-targets)."""
        training = term.get("training_codes")
        if training is None or training is term["codes"]:
            return None
        mask = term["mask"]
        return int((training[mask] == term["codes"][mask]).sum())

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size = _item(total("sample_size")) or 1.0
        metrics.log_scalar(
            "loss",
            _item(total("loss")) / sample_size / math.log(2),
            sample_size,
            round=3,
        )
        if any("nll_loss" in log for log in logging_outputs):
            metrics.log_scalar(
                "nll_loss",
                _item(total("nll_loss")) / sample_size / math.log(2),
                sample_size,
                round=3,
            )
            metrics.log_derived("ppl", lambda meters: _ppl(meters["nll_loss"].avg))
        term_keys = sorted(
            {k for log in logging_outputs for k in log if k.endswith("_loss")}
        )
        for key in term_keys:
            if key not in ("loss", "nll_loss"):
                value = _item(total(key)) / sample_size / math.log(2)  # bits, like loss
                metrics.log_scalar(key, value, sample_size, round=3)
        for key in MEAN_KEYS:
            metrics.log_scalar(
                key, _item(total(key)) / sample_size, sample_size, round=3
            )
        latent_total = _item(total("latent_total"))
        if latent_total > 0:
            metrics.log_scalar(
                "latent_acc",
                _item(total("latent_correct")) / latent_total,
                latent_total,
                round=4,
            )
        if latent_total > 0 and any("latent_agree" in log for log in logging_outputs):
            # the share of training-mode codes equal to the evaluation-mode targets
            metrics.log_scalar(
                "latent_agree",
                _item(total("latent_agree")) / latent_total,
                latent_total,
                round=4,
            )
        counts = total("code_counts")
        if torch.is_tensor(counts):
            counts = (
                counts.reshape(-1, counts.shape[-1])
                if counts.dim() > 1
                else counts[None]
            )
            metrics.log_scalar(
                "code_perplexity", em.perplexity(counts).mean().item(), 1, round=1
            )
            metrics.log_scalar(
                "codes_in_use", (counts > 0).float().sum(-1).mean().item(), 1, round=1
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # Every value is a sum (the code histogram is a tensor that all-reduces elementwise).
        return True


def model_codebook_size(terms) -> int:
    return terms["latent"]["out"].shape[-1]


def _code_histogram(extra, codebook_size):
    """(S, K) counts of nearest codes over real latents; sums exactly across workers."""
    codes = extra["codes"][~extra["latent_padding"]]  # (M, S)
    one_hot = F.one_hot(codes, codebook_size).to(torch.float32)  # (M, S, K)
    return one_hot.sum(0).double()


def _item(value):
    return value.item() if torch.is_tensor(value) else float(value)


def _ppl(nll_base2):
    return round(2**nll_base2, 2) if nll_base2 < 64 else float("inf")
