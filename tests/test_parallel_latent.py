"""The parallel latent predictor (--latent-predictor-kind parallel) and its glancing over codes
(--latent-glance-ratio): default, one-pass contract, glancing counts, refusals, the training
options with it, decoding, and fairseq-train + fairseq-generate + fairseq-interactive."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_vqvae.errors import OptionError
from fairseq_vqvae.latent import LatentPredictor
from fairseq_vqvae.parallel_latent import ParallelLatentPredictor

REPO = Path(__file__).resolve().parents[1]
PARALLEL = ("--latent-predictor-kind", "parallel")


def _forward(model, sample):
    net_input = sample["net_input"]
    return model(
        net_input["src_tokens"], net_input["src_lengths"], tgt_tokens=sample["target"]
    )


def _encoder_out(model, sample):
    net_input = sample["net_input"]
    return model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])


def test_the_default_kind_is_autoregressive_and_old_checkpoints_load(build_vqvae):
    built = build_vqvae()
    assert built.args.latent_predictor_kind == "autoregressive"
    assert built.args.latent_glance_ratio == 0.0
    default = built.model.latent_predictor
    assert type(default) is LatentPredictor and default.autoregressive
    # A checkpoint saved before the options existed: its namespace lacks them, the
    # defaults apply, and its state dict loads as it is.
    for name in ("latent_predictor_kind", "latent_glance_ratio"):
        delattr(built.args, name)
    old = built.task.build_model(built.args)
    assert type(old.latent_predictor) is LatentPredictor
    old.load_state_dict(built.model.state_dict())
    # The parallel kind has no parameter of its own either (the start row is its mask).
    parallel = build_vqvae(*PARALLEL).model
    assert type(parallel.latent_predictor) is ParallelLatentPredictor
    assert parallel.latent_predictor.glance_ratio == 0.0  # the default: no glancing
    assert set(parallel.state_dict()) == set(built.model.state_dict())


def test_every_position_sees_every_latent_in_one_call(build_vqvae, make_sample):
    """No causal mask: changing only the last latent's input changes the earlier outputs
    (not so for the autoregressive predictor); its inputs do not read the codes."""
    sample = make_sample(build_vqvae().task, "test", [0, 1])
    for flags, causal in (((), True), (PARALLEL, False)):
        model = build_vqvae(*flags).model.eval()
        lp = model.latent_predictor
        with torch.no_grad():
            encoder_out = _encoder_out(model, sample)
            x = lp.embed(torch.zeros(2, 4, 1, dtype=torch.long))
            changed = x.clone()
            changed[:, -1] += 1.0
            before, after = lp(x, encoder_out), lp(changed, encoder_out)
        assert before.shape == (2, 4, 1, 8)
        assert torch.equal(before[:, :-1], after[:, :-1]) == causal
    codes = torch.randint(0, 8, (2, 4, 1))
    torch.testing.assert_close(lp.embed(codes), lp.embed(torch.zeros_like(codes)))
    with pytest.raises(ValueError, match="no incremental steps"):
        lp.embed(codes, offset=1)


def test_the_latent_count_changes_only_the_positions_and_the_padding_is_ignored(
    build_vqvae, make_sample
):
    model = build_vqvae(*PARALLEL).model.eval()
    lp = model.latent_predictor
    sample = make_sample(build_vqvae().task, "test", [0])
    with torch.no_grad():
        encoder_out = _encoder_out(model, sample)
        three, five = (lp.embed(torch.zeros(1, n, 1, dtype=torch.long)) for n in (3, 5))
        # The same input at the first three positions: mask + position, nothing else.
        torch.testing.assert_close(three, five[:, :3])
        torch.testing.assert_close(
            five[0, 1] - five[0, 0], lp.positions[1] - lp.positions[0]
        )
        alone = lp(three, encoder_out)
        padded = lp(five, encoder_out, torch.tensor([[False] * 3 + [True] * 2]))
    torch.testing.assert_close(alone, padded[:, :3])


def test_search_takes_each_positions_best_codes_and_samples_per_position(
    build_vqvae, make_sample
):
    built = build_vqvae(*PARALLEL)
    model = built.model.eval()
    lp = model.latent_predictor
    sample = make_sample(built.task, "test", [0, 1])
    counts = torch.tensor([2, 4])
    with torch.no_grad():
        encoder_out = _encoder_out(model, sample)
        padding = torch.arange(4)[None] >= counts[:, None]
        x = lp.embed(torch.zeros(2, 4, 1, dtype=torch.long))
        logp = lp(x, encoder_out, padding).float().log_softmax(-1)
        codes, scores = lp.search(encoder_out, counts)
        repeated = model.encoder.reorder_encoder_out(
            encoder_out, torch.tensor([0, 0, 0, 1, 1, 1])
        )
        drawn, drawn_scores = lp.search(repeated, counts, samples=2)
    best = logp.argmax(-1).masked_fill(padding[..., None], 0)
    assert codes.shape == (2, 1, 4, 1) and torch.equal(codes[:, 0], best)
    expected = (logp.max(-1).values.squeeze(-1) * ~padding).sum(1)
    torch.testing.assert_close(scores[:, 0], expected)
    assert drawn.shape == (2, 3, 4, 1) and torch.equal(drawn[:, 0], best)
    assert not bool(drawn[0, :, 2:].any())  # after a sentence's count: code 0
    assert bool((drawn_scores[:, 1:] <= drawn_scores[:, :1] + 1e-5).all())


def _glanced(lp, codes, encoder_out, padding):
    """(revealed, loss mask) of one glancing pass, spying on the inputs it embeds."""
    seen = []
    original = lp.embed

    def spy(codes, offset=0, lengths=None, revealed=None):
        seen.append(revealed)
        return original(codes, offset, lengths, revealed)

    lp.embed = spy
    try:
        _, mask = lp.glancing_pass(codes, encoder_out, padding)
    finally:
        del lp.embed
    return seen, mask


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_glancing_reveals_ratio_times_the_wrong_latents_with_their_gold_codes(
    build_vqvae, make_sample, ratio
):
    built = build_vqvae(*PARALLEL, "--latent-glance-ratio", str(ratio))
    model = built.model
    lp = model.latent_predictor
    assert lp.glance_ratio == ratio
    sample = make_sample(built.task, "test", range(4))
    counts = torch.tensor([6, 5, 3, 1])
    padding = torch.arange(6)[None] >= counts[:, None]
    codes = torch.randint(0, 8, (4, 6, 1))
    with torch.no_grad():
        encoder_out = _encoder_out(model.eval(), sample)
        x = lp.embed(codes)
        first = lp(x, encoder_out, padding).argmax(
            -1
        )  # no dropout: training's first pass
    wrong = (first.ne(codes).any(-1) & ~padding).sum(1)
    assert bool((wrong > 1).any())  # an untrained predictor: something to glance at
    lp.train()
    seen, mask = _glanced(lp, codes, encoder_out, padding)
    if ratio == 0:
        assert seen == [None] and torch.equal(mask, ~padding)
        return
    assert seen[0] is None and len(seen) == 2
    revealed = seen[1]
    assert torch.equal(revealed.sum(1), (wrong.float() * ratio).floor().long())
    assert not bool((revealed & padding).any())
    assert torch.equal(mask, ~padding & ~revealed)  # the loss skips the glanced latents
    glanced = lp.embed(codes, revealed=revealed)
    gold = lp.position_inputs(lp._code_inputs(codes), 0, None)
    torch.testing.assert_close(glanced[revealed], gold[revealed])
    torch.testing.assert_close(glanced[~revealed], x[~revealed])
    # Evaluation: one pass, every real latent.
    seen, mask = _glanced(lp.eval(), codes, encoder_out, padding)
    assert seen == [None] and torch.equal(mask, ~padding)


def test_the_models_latent_loss_leaves_out_the_glanced_latents(
    build_vqvae, make_sample
):
    built = build_vqvae(
        *PARALLEL, "--latent-glance-ratio", "1", "--bottleneck", "hard_em"
    )
    model = built.model.train()
    sample = make_sample(built.task, "train", range(16))
    terms, extra = _forward(model, sample)
    latent = terms["latent"]
    real = ~extra["latent_padding"]
    # ratio 1: as many latents as the first pass gets wrong, chosen at random among the
    # real ones (GLAT), read their gold code; the loss reads the others (no dropout: that
    # first pass is this one)
    lp = model.latent_predictor
    with torch.no_grad():
        x = lp.embed(latent["codes"])
        first = lp(x, _encoder_out(model, sample), ~real).argmax(-1)
    right = first.eq(latent["codes"]).all(-1) & real
    assert (
        bool((latent["mask"] <= real).all()) and 0 < latent["mask"].sum() < real.sum()
    )
    assert torch.equal(latent["mask"].sum(1), right.sum(1))
    loss, _, log = built.criterion(model, sample)
    assert torch.isfinite(loss) and log["latent_total"] == int(latent["mask"].sum())
    model.eval()
    with torch.no_grad():
        terms, extra = _forward(model, sample)
    assert torch.equal(terms["latent"]["mask"], ~extra["latent_padding"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ("--latent-glance-ratio", "0.5"),
            "--latent-glance-ratio glances the parallel latent predictor",
        ),
        (
            (*PARALLEL, "--latent-self-inputs", "0.5"),
            "--latent-self-inputs feeds an autoregressive predictor its own codes",
        ),
        (
            (*PARALLEL, "--latent-glance-ratio", "1.5"),
            r"--latent-glance-ratio must be in \[0.0, 1.0\], got 1.5",
        ),
    ],
)
def test_options_the_kind_has_no_use_for_are_refused(build_vqvae, flags, message):
    with pytest.raises(OptionError, match=message):
        build_vqvae(*flags)


def test_a_latent_beam_and_the_onnx_export_are_refused(build_vqvae, make_sample):
    from fairseq_vqvae.deploy.exportable import check_exportable

    built = build_vqvae(*PARALLEL, "--gen-latent-beam", "2")
    beam = "--gen-latent-beam needs an autoregressive latent predictor"
    with pytest.raises(OptionError, match=beam):
        built.task.build_generator([built.model], built.args)
    with pytest.raises(OptionError, match="the ONNX export decodes an autoregressive"):
        check_exportable(built.model, {})


@pytest.mark.parametrize(
    "flags",
    [
        ("--latent-clean-targets", "--bottleneck", "hard_em"),
        ("--latent-label-smoothing", "0.1", "--latent-loss-factor", "0.5"),
        ("--latent-tied-codes",),
        ("--latent-length-condition",),
        ("--latent-encoder-grad", "0"),
        ("--predicted-latent-ratio", "0.5"),
        ("--prior-commitment-weight", "0.25"),
        ("--latent-predictor-only",),
        ("--token-decoder-only", "--predicted-latent-ratio", "1"),
    ],
)
def test_the_latent_training_options_work_with_the_parallel_kind(
    build_vqvae, make_sample, flags
):
    built = build_vqvae(*PARALLEL, "--latent-glance-ratio", "0.5", *flags)
    model = built.model.train()
    sample = make_sample(built.task, "train", range(8))
    loss, _, log = built.criterion(model, sample)
    loss.backward()
    assert torch.isfinite(loss) and log["latent_total"] > 0
    trained = [p for p in model.parameters() if p.requires_grad]
    assert any(p.grad is not None and bool(p.grad.any()) for p in trained)
    model.eval()
    with torch.no_grad():
        _, _, log = built.criterion(model, sample)
    assert 0 <= log["latent_correct"] <= log["latent_total"]


@pytest.mark.parametrize("flags", [("--gen-latent-samples", "2"), ("--gen-int8",)])
def test_the_generator_decodes_greedy_and_sampled_candidates(
    build_vqvae, make_sample, flags
):
    built = build_vqvae(*PARALLEL, *flags)
    model = built.model.eval()
    generator = built.task.build_generator([model], built.args)
    sample = make_sample(built.task, "test", range(5))
    hypos = built.task.inference_step(generator, [model], sample)
    width = 1 + built.args.gen_latent_samples
    assert len(hypos) == 5 and all(len(h) == width for h in hypos)


def _cli(name, *args, stdin=None):
    return subprocess.run(
        [str(Path(sys.executable).parent / name), *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )


def test_fairseq_train_generate_and_interactive_with_glancing(tiny_databin, tmp_path):
    from conftest import CPU_TRAINING, TINY_FLAGS

    common = ("--user-dir", REPO / "fairseq_vqvae", "--task", "translation_vqvae")
    train = _cli(
        "fairseq-train",
        tiny_databin,
        *common,
        "--arch",
        "vqvae_nat_tiny",
        "--criterion",
        "vqvae_em",
        "--share-all-embeddings",
        *TINY_FLAGS,
        *PARALLEL,
        "--latent-glance-ratio",
        "0.5",
        *CPU_TRAINING,
        "--max-update",
        "3",
        "--no-progress-bar",
        "--no-epoch-checkpoints",
        "--save-dir",
        tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    log = train.stdout + train.stderr
    valid = [line for line in log.splitlines() if "| valid |" in line]
    assert valid and "latent_acc" in valid[-1], log[-3000:]
    checkpoint = tmp_path / "checkpoint_last.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["cfg"]["model"].latent_predictor_kind == "parallel"
    decode = ("--path", checkpoint, "--cpu", "--gen-latent-samples", "1")
    generate = _cli("fairseq-generate", tiny_databin, *common, *decode, "--nbest", "2")
    assert generate.returncode == 0, generate.stderr[-3000:]
    hypotheses = [line for line in generate.stdout.splitlines() if line[:2] == "H-"]
    assert len(hypotheses) == 2 * 13  # 13 test sentences, 2 candidates each
    interactive = _cli(
        "fairseq-interactive",
        tiny_databin,
        *common,
        *decode,
        "--source-lang",
        "src",
        "--target-lang",
        "tgt",
        stdin="a b c\nd e\n",
    )
    assert interactive.returncode == 0, interactive.stderr[-3000:]
    assert sum(line[:2] == "H-" for line in interactive.stdout.splitlines()) == 2
    from fairseq_vqvae.model import VQVAENATModel

    hub = VQVAENATModel.from_pretrained(
        tmp_path, "checkpoint_last.pt", str(tiny_databin), user_dir=str(common[1])
    )
    assert isinstance(hub.translate("a b c"), str)
