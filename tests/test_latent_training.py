"""The latent predictor's training options: clean targets, length conditioning, the gradient
into the encoder and label smoothing of the latent loss (each off by default)."""

import re

import pytest
import torch

from conftest import ids_by_target_length


def _forward(model, sample):
    net_input = sample["net_input"]
    return model(
        net_input["src_tokens"], net_input["src_lengths"], tgt_tokens=sample["target"]
    )


def _eval_codes(model, sample):
    """The nearest codes of the references in evaluation mode (what --gen-oracle-latents and
    validation's latent_acc use)."""
    training = model.training
    model.eval()
    with torch.no_grad():
        net_input = sample["net_input"]
        encoder_out = model.encoder(
            net_input["src_tokens"], src_lengths=net_input["src_lengths"]
        )
        _, padding, _, vq = model.autoencode(
            sample["target"], net_input["src_lengths"], encoder_out
        )
    model.train(training)
    return vq.codes, padding


def test_the_latent_options_are_off_by_default(build_vqvae, make_sample):
    built = build_vqvae()
    args, model = built.args, built.model
    assert args.latent_clean_targets is False
    assert args.latent_length_condition is False
    assert args.latent_encoder_grad == 1.0
    assert args.latent_label_smoothing == 0.0
    assert model.latent_predictor.length_ratio == 0
    assert not hasattr(model.latent_predictor, "embed_to_go")
    sample = make_sample(built.task, "train", range(8))
    terms, _ = _forward(model.train(), sample)
    latent = terms["latent"]
    # The training-mode codes are the predictor's targets and latent_acc's reference.
    assert latent["codes"] is latent["training_codes"]
    assert latent["label_smoothing"] == 0.0
    assert built.criterion.target_agreement(latent) is None


def test_clean_targets_are_the_evaluation_codes_while_the_decoder_keeps_its_own(
    build_vqvae, make_sample
):
    built = build_vqvae(
        "--latent-clean-targets", "--bottleneck", "hard_em", "--dropout", "0.5"
    )
    model = built.model.train()
    sample = make_sample(built.task, "train", range(16))
    torch.manual_seed(0)
    terms, extra = _forward(model, sample)
    latent = terms["latent"]
    expected, padding = _eval_codes(model, sample)
    real = ~padding
    assert torch.equal(latent["codes"][real], expected[real])
    assert torch.equal(latent["tgt"][real].argmax(-1), expected[real])
    assert torch.equal(latent["tgt"].sum(-1)[real], torch.ones_like(expected[real]))
    # The decoder (and the EM statistics, and the code histogram) read the training-mode
    # codes, which dropout 0.5 changes somewhere.
    assert extra["codes"] is latent["training_codes"]
    assert not torch.equal(latent["training_codes"][real], expected[real])
    assert model.training and model.compressor.training and model.bottleneck.training
    agree = built.criterion.target_agreement(latent)
    assert 0 < agree < int(real.sum()) * latent["codes"].shape[-1]
    _, _, log = built.criterion(model, sample)
    assert "latent_agree" in log


def test_clean_targets_replace_soft_em_responsibilities_by_one_hot_codes(
    build_vqvae, make_sample
):
    built = build_vqvae(
        "--latent-clean-targets", "--bottleneck", "soft_em", "--num-samples", "3"
    )
    model = built.model.train()
    sample = make_sample(built.task, "train", range(8))
    terms, _ = _forward(model, sample)
    target = terms["latent"]["tgt"]
    assert bool(((target == 0) | (target == 1)).all())
    # In evaluation nothing changes: the codes are the evaluation codes already.
    model.eval()
    terms, _ = _forward(model, sample)
    assert terms["latent"]["codes"] is terms["latent"]["training_codes"]


def _logits(model, sample, lengths):
    lp = model.latent_predictor
    net_input = sample["net_input"]
    with torch.no_grad():
        encoder_out = model.encoder(
            net_input["src_tokens"], src_lengths=net_input["src_lengths"]
        )
        codes = torch.zeros(lengths.shape[0], 3, lp.num_slices, dtype=torch.long)
        return lp(lp.embed(codes, lengths=lengths), encoder_out)


def test_a_length_conditioned_predictor_reads_the_length(build_vqvae, make_sample):
    built = build_vqvae("--latent-length-condition")
    model = built.model.eval()
    lp = model.latent_predictor
    assert lp.length_ratio == 4  # --compress-steps 2
    sample = make_sample(built.task, "train", range(4))
    lengths = torch.tensor([9, 9, 9, 9])
    same = _logits(model, sample, lengths)
    assert torch.equal(same, _logits(model, sample, lengths.clone()))
    # Only the length changes: another fill of the last latent (9 -> 10 tokens, 3 latents
    # both), and another count of latents still to come (9 -> 13 tokens).
    assert not torch.allclose(same, _logits(model, sample, lengths + 1))
    assert not torch.allclose(same, _logits(model, sample, lengths + 4))
    with pytest.raises(ValueError, match="pass lengths"):
        lp.embed(torch.zeros(1, 2, 1, dtype=torch.long))
    # What it adds: the latents after each position and the last window's fill.
    lengths = torch.tensor([9, 4])  # 3 latents, fill 1; 1 latent, fill 4
    added = lp.length_embedding(lengths, 0, 3)
    to_go = torch.tensor([[2, 1, 0], [0, 0, 0]])
    fill = torch.tensor([0, 3])
    expected = (lp.embed_to_go(to_go) + lp.embed_fill(fill)[:, None]) * lp.scale
    torch.testing.assert_close(added, expected)
    # One incremental step at offset 2 adds what teacher forcing adds at position 2.
    torch.testing.assert_close(lp.length_embedding(lengths, 2, 1), added[:, 2:])


def test_a_length_conditioned_predictor_decodes_with_the_predicted_length(
    build_vqvae, make_sample
):
    from fairseq_vqvae.generator import VQVAENATGenerator

    built = build_vqvae("--latent-length-condition")
    model = built.model.eval()
    ids = ids_by_target_length(built.task, "test")[:6]
    sample = make_sample(built.task, "test", ids)
    seen = []
    original = model.latent_predictor.search

    def spy(*args, **kwargs):
        seen.append(kwargs.get("lengths"))
        return original(*args, **kwargs)

    model.latent_predictor.search = spy
    generator = VQVAENATGenerator(built.task.target_dictionary, latent_beam=2)
    hypos = generator.generate([model], sample)
    assert len(hypos) == len(ids)
    with torch.no_grad():
        encoder_out = model.encoder(
            sample["net_input"]["src_tokens"],
            src_lengths=sample["net_input"]["src_lengths"],
        )
        predicted = model.inference_lengths(
            encoder_out, sample["net_input"]["src_lengths"]
        )
    assert torch.equal(seen[0], predicted.repeat_interleave(2))


def test_length_condition_needs_a_predicted_length(build_vqvae):
    with pytest.raises(ValueError, match=re.escape("needs --latent-length predict")):
        build_vqvae("--latent-length-condition", "--latent-length", "source")


def _encoder_grads(model, sample, name):
    model.zero_grad()
    terms, _ = _forward(model, sample)
    out, tgt, mask = (terms[name][k] for k in ("out", "tgt", "mask"))
    loss = -(tgt[mask].float() * out[mask].float().log_softmax(-1)).sum()
    loss.backward()
    return [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for p in model.encoder.layers.parameters()
    ]


@pytest.mark.parametrize("scale", ["0", "0.5"])
def test_the_latent_gradient_into_the_encoder_is_scaled(
    build_vqvae, make_sample, scale
):
    built = build_vqvae("--bottleneck", "hard_em", "--dropout", "0")
    sample = make_sample(built.task, "train", range(8))
    full = _encoder_grads(built.model.train(), sample, "latent")
    assert any(bool(g.abs().gt(0).any()) for g in full)
    scaled_model = build_vqvae(
        "--bottleneck", "hard_em", "--dropout", "0", "--latent-encoder-grad", scale
    ).model
    scaled_model.load_state_dict(built.model.state_dict())
    scaled = _encoder_grads(scaled_model.train(), sample, "latent")
    for g_full, g_scaled in zip(full, scaled):
        torch.testing.assert_close(
            g_scaled, float(scale) * g_full, atol=1e-6, rtol=1e-4
        )
    # The predictor itself still learns.
    assert any(
        p.grad is not None and bool(p.grad.abs().gt(0).any())
        for p in scaled_model.latent_predictor.parameters()
    )


@pytest.mark.parametrize("bottleneck", ["hard_em", "soft_em"])
def test_latent_label_smoothing_reaches_the_latent_loss(
    build_vqvae, make_sample, bottleneck
):
    built = build_vqvae(
        "--bottleneck", bottleneck, "--latent-label-smoothing", "0.2", "--dropout", "0"
    )
    model = built.model.train()
    sample = make_sample(built.task, "train", range(8))
    torch.manual_seed(0)
    terms, _ = _forward(model, sample)
    latent = terms["latent"]
    assert latent["label_smoothing"] == 0.2
    smoothed, _ = built.criterion.term_loss(latent)
    mask = latent["mask"]
    lprobs = latent["out"][mask].float().log_softmax(-1)
    target = latent["tgt"][mask].float()
    # The targets (one-hot codes, or soft EM's responsibilities) mixed with the uniform.
    mixed = 0.8 * target + 0.2 / target.shape[-1]
    expected = -(mixed * lprobs).sum(-1).mean()
    torch.testing.assert_close(smoothed, expected, atol=1e-5, rtol=1e-5)
    plain, _ = built.criterion.term_loss({**latent, "label_smoothing": 0.0})
    assert not torch.allclose(smoothed, plain)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ("--latent-encoder-grad", "1.5"),
            "--latent-encoder-grad must be in [0.0, 1.0]",
        ),
        (("--latent-encoder-grad", "nan"), "--latent-encoder-grad must be a finite"),
        (
            ("--latent-label-smoothing", "1"),
            "--latent-label-smoothing must be in [0.0, 1.0)",
        ),
    ],
)
def test_the_latent_options_are_range_checked(build_vqvae, flags, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_vqvae(*flags)


def test_tied_codes_are_off_by_default_and_rank_near_codes_above_far_ones(build_vqvae):
    plain = build_vqvae().model.latent_predictor
    assert plain.code_dim == 0 and plain.output.out_features == plain.codebook_size
    assert not hasattr(plain, "embed_vectors")
    model = build_vqvae("--latent-tied-codes", "--bottleneck", "vqvae").model.eval()
    lp = model.latent_predictor
    assert lp.code_dim == 16 and lp._codebook is model.bottleneck.codebook
    codes = model.bottleneck.codebook.weight.detach()[0]  # (K, D)
    with torch.no_grad():  # a predictor whose predicted vector is its input
        lp.output.weight.copy_(torch.eye(16))
        lp.output.bias.zero_()
    for j in range(codes.shape[0]):
        logits = lp.logits(codes[j][None])[0, 0]  # (K,)
        distance = (codes - codes[j]).pow(2).sum(-1)
        assert int(logits.argmax()) == j
        # every code's logit falls as its distance to the predicted vector grows
        order = distance.argsort()
        assert bool((logits[order][1:] <= logits[order][:-1] + 1e-5).all())


def test_tied_codes_give_the_predictor_no_gradient_into_the_codebook(
    build_vqvae, make_sample
):
    built = build_vqvae("--latent-tied-codes", "--bottleneck", "vqvae")
    model = built.model.train()
    sample = make_sample(built.task, "train", range(8))
    terms, _ = _forward(model, sample)
    latent = terms["latent"]
    loss, _ = built.criterion.term_loss(latent)
    model.zero_grad()
    loss.backward()
    assert model.bottleneck.codebook.weight.grad is None or not bool(
        model.bottleneck.codebook.weight.grad.abs().gt(0).any()
    )
    lp = model.latent_predictor
    for param in (lp.embed_vectors.weight, lp.output.weight, lp.code_bias):
        assert param.grad is not None and bool(param.grad.abs().gt(0).any())
    # The inputs follow the codebook: moving the codes moves the teacher-forced logits.
    before = lp(lp.embed(latent["codes"]), _encoder(model, sample)).detach()
    with torch.no_grad():
        model.bottleneck.codebook.weight.mul_(2)
    after = lp(lp.embed(latent["codes"]), _encoder(model, sample)).detach()
    assert not torch.allclose(before, after)


def _encoder(model, sample):
    net = sample["net_input"]
    return model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])


@pytest.mark.parametrize(
    "flags", [("--latent-tied-codes",), ("--latent-length-condition",)]
)
def test_cached_steps_match_fairseqs_steps_with_the_new_predictor_inputs(
    build_vqvae, make_sample, flags
):
    from fairseq_vqvae.latent_search import CachedSteps, FairseqSteps

    built = build_vqvae(*flags)
    model = built.model.eval()
    lp = model.latent_predictor
    sample = make_sample(built.task, "test", range(3))
    lengths = torch.tensor([5, 9, 13])
    with torch.no_grad():
        encoder_out = _encoder(model, sample)
        cached, plain = CachedSteps(lp, encoder_out), FairseqSteps(lp, encoder_out)
        codes = torch.zeros(3, 1, lp.num_slices, dtype=torch.long)
        for step in range(4):
            x = lp.embed(codes, offset=step, lengths=lengths)
            expected = plain(x)
            torch.testing.assert_close(cached(x), expected, atol=1e-5, rtol=1e-5)
            codes = torch.cat([codes, expected.argmax(-1)], dim=1)
        # The whole search, greedy, equals the teacher-forced argmax of its own codes.
        greedy, _ = lp.search(encoder_out, torch.tensor([4, 4, 4]), lengths=lengths)
        forced = lp(lp.embed(greedy[:, 0], lengths=lengths), encoder_out).argmax(-1)
        assert torch.equal(forced, greedy[:, 0])


def test_the_restart_grace_option_reaches_the_codebook_and_restarts_are_logged(
    build_vqvae, make_sample
):
    from fairseq import optim
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import metrics

    assert (
        build_vqvae("--bottleneck", "hard_em").model.bottleneck.codebook.restart_grace
        == 0
    )
    built = build_vqvae(
        "--bottleneck",
        "hard_em",
        "--dead-code-threshold",
        "1",
        "--restart-grace-updates",
        "7",
    )
    model = built.model.train()
    assert model.bottleneck.codebook.restart_grace == 7
    cfg = convert_namespace_to_omegaconf(built.args)
    optimizer = optim.build_optimizer(
        cfg.optimizer, [p for p in model.parameters() if p.requires_grad]
    )
    sample = make_sample(built.task, "train", range(8))
    with metrics.aggregate(new_root=True) as agg:
        built.task.train_step(sample, model, built.criterion, optimizer, 0)
        built.task.optimizer_step(optimizer, model, 0)
    restarted = model.bottleneck.codebook.restarts
    assert restarted > 0 and agg.get_smoothed_values()["code_restarts"] == restarted
    with pytest.raises(ValueError, match="--restart-grace-updates must be >= 0"):
        build_vqvae("--restart-grace-updates", "-1")


def _predictor_inputs(model, sample):
    """The codes the latent predictor embedded in its trained pass (the last embed call)."""
    seen = []
    lp = model.latent_predictor
    original = lp.embed

    def spy(codes, offset=0, lengths=None):
        seen.append(codes.clone())
        return original(codes, offset, lengths)

    lp.embed = spy
    terms, _ = _forward(model, sample)
    del lp.embed
    return seen, terms


def test_self_inputs_feed_the_predictor_its_own_first_pass_codes(
    build_vqvae, make_sample
):
    built = build_vqvae("--bottleneck", "hard_em", "--dropout", "0")
    assert built.args.latent_self_inputs == 0.0
    sample = make_sample(built.task, "train", range(8))
    seen, terms = _predictor_inputs(built.model.train(), sample)
    assert len(seen) == 1 and torch.equal(seen[0], terms["latent"]["codes"])
    model = build_vqvae(
        "--bottleneck", "hard_em", "--dropout", "0", "--latent-self-inputs", "1"
    ).model.train()
    seen, terms = _predictor_inputs(model, sample)
    first, second = seen  # the first pass reads the targets, the trained pass its own
    real = terms["latent"]["mask"]
    assert torch.equal(first, terms["latent"]["codes"])
    with torch.no_grad():
        lp = model.latent_predictor
        lengths = sample["target"].ne(model.pad).sum(1)
        own = lp(lp.embed(first, lengths=lengths), _encoder(model, sample))
    own = own.argmax(-1)
    assert torch.equal(second[real], own[real])
    assert not torch.equal(second[real], first[real])  # an untrained predictor is wrong
    # In evaluation: teacher forcing, one pass.
    seen, _ = _predictor_inputs(model.eval(), sample)
    assert len(seen) == 1


class _SkippingScaler:
    """A GradScaler that finds an overflow: it skips the step and halves its scale."""

    def __init__(self):
        self.scale = 128.0

    def get_scale(self):
        return self.scale

    def is_enabled(self):
        return True


class _AMPOptimizer:
    """What fairseq's AMPOptimizer shows the task: ``scaler``, ``backward``, ``step``."""

    def __init__(self, overflow):
        self.scaler, self.overflow, self.steps = _SkippingScaler(), overflow, 0

    def step(self):
        if self.overflow:
            self.scaler.scale /= 2
        else:
            self.steps += 1

    def zero_grad(self):
        pass

    def backward(self, loss):
        loss.backward()


@pytest.mark.parametrize("overflow", [True, False])
def test_an_amp_overflow_skips_the_m_step_of_the_replayed_batch(
    build_vqvae, make_sample, overflow
):
    built = build_vqvae("--bottleneck", "hard_em", "--dead-code-threshold", "0")
    model, task = built.model.train(), built.task
    codebook = model.bottleneck.codebook
    sample = make_sample(task, "train", range(8))
    before = {k: v.clone() for k, v in codebook.state_dict().items()}
    optimizer = _AMPOptimizer(overflow)
    task.train_step(sample, model, built.criterion, optimizer, 0)
    assert codebook.pending_counts.sum() > 0
    task.optimizer_step(optimizer, model, 0)
    assert codebook.pending_counts.sum() == 0
    assert int(codebook.num_updates) == (0 if overflow else 1)
    changed = not torch.equal(codebook.weight, before["weight"])
    assert changed is not overflow
