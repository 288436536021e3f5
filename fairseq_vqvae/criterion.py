"""vqvae_em: the EM-bottleneck criterion of vqvae_nat.

loss = CE(tokens) [label smoothing optional, real tokens + EOS only]
     + commitment (+ codebook loss for bottleneck=vqvae)
     + latent_factor * CE(latent predictor, codes)   [soft targets under soft EM]
     + length_factor * CE(length classifier)         [latent_length=predict]
Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 5.1. Each term is a mean over its
own positions, so ``sample_size`` is 1 per batch, as in fairseq's ``nat_loss``.
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

# Scalar logging keys, each a per-batch mean summed over batches (divide by sample_size).
MEAN_KEYS = ("word_ins_loss", "latent_loss", "commit_loss", "length_loss", "ema_perplexity")


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
            raise ValueError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, model, sample, reduce=True):
        net_input = sample["net_input"]
        terms, extra = model(
            net_input["src_tokens"], net_input["src_lengths"], tgt_tokens=sample["target"]
        )
        word = self.word_loss(terms["word_ins"])
        latent, correct, total = self.latent_loss(terms["latent"])
        commit = terms["commit"]["loss"].float()
        loss = word[0] + terms["latent"]["factor"] * latent + commit
        length = torch.zeros_like(loss)
        if "length" in terms:
            length = F.cross_entropy(terms["length"]["out"].float(), terms["length"]["tgt"])
            loss = loss + terms["length"]["factor"] * length
        logging_output = {
            "loss": loss.detach(),
            "nll_loss": word[1].detach(),
            "word_ins_loss": word[0].detach(),
            "latent_loss": latent.detach(),
            "commit_loss": commit.detach(),
            "length_loss": length.detach(),
            "latent_correct": correct,
            "latent_total": total,
            "ema_perplexity": extra["vq_stats"]["ema_perplexity"].detach(),
            "code_counts": _code_histogram(extra, model_codebook_size(terms)),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": 1,
        }
        return loss, 1, logging_output

    def word_loss(self, term):
        """(label-smoothed loss, nll) averaged over real target tokens + EOS."""
        mask = term["mask"]
        lprobs = F.log_softmax(term["out"][mask].float(), dim=-1)
        target = term["tgt"][mask]
        if target.numel() == 0:
            zero = lprobs.sum() * 0
            return zero, zero
        loss, nll = label_smoothed_nll_loss(lprobs, target, self.label_smoothing, reduce=True)
        return loss / target.numel(), nll / target.numel()

    @staticmethod
    def latent_loss(term):
        """Soft-target cross-entropy over unmasked latents and slices; accuracy counts."""
        mask = term["mask"]  # (B, N) True at real latents
        logits = term["out"][mask].float()  # (M, S, K)
        targets = term["tgt"][mask].float()  # (M, S, K)
        if logits.numel() == 0:
            zero = term["out"].sum() * 0
            return zero, 0, 0
        loss = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        # Accuracy against the nearest code (what greedy decoding must find), not the most
        # sampled one: under soft EM the two differ.
        codes = term["codes"][mask] if "codes" in term else targets.argmax(-1)  # (M, S)
        correct = (logits.argmax(-1) == codes).sum().item()
        return loss, correct, targets.shape[0] * targets.shape[1]

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size = _item(total("sample_size")) or 1.0
        metrics.log_scalar(
            "loss", _item(total("loss")) / sample_size / math.log(2), sample_size, round=3
        )
        metrics.log_scalar(
            "nll_loss", _item(total("nll_loss")) / sample_size / math.log(2), sample_size, round=3
        )
        metrics.log_derived("ppl", lambda meters: _ppl(meters["nll_loss"].avg))
        for key in MEAN_KEYS:
            metrics.log_scalar(key, _item(total(key)) / sample_size, sample_size, round=3)
        latent_total = _item(total("latent_total"))
        if latent_total > 0:
            metrics.log_scalar(
                "latent_acc", _item(total("latent_correct")) / latent_total, latent_total, round=4
            )
        counts = total("code_counts")
        if torch.is_tensor(counts):
            counts = counts.reshape(-1, counts.shape[-1]) if counts.dim() > 1 else counts[None]
            metrics.log_scalar("code_perplexity", em.perplexity(counts).mean().item(), 1, round=1)
            metrics.log_scalar("code_usage", (counts > 0).float().sum(-1).mean().item(), 1, round=1)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # Every value is a sum (the code histogram is a tensor that all-reduces elementwise).
        return True


def model_codebook_size(terms) -> int:
    return terms["latent"]["out"].shape[-1]


def _code_histogram(extra, codebook_size):
    """(S, K) counts of nearest codes over real latents; sums exactly across workers."""
    codes = extra["codes"][~extra["latent_mask"]]  # (M, S)
    one_hot = F.one_hot(codes, codebook_size).to(torch.float32)  # (M, S, K)
    return one_hot.sum(0).double()


def _item(value):
    return value.item() if torch.is_tensor(value) else float(value)


def _ppl(nll_base2):
    return round(2**nll_base2, 2) if nll_base2 < 64 else float("inf")
