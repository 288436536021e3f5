"""vqvae_em: the total is the weighted sum of its parts; metrics aggregate exactly."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fairseq import metrics

from fairseq_vqvae.criterion import VQVAEEMLoss


def _run_criterion(built, sample):
    """Criterion outputs and the very loss terms the model returned inside that call."""
    captured = {}

    def recording_model(*args, **kwargs):
        captured["terms"], captured["extra"] = built.model(*args, **kwargs)
        return captured["terms"], captured["extra"]

    loss, sample_size, logging_output = built.criterion(recording_model, sample)
    return loss, sample_size, logging_output, captured["terms"], captured["extra"]


def _smoothed_ce(logits, target, epsilon):
    """Cross-entropy with (1 - eps) on the target and eps / (V - 1) on other tokens."""
    vocab = logits.shape[-1]
    q = torch.full_like(logits, epsilon / (vocab - 1))
    q.scatter_(-1, target[:, None], 1.0 - epsilon)
    return -(q * logits.log_softmax(-1)).sum(-1).mean()


@pytest.mark.parametrize(
    "flags, latent_factor, length_factor",
    [
        (
            (
                "--bottleneck",
                "soft_em",
                "--num-slices",
                "2",
                "--label-smoothing",
                "0.1",
            ),
            1.0,
            0.1,
        ),
        (("--bottleneck", "vqvae", "--latent-length", "source"), 1.0, None),
        (
            (
                "--bottleneck",
                "hard_em",
                "--latent-loss-factor",
                "0.5",
                "--length-loss-factor",
                "0.3",
            ),
            0.5,
            0.3,
        ),
    ],
    ids=["soft_em_slices_smoothing", "vqvae_source_length", "hard_em_factors"],
)
def test_total_loss_is_the_weighted_sum_of_its_parts(
    flags, latent_factor, length_factor, build_vqvae, make_sample
):
    built = build_vqvae(*flags)
    built.model.train()
    sample = make_sample(built.task, "train", range(10))
    epsilon = built.criterion.label_smoothing
    assert epsilon == (0.1 if "--label-smoothing" in flags else 0.0)

    loss, sample_size, log, terms, extra = _run_criterion(built, sample)

    word = terms["word_ins"]
    logits, target = word["out"][word["mask"]].float(), word["tgt"][word["mask"]]
    word_loss = _smoothed_ce(logits, target, epsilon)
    nll = F.cross_entropy(logits, target)
    latent = terms["latent"]
    k = latent["out"].shape[-1]
    latent_loss = F.cross_entropy(
        latent["out"][latent["mask"]].reshape(-1, k),
        latent["tgt"][latent["mask"]].reshape(-1, k),
    )
    commit = terms["commit"]["loss"]
    expected = word_loss + latent["factor"] * latent_loss + commit
    length_loss = torch.tensor(0.0)
    if "length" in terms:
        length_loss = F.cross_entropy(terms["length"]["out"], terms["length"]["tgt"])
        expected = expected + terms["length"]["factor"] * length_loss

    assert sample_size == 1
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
    assert torch.allclose(log["loss"], expected, atol=1e-5)
    # Logged parts are factor-weighted, so that they add up to the loss.
    assert torch.allclose(log["word_ins_loss"], word_loss, atol=1e-5)
    assert torch.allclose(log["nll_loss"], nll, atol=1e-5)
    assert torch.allclose(log["latent_loss"], latent["factor"] * latent_loss, atol=1e-5)
    assert torch.allclose(log["commit_loss"], commit)
    if "length" in terms:
        assert torch.allclose(
            log["length_loss"], terms["length"]["factor"] * length_loss, atol=1e-5
        )
    else:
        assert "length_loss" not in log
    parts = sum(log[f"{name}_loss"] for name in terms)
    assert torch.allclose(parts, log["loss"], atol=1e-5)
    assert latent["factor"] == latent_factor
    assert ("length" in terms) == (length_factor is not None)
    if length_factor is not None:
        assert terms["length"]["factor"] == length_factor
    assert torch.equal(
        latent["codes"], extra["codes"]
    )  # latent_acc against the nearest codes
    # The code histogram counts each real latent once per slice.
    codes = extra["codes"][~extra["latent_padding"]]  # (M, S)
    histogram = torch.zeros(codes.shape[1], k, dtype=torch.float64)
    for row in codes:
        for s, code in enumerate(row.tolist()):
            histogram[s, code] += 1
    assert torch.equal(log["code_counts"], histogram)
    assert log["latent_total"] == codes.numel()


def test_latent_loss_is_off_before_its_start_update(build_vqvae, make_sample):
    built = build_vqvae("--bottleneck", "hard_em", "--latent-loss-start-update", "5")
    built.model.eval()  # deterministic, so both calls see the same terms
    sample = make_sample(built.task, "train", range(6))

    loss_before, _, log_before, terms, _ = _run_criterion(built, sample)
    built.model.set_num_updates(5)
    loss_after, _, log_after, _, _ = _run_criterion(built, sample)

    assert terms["latent"]["factor"] == 0.0
    assert log_before["latent_loss"] == 0  # weighted by its factor, 0 before the start
    assert log_after["latent_loss"] > 0
    assert torch.allclose(loss_after - loss_before, log_after["latent_loss"], atol=1e-5)


def test_soft_target_latent_loss_equals_hard_cross_entropy_for_one_hot_targets():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 2, 6)  # (B, N, S, K)
    codes = torch.randint(6, (3, 4, 2))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    logits[~mask] = 1e4  # padding must not count
    term = {"out": logits, "tgt": F.one_hot(codes, 6).float(), "mask": mask}

    loss, _ = VQVAEEMLoss(None).term_loss(term)
    correct, total = VQVAEEMLoss.latent_accuracy(term)

    expected = F.cross_entropy(logits[mask].reshape(-1, 6), codes[mask].reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert total == 7 * 2
    assert correct == int((logits[mask].argmax(-1) == codes[mask]).sum())


def _fake_log(loss, nll, word, latent, correct, total, counts):
    return {
        "loss": torch.tensor(loss),
        "nll_loss": torch.tensor(nll),
        "word_ins_loss": torch.tensor(word),
        "latent_loss": torch.tensor(latent),
        "commit_loss": torch.tensor(0.5),
        "length_loss": torch.tensor(2.0),
        "ema_perplexity": torch.tensor(3.0),
        "latent_correct": correct,
        "latent_total": total,
        "code_counts": torch.tensor(counts, dtype=torch.float64),
        "ntokens": 10,
        "nsentences": 2,
        "sample_size": 1,
    }


LOGS = [
    # Slice 0: one code per batch (perplexity 1 each) but two overall (perplexity 2);
    # slice 1 is uniform over 4 codes in both batches (perplexity 4).
    _fake_log(2.0, 1.0, 1.5, 0.4, 3, 4, [[4, 0, 0, 0], [1, 1, 1, 1]]),
    _fake_log(4.0, 2.0, 2.5, 0.8, 1, 6, [[0, 4, 0, 0], [1, 1, 1, 1]]),
]


def _reduce(logging_outputs):
    with metrics.aggregate() as agg:
        VQVAEEMLoss.reduce_metrics(logging_outputs)
    return {
        key: agg[key].avg for key in agg if hasattr(agg[key], "avg")
    }, agg.get_smoothed_values()


def test_reduce_metrics_matches_a_manual_aggregate():
    values, smoothed = _reduce(LOGS)

    assert values["loss"] == pytest.approx((2.0 + 4.0) / 2 / math.log(2))
    assert values["nll_loss"] == pytest.approx((1.0 + 2.0) / 2 / math.log(2))
    assert smoothed["ppl"] == pytest.approx(
        round(2 ** ((1.0 + 2.0) / 2 / math.log(2)), 2)
    )
    # Every logged loss is in bits, like loss and nll_loss.
    assert values["word_ins_loss"] == pytest.approx(2.0 / math.log(2))
    assert values["latent_loss"] == pytest.approx(0.6 / math.log(2))
    assert values["commit_loss"] == pytest.approx(0.5 / math.log(2))
    assert values["length_loss"] == pytest.approx(2.0 / math.log(2))
    assert values["ema_perplexity"] == pytest.approx(3.0)
    assert values["latent_acc"] == pytest.approx((3 + 1) / (4 + 6))
    assert values["code_perplexity"] == pytest.approx(
        (2.0 + 4.0) / 2
    )  # from the summed histogram
    assert values["codes_in_use"] == pytest.approx((2 + 4) / 2)


def test_reduce_metrics_of_summed_logging_outputs_is_the_same():
    assert VQVAEEMLoss.logging_outputs_can_be_summed()
    summed = {
        key: LOGS[0][key] + LOGS[1][key] for key in LOGS[0]
    }  # what fairseq's stat sync does

    values_summed, _ = _reduce([summed])
    values_list, _ = _reduce(LOGS)

    assert values_summed.keys() == values_list.keys()
    for key in values_list:
        assert values_summed[key] == pytest.approx(values_list[key]), key


def test_latent_accuracy_is_against_the_nearest_code_not_the_most_sampled_one():
    logits = torch.tensor(
        [[[[0.0, 5.0, 0.0]]]]
    )  # (B=1, N=1, S=1, K=3): predicts code 1
    samples = torch.tensor([[[[0.0, 0.3, 0.7]]]])  # soft EM drew code 2 most often
    mask = torch.ones(1, 1, dtype=torch.bool)
    nearest = torch.tensor([[[1]]])  # ... but code 1 is the nearest
    correct, total = VQVAEEMLoss.latent_accuracy(
        {"out": logits, "tgt": samples, "mask": mask, "codes": nearest}
    )
    assert (correct, total) == (1, 1)
    correct, _ = VQVAEEMLoss.latent_accuracy(
        {"out": logits, "tgt": samples, "mask": mask, "codes": nearest + 1}
    )
    assert correct == 0


def test_a_term_counts_with_the_factor_the_model_gives_it(build_vqvae, make_sample):
    """A new term, or another factor on an existing one, needs no criterion change."""
    built = build_vqvae("--bottleneck", "hard_em")
    built.model.eval()
    sample = make_sample(built.task, "train", range(6))
    base, _, base_log, _, _ = _run_criterion(built, sample)
    original = built.model.forward

    def forward(*args, **kwargs):
        terms, extra = original(*args, **kwargs)
        terms["commit"]["factor"] = 3.0
        terms["extra"] = {"loss": torch.tensor(2.0), "factor": 0.5}
        return terms, extra

    built.model.forward = forward
    loss, _, log, _, _ = _run_criterion(built, sample)
    assert torch.allclose(loss, base + 2 * base_log["commit_loss"] + 1.0, atol=1e-5)
    assert torch.allclose(log["extra_loss"], torch.tensor(1.0))
    assert torch.allclose(log["commit_loss"], 3 * base_log["commit_loss"])


def test_readme_names_exactly_the_logged_keys(build_vqvae, make_sample):
    """README's "Configuration and logged keys" lists what vqvae_em logs, no more, no less."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    paragraph = readme[readme.index("Logged by `vqvae_em`") :].split("\n\n")[0]
    documented = set(re.findall(r"`([a-z_]+)`", paragraph)) - {"vqvae_em", "vqvae"}
    logged = set()
    for flags in (
        (),
        ("--latent-length", "source", "--prior-commitment-weight", "0.5"),
    ):  # with and without the length term; with the prior commitment term
        built = build_vqvae(*flags)
        built.model.train()
        _, _, log, _, _ = _run_criterion(
            built, make_sample(built.task, "train", range(8))
        )
        values, _ = _reduce([log])
        logged |= set(values)
    logged -= {"ppl"}  # fairseq's, derived from nll_loss
    assert documented == logged, (documented - logged, logged - documented)


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_label_smoothing_out_of_range_is_refused_with_the_flag(build_vqvae, value):
    from fairseq_vqvae.errors import OptionError

    with pytest.raises(OptionError, match=r"--label-smoothing must be in \[0, 1\)"):
        build_vqvae("--label-smoothing", value)
