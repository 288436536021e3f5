"""In-process tests of the vqvae_nat model and the translation_vqvae task (the generator:
test_generator.py)."""

import copy
import re
from types import SimpleNamespace
from typing import Optional

import pytest
import torch
from fairseq import optim
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.logging import metrics

from fairseq_vqvae.bottleneck import EMStatistics

from conftest import ids_by_target_length

RATIO = 4  # TINY_FLAGS use --compress-steps 2
VARIANTS = {
    "vqvae": ("--bottleneck", "vqvae"),
    "hard_em": ("--bottleneck", "hard_em"),
    "soft_em": ("--bottleneck", "soft_em", "--num-samples", "3"),
    "latent_length_source": ("--latent-length", "source"),
    "num_slices_2": ("--num-slices", "2"),
    "code_dim_projection": ("--code-dim", "8"),
    "ae_layers": ("--ae-layers", "1"),
    "bottleneck_warmup": ("--bottleneck-warmup-updates", "10"),
    "compress_steps_1": ("--compress-steps", "1"),  # one downsampling step
    "compress_steps_0": ("--compress-steps", "0"),  # one code per token, no compressor
    "word_codes": (  # latent-GLAT's recipe: a code per token, predicted in one pass
        *("--compress-steps", "0", "--latent-predictor-kind", "parallel"),
        *("--latent-glance-ratio", "0.5", "--latent-length-condition"),
    ),
}
EM_BUFFERS = (
    "weight",
    "ema_counts",
    "ema_sums",
    "pending_counts",
    "pending_sums",
    "pending_candidates",
    "pending_num_candidates",
)


def _forward(model, sample):
    net_input = sample["net_input"]
    return model(
        net_input["src_tokens"], net_input["src_lengths"], tgt_tokens=sample["target"]
    )


def _target_lengths(sample, pad):
    return sample["target"].ne(pad).sum(1)  # tokens + EOS


def _bottleneck_buffers(model):
    return {name: buf.clone() for name, buf in model.bottleneck.named_buffers()}


def _adam(built):
    cfg = convert_namespace_to_omegaconf(
        built.args
    )  # as fairseq-train's trainer gets it
    return optim.build_optimizer(
        cfg.optimizer, [p for p in built.model.parameters() if p.requires_grad]
    )


# Forward contract ---------------------------------------------------------------------


def test_forward_returns_named_loss_terms_with_shapes_and_masks(
    build_vqvae, make_sample
):
    built = build_vqvae("--num-slices", "2")
    model, task = built.model, built.task
    order = ids_by_target_length(task)
    sample = make_sample(task, "train", [order[0], order[len(order) // 2], order[-1]])
    pad, vocab = task.target_dictionary.pad(), len(task.target_dictionary)
    lengths = _target_lengths(sample, pad)
    num_latents = (lengths + RATIO - 1) // RATIO
    batch, n = len(lengths), int(num_latents.max())
    assert lengths.min() < lengths.max()  # the batch has padding

    terms, extra = _forward(model.train(), sample)

    assert set(terms) == {"word_ins", "latent", "commit", "length"}
    word = terms["word_ins"]
    assert word["out"].shape == (batch, n * RATIO, vocab)
    assert word["tgt"].shape == word["mask"].shape == (batch, n * RATIO)
    assert torch.equal(word["mask"].sum(1), lengths)  # real tokens + EOS, never padding
    assert not word["tgt"][word["mask"]].eq(pad).any()
    assert word["tgt"][~word["mask"]].eq(pad).all()
    latent = terms["latent"]
    assert latent["out"].shape == latent["tgt"].shape == (batch, n, 2, 8)
    assert torch.equal(latent["mask"].sum(1), num_latents)
    assert torch.equal(latent["mask"], ~extra["latent_padding"])
    assert torch.allclose(latent["tgt"].sum(-1), torch.ones(batch, n, 2))
    assert terms["commit"]["loss"].dim() == 0 and terms["commit"]["loss"] > 0
    length = terms["length"]
    assert length["out"].shape == (batch, 256)
    assert torch.equal(
        length["tgt"], lengths - sample["net_input"]["src_lengths"] + 128
    )
    assert extra["codes"].shape == (batch, n, 2)


def test_eval_loss_terms_of_a_sentence_do_not_depend_on_padding(
    build_vqvae, make_sample
):
    built = build_vqvae()
    model, task = built.model.eval(), built.task
    order = ids_by_target_length(task)
    short, long = order[len(order) // 4], order[-1]
    alone = make_sample(task, "train", [short])
    padded = make_sample(task, "train", [short, long])
    row = int((padded["id"] == short).nonzero())
    assert padded["target"].shape[1] > alone["target"].shape[1]

    with torch.no_grad():
        terms_a, extra_a = _forward(model, alone)
        terms_p, extra_p = _forward(model, padded)

    n = extra_a["codes"].shape[1]
    assert torch.equal(extra_a["codes"][0], extra_p["codes"][row, :n])
    mask = terms_a["word_ins"]["mask"][0]
    word_a = terms_a["word_ins"]["out"][0][mask]
    word_p = terms_p["word_ins"]["out"][row, : mask.shape[0]][mask]
    assert torch.allclose(word_a, word_p, atol=1e-5), (word_a - word_p).abs().max()
    latent_a = terms_a["latent"]["out"][0]
    latent_p = terms_p["latent"]["out"][row, :n]
    assert torch.allclose(latent_a, latent_p, atol=1e-5), (
        (latent_a - latent_p).abs().max()
    )
    assert torch.allclose(
        terms_a["length"]["out"][0], terms_p["length"]["out"][row], atol=1e-5
    )


@pytest.mark.parametrize("shape", [(1, 2), (3, 16)])
def test_the_compressors_convolutions_as_matrix_products_are_conv1d(shape):
    """latent.same_conv / strided_conv compute nn.Conv1d's function, and its gradients, from
    its parameters (so checkpoints keep their layout)."""
    from torch import nn

    from fairseq_vqvae.latent import same_conv, strided_conv

    torch.manual_seed(0)
    for conv, ours in (
        (nn.Conv1d(8, 6, 3, padding=1, bias=False), same_conv),
        (nn.Conv1d(8, 6, 2, stride=2), strided_conv),
    ):
        x = torch.randn(*shape, 8, requires_grad=True)
        reference = conv(x.transpose(1, 2)).transpose(1, 2)
        out = ours(conv, x)
        assert out.shape == reference.shape
        assert torch.allclose(out, reference, atol=1e-6)
        grad = torch.randn_like(out)
        expected = torch.autograd.grad(reference, [x, *conv.parameters()], grad)
        got = torch.autograd.grad(out, [x, *conv.parameters()], grad)
        for e, g in zip(expected, got):
            assert torch.allclose(e, g, atol=1e-5), (e - g).abs().max()
    with pytest.raises(ValueError, match="needs an even length, got 3"):
        strided_conv(nn.Conv1d(8, 6, 2, stride=2), torch.randn(1, 3, 8))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_forward_backward_and_generates(
    variant, build_vqvae, make_sample
):
    built = build_vqvae(*VARIANTS[variant])
    model, task = built.model, built.task
    sample = make_sample(task, "train", range(8))

    loss, sample_size, logging_output = built.criterion(model.train(), sample)
    loss.backward()

    assert torch.isfinite(loss) and sample_size == 1
    assert set(logging_output) >= {
        "word_ins_loss",
        "latent_loss",
        "commit_loss",
        "code_counts",
    }
    names = ["encoder.embed_tokens.weight", "compressor.downsample.0.weight"]
    if variant in (
        "compress_steps_0",
        "word_codes",
    ):  # no compressor: the codes read the embeddings
        names.pop()
    for name in (
        *names,
        "decoder_layers.0.fc1.weight",
        "latent_predictor.output.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    codebook_weight = model.bottleneck.codebook.weight
    if variant == "vqvae":
        assert codebook_weight.grad is not None and codebook_weight.grad.abs().sum() > 0
    else:
        assert not isinstance(codebook_weight, torch.nn.Parameter)

    hypos = task.inference_step(
        task.build_generator([model.eval()], built.args), [model], sample
    )
    assert len(hypos) == 8 and all(
        h[0]["tokens"][-1] == task.target_dictionary.eos() for h in hypos
    )


# Generation ---------------------------------------------------------------------------


# Codebook state -----------------------------------------------------------------------


def test_em_buffers_stay_fp32_after_half(build_vqvae, make_sample):
    built = build_vqvae("--bottleneck", "hard_em")
    model = built.model.half()
    codebook = model.bottleneck.codebook
    assert model.encoder.embed_tokens.weight.dtype == torch.float16
    for name in EM_BUFFERS:
        assert getattr(codebook, name).dtype == torch.float32, name
    assert codebook.num_updates.dtype == torch.long
    try:
        hypos = built.task.inference_step(
            built.task.build_generator([model.eval()], built.args),
            [model],
            make_sample(built.task, "test", [0, 1]),
        )
    except RuntimeError as err:  # some fp16 kernels are missing on CPU
        pytest.skip(f"fp16 compute unsupported on this CPU build: {err}")
    assert len(hypos) == 2


@pytest.mark.parametrize("bottleneck", ["hard_em", "soft_em"])
def test_eval_leaves_bottleneck_buffers_bit_identical(
    bottleneck, build_vqvae, make_sample
):
    built = build_vqvae("--bottleneck", bottleneck)
    model, task = built.model, built.task
    sample = make_sample(task, "valid", range(6))
    before = _bottleneck_buffers(model)

    task.valid_step(sample, model, built.criterion)
    assert model.pop_em_statistics() is None
    task.inference_step(task.build_generator([model], built.args), [model], sample)
    _forward(model.train(), sample)  # a training forward alone only computes statistics

    after = _bottleneck_buffers(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), [
        k for k in before if not torch.equal(before[k], after[k])
    ]


def test_ignore_grad_batches_add_no_em_statistics_and_optimizer_step_applies_once(
    build_vqvae, make_sample
):
    built = build_vqvae(
        "--bottleneck",
        "hard_em",
        "--codebook-decay",
        "0.9",
        "--dead-code-threshold",
        "0",
    )
    model, task, criterion = built.model, built.task, built.criterion
    codebook = model.bottleneck.codebook
    optimizer = _adam(built)
    real = make_sample(task, "train", range(8))
    dummy = make_sample(task, "train", range(8, 16))
    num_latents = int(
        (
            (_target_lengths(real, task.target_dictionary.pad()) + RATIO - 1) // RATIO
        ).sum()
    )
    weight_before, sums_before = codebook.weight.clone(), codebook.ema_sums.clone()

    optimizer.zero_grad()  # as fairseq's trainer does before an update's first batch
    task.train_step(dummy, model, criterion, optimizer, 0, ignore_grad=True)
    assert codebook.pending_counts.sum() == 0 and codebook.pending_sums.abs().sum() == 0
    task.train_step(real, model, criterion, optimizer, 0, ignore_grad=False)
    assert (
        codebook.pending_counts.sum() == num_latents
    )  # hard EM: one count per real latent
    pending_counts, pending_sums = (
        codebook.pending_counts.clone(),
        codebook.pending_sums.clone(),
    )
    task.train_step(dummy, model, criterion, optimizer, 0, ignore_grad=True)
    assert torch.equal(codebook.pending_counts, pending_counts)
    assert torch.equal(
        codebook.weight, weight_before
    )  # nothing applied before the update

    task.optimizer_step(optimizer, model, 0)

    assert int(codebook.num_updates) == 1
    expected_counts = 0.1 * pending_counts
    expected_sums = 0.9 * sums_before + 0.1 * pending_sums
    assert torch.allclose(codebook.ema_counts, expected_counts)
    assert torch.allclose(codebook.ema_sums, expected_sums)
    total, k, eps = (
        expected_counts.sum(-1, keepdim=True),
        expected_counts.shape[-1],
        1e-5,
    )
    smoothed = (expected_counts + eps) / (total + k * eps) * total
    assert torch.allclose(
        codebook.weight, expected_sums / smoothed.unsqueeze(-1), rtol=1e-4, atol=1e-5
    )
    assert codebook.pending_counts.sum() == 0


def test_gradient_accumulation_applies_summed_statistics_in_one_update(
    build_vqvae, make_sample
):
    built = build_vqvae(
        "--bottleneck",
        "hard_em",
        "--codebook-decay",
        "0.5",
        "--dead-code-threshold",
        "0",
    )
    model, task = built.model, built.task
    reference = copy.deepcopy(model)
    first, second = (
        make_sample(task, "train", range(0, 6)),
        make_sample(task, "train", range(6, 14)),
    )
    optimizer = _adam(built)

    optimizer.zero_grad()
    task.train_step(first, model, built.criterion, optimizer, 0)
    task.train_step(second, model, built.criterion, optimizer, 0)
    pending = model.bottleneck.codebook.pending_counts.clone()

    reference.train()
    stats = []
    for sample in (first, second):
        _forward(reference, sample)
        stats.append(reference.pop_em_statistics())
    summed = EMStatistics(
        stats[0].counts + stats[1].counts,
        stats[0].sums + stats[1].sums,
        torch.cat([stats[0].candidates, stats[1].candidates]),
    )
    assert torch.equal(pending, summed.counts)
    assert torch.allclose(
        model.bottleneck.codebook.pending_sums, summed.sums, atol=1e-6
    )

    task.optimizer_step(optimizer, model, 0)
    reference.bottleneck.accumulate_(summed)
    reference.bottleneck.update_()

    ours, theirs = model.bottleneck.codebook, reference.bottleneck.codebook
    assert int(ours.num_updates) == int(theirs.num_updates) == 1
    for name in ("ema_counts", "ema_sums", "weight"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), atol=1e-6), (
            name
        )


# Clear errors -------------------------------------------------------------------------


def test_compress_steps_longer_than_max_target_positions_is_refused(build_vqvae):
    with pytest.raises(
        ValueError, match=r"--compress-steps 11 .*--max-target-positions 1024"
    ):
        build_vqvae("--compress-steps", "11")


def test_share_all_embeddings_needs_a_joined_dictionary(
    build_vqvae, tiny_databin_separate
):
    with pytest.raises(
        ValueError, match="--share-all-embeddings needs a joined dictionary"
    ):
        build_vqvae(
            databin=tiny_databin_separate
        )  # build_vqvae passes --share-all-embeddings


def test_loading_another_architecture_state_dict_is_refused(
    build_vqvae, tiny_transformer
):
    model = build_vqvae().model
    with pytest.raises(ValueError, match="not a vqvae_nat model"):
        model.load_state_dict(tiny_transformer.model.state_dict())


def test_loading_with_another_dictionary_size_is_refused(build_vqvae):
    trained = build_vqvae().model
    other = build_vqvae()
    for dictionary in (other.task.source_dictionary, other.task.target_dictionary):
        dictionary.add_symbol("extra_word")
    model = other.task.build_model(other.args)
    with pytest.raises(
        ValueError,
        match=r"dictionary mismatch: the checkpoint's source dictionary has 24 "
        r"symbols, the data's has 25",
    ):
        model.load_state_dict(trained.state_dict())


def test_loading_with_another_embedding_width_names_the_width(build_vqvae):
    """Not "dictionary mismatch: ... has 24 symbols, the data's has 24" (re-binarize)."""
    trained = build_vqvae().model  # TINY_FLAGS: --encoder-embed-dim 16
    wider = build_vqvae("--encoder-embed-dim", "32").model
    with pytest.raises(
        ValueError,
        match=r"width mismatch: the checkpoint's source embeddings are 16 wide, the "
        r"command line builds 32 \(--encoder-embed-dim 32\): pass --encoder-embed-dim 16",
    ):
        wider.load_state_dict(trained.state_dict())


@pytest.mark.parametrize("bottleneck", ["hard_em", "soft_em"])
def test_bf16_model_trains_with_fp32_em_state(bottleneck, build_vqvae, make_sample):
    """As under --bf16 (model.to(bfloat16)): the step runs, EM state stays fp32 and finite."""
    built = build_vqvae("--bottleneck", bottleneck, "--codebook-decay", "0.9")
    model = built.model.to(torch.bfloat16)
    codebook = model.bottleneck.codebook
    sample = make_sample(built.task, "train", range(8))
    sgd = torch.optim.SGD(model.parameters(), lr=0.01)

    class Optimizer:  # the two calls fairseq's task makes on its optimizer
        backward = staticmethod(lambda loss: loss.backward())
        step = staticmethod(sgd.step)

    optimizer = Optimizer()
    sgd.zero_grad(set_to_none=True)
    loss, _, _ = built.task.train_step(sample, model, built.criterion, optimizer, 0)
    assert torch.isfinite(loss)
    assert codebook.pending_counts.dtype == torch.float32
    assert float(codebook.pending_counts.sum()) > 0
    built.task.optimizer_step(optimizer, model, 0)
    for name in EM_BUFFERS:
        assert getattr(codebook, name).dtype == torch.float32, name
    assert int(codebook.num_updates) == 1
    assert codebook.weight.isfinite().all() and codebook.ema_sums.isfinite().all()


@pytest.mark.parametrize("bottleneck", ["hard_em", "soft_em"])
def test_bf16_autocast_step_matches_fp32_em_bookkeeping(
    bottleneck, build_vqvae, make_sample
):
    """--bf16-autocast: weights, codebook and EM statistics stay fp32, every latent is counted
    and the loss is an fp32 step's up to bf16 rounding."""
    sample_indices = range(8)
    results = []
    for autocast in (False, True):
        torch.manual_seed(0)
        flags = [
            "--bottleneck",
            bottleneck,
            "--codebook-decay",
            "0.9",
            "--dropout",
            "0",
        ]
        built = build_vqvae(*flags, *(["--bf16-autocast"] if autocast else []))
        model = built.model
        torch.manual_seed(1)
        sample = make_sample(built.task, "train", sample_indices)
        sgd = torch.optim.SGD(model.parameters(), lr=0.01)

        class Optimizer:
            backward = staticmethod(lambda loss: loss.backward())
            step = staticmethod(sgd.step)

        loss, _, log = built.task.train_step(
            sample, model, built.criterion, Optimizer(), 0
        )
        codebook = model.bottleneck.codebook
        results.append((float(loss), codebook.pending_counts.clone(), log))
        assert codebook.pending_counts.dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in model.parameters())
        built.task.optimizer_step(Optimizer(), model, 0)
        assert (
            codebook.weight.dtype == torch.float32 and codebook.weight.isfinite().all()
        )
    (fp32_loss, fp32_counts, _), (bf16_loss, bf16_counts, _) = results
    assert bf16_counts.sum() == fp32_counts.sum()  # every latent counted, in fp32
    assert abs(bf16_loss - fp32_loss) < 0.05 * abs(fp32_loss)


@pytest.mark.parametrize("flags, autocast", [((), False), (("--bf16-autocast",), True)])
def test_bf16_autocast_is_off_by_default_and_on_with_its_flag(
    flags, autocast, build_vqvae, make_sample
):
    built = build_vqvae(*flags)
    seen = []
    built.model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.is_autocast_enabled("cpu"))
    )

    class Optimizer:
        backward = staticmethod(lambda loss: loss.backward())

    sample = make_sample(built.task, "train", range(4))
    built.task.train_step(sample, built.model, built.criterion, Optimizer(), 0)
    assert built.task.cfg.bf16_autocast == autocast and seen == [autocast]


@pytest.mark.parametrize("native", [False, True])
def test_bf16_autocast_on_a_cpu_that_emulates_bf16_says_to_drop_it(
    native, build_vqvae, make_sample, monkeypatch, caplog
):
    from fairseq_vqvae import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    precision.warn_if_bf16_is_emulated.cache_clear()
    built = build_vqvae("--bf16-autocast")
    sample = make_sample(built.task, "train", range(4))

    class Optimizer:
        backward = staticmethod(lambda loss: loss.backward())

    with caplog.at_level("WARNING", logger=precision.logger.name):
        for update in range(2):  # said once, not at every update
            built.task.train_step(
                sample, built.model, built.criterion, Optimizer(), update
            )
    said = [r.message for r in caplog.records if "no native bfloat16" in r.message]
    assert len(said) == (0 if native else 1)
    if not native:
        assert "drop --bf16-autocast" in said[0]
    precision.warn_if_bf16_is_emulated.cache_clear()


def test_native_bf16_follows_the_cpu_probes(monkeypatch):
    from fairseq_vqvae import precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.cpu_has_native_bf16()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert (
        precision.cpu_has_native_bf16()
    )  # a torch that cannot tell is taken at its word


@pytest.mark.parametrize("bottleneck", ["vqvae", "soft_em"])
def test_codebook_init_data_sets_the_codes_at_the_first_fairseq_update(
    bottleneck, build_vqvae, make_sample
):
    """--codebook-init data through the task's train_step (two micro-batches, one of them a
    dummy batch) and optimizer_step: the codes become latents of the update."""
    flags = (
        "--bottleneck",
        bottleneck,
        "--codebook-init",
        "data",
        "--codebook-size",
        "64",
    )
    built = build_vqvae(*flags)
    model = built.model
    codebook = model.bottleneck.codebook
    assert codebook.awaits_data
    model.train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.0)

    class Optimizer:
        backward = staticmethod(lambda loss: loss.backward())
        step = staticmethod(sgd.step)

    latents = []
    original = model.bottleneck.forward

    def spy(x, padding_mask=None):
        keep = ~padding_mask.reshape(-1)
        latents.append(x.reshape(-1, x.shape[-1])[keep].detach().clone())
        return original(x, padding_mask)

    model.bottleneck.forward = spy
    sample = make_sample(built.task, "train", range(8))
    built.task.train_step(sample, model, built.criterion, Optimizer(), 0)
    built.task.train_step(
        make_sample(built.task, "train", range(8, 16)),
        model,
        built.criterion,
        Optimizer(),
        0,
        ignore_grad=True,  # fairseq's dummy batch: no candidates
    )
    assert codebook.awaits_data  # nothing happens before the optimizer step
    built.task.optimizer_step(Optimizer(), model, 0)
    assert not codebook.awaits_data
    first = (
        model.bottleneck.project_in(latents[0])
        if model.bottleneck.project_in
        else latents[0]
    )
    codes = codebook.weight[0]
    # every vector of the real micro-batch is a code (fewer latents than codes), none of
    # the dummy batch's
    assert first.shape[0] < codes.shape[0]
    for vector in first:
        assert (codes == vector).all(-1).any()
    dummy = latents[1]
    if model.bottleneck.project_in is not None:
        dummy = model.bottleneck.project_in(dummy)
    assert not any(bool((codes == vector).all(-1).any()) for vector in dummy)
    reloaded = build_vqvae(*flags).model
    reloaded.load_state_dict(model.state_dict())
    assert not reloaded.bottleneck.codebook.awaits_data


def test_bottleneck_under_autocast_computes_fp32_distances():
    from fairseq_vqvae.bottleneck import BottleneckConfig, VQBottleneck

    torch.manual_seed(0)
    vq = VQBottleneck(
        BottleneckConfig(code_dim=16, codebook_size=32, bottleneck="hard_em")
    )
    x = torch.randn(4, 6, 16)
    expected = vq(x).codes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(x)
    assert torch.equal(out.codes, expected)
    assert out.quantized.dtype == torch.float32


def test_prior_commitment_is_fp32_under_autocast_and_with_a_projection():
    from fairseq_vqvae.bottleneck import BottleneckConfig, VQBottleneck

    torch.manual_seed(0)
    vq = VQBottleneck(
        BottleneckConfig(code_dim=8, input_dim=16, codebook_size=32, num_slices=2)
    )
    x = torch.randn(4, 6, 16, requires_grad=True)
    logits = torch.randn(4, 6, 2, 32)
    padding = torch.zeros(4, 6, dtype=torch.bool)
    padding[0, 3:] = True
    expected = vq.prior_commitment(x, logits, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq.prior_commitment(x, logits, padding)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected)
    # By hand: the projected latents of the real positions against the expected code vectors.
    h = vq.project_in(x).reshape(4, 6, 2, 4)[~padding]
    target = torch.einsum(
        "msk,skd->msd", torch.softmax(logits, -1)[~padding], vq.codebook.weight
    )
    assert torch.allclose(expected, ((h - target) ** 2).mean(), rtol=1e-5)
    (grad,) = torch.autograd.grad(expected, x)
    assert grad[0, 3:].abs().sum() == 0 and grad[0, :3].abs().sum() > 0  # padding: none
    all_padding = torch.ones(4, 6, dtype=torch.bool)
    assert vq.prior_commitment(x, logits, all_padding).item() == 0.0


@pytest.mark.parametrize(
    "arch", ["vqvae_nat", "vqvae_nat_base", "vqvae_nat_small", "vqvae_nat_tiny"]
)
def test_every_preset_reaches_the_model_it_builds(build_fairseq, tiny_databin, arch):
    """Each architecture preset's values (and the config defaults it leaves alone) arrive in
    the built model. Regression: the codebook decay was once named --ema-decay, fairseq's own
    model-EMA option (default 0.9999); fairseq filled it in before the preset ran, so every
    preset's codebook silently got decay 0.9999."""
    from fairseq_vqvae.config import VQVAENATConfig
    from fairseq_vqvae.presets import PRESETS

    preset = PRESETS["vqvae_nat" if arch == "vqvae_nat_base" else arch]
    expected = {
        f: preset.get(f, getattr(VQVAENATConfig, f))
        for f in VQVAENATConfig.__dataclass_fields__
        if not str(getattr(VQVAENATConfig, f, "${")).startswith("${")
    }
    expected["share_all_embeddings"] = True  # the one flag given below
    built = build_fairseq(tiny_databin, "--share-all-embeddings", arch=arch)
    model = built.model
    assert {f: getattr(model.cfg, f) for f in expected} == expected
    assert model.bottleneck.config.bottleneck == expected["bottleneck"]
    codebook = model.bottleneck.codebook
    assert codebook.ema == (expected["bottleneck"] != "vqvae")
    assert codebook.decay == expected["codebook_decay"]
    assert codebook.epsilon == expected["codebook_epsilon"]
    assert codebook.dead_code_threshold == expected["dead_code_threshold"]
    assert codebook.init == expected["codebook_init"]
    assert codebook.awaits_data == (expected["codebook_init"] == "data")
    assert codebook.codebook_size == expected["codebook_size"]
    assert len(model.decoder_layers) == expected["decoder_layers"]
    assert model.ratio == 2 ** expected["compress_steps"]
    config = model.bottleneck.config
    assert (
        config.code_dim,
        config.num_slices,
        config.commitment_weight,
        config.num_samples,
        config.temperature,
    ) == (
        expected["code_dim"] or expected["encoder_embed_dim"],
        expected["num_slices"],
        expected["commitment_weight"],
        expected["num_samples"],
        expected["soft_em_temperature"],
    )
    assert len(model.encoder.layers) == expected["encoder_layers"]
    assert len(model.ae_layers) == expected["ae_layers"]
    assert len(model.latent_predictor.layers) == expected["latent_layers"]
    layer = model.decoder_layers[0]
    assert layer.embed_dim == expected["encoder_embed_dim"]
    assert layer.fc1.out_features == expected["decoder_ffn_embed_dim"]
    assert model.encoder.layers[0].fc1.out_features == expected["encoder_ffn_embed_dim"]
    assert model.dropout.p == expected["dropout"]
    assert layer.self_attn.dropout_module.p == expected["attention_dropout"]
    assert layer.activation_dropout_module.p == expected["activation_dropout"]
    predictor_dropout = expected["latent_predictor_dropout"]
    assert model.latent_predictor.dropout.p == (
        expected["dropout"] if predictor_dropout is None else predictor_dropout
    )
    assert (model.decoder_norm is None) == expected["post_norm"]
    assert (model.length_head is None) == (expected["latent_length"] == "source")


def test_glancing_is_off_by_default_and_in_evaluation(build_vqvae, make_sample):
    built = build_vqvae()
    model = built.model
    sample = make_sample(built.task, "train", range(8))
    model.train()
    terms, _ = _forward(model, sample)
    target = terms["word_ins"]["tgt"]
    assert built.args.glance_ratio == 0.0 and model.glance_ratio() == 0.0
    assert torch.equal(terms["word_ins"]["mask"], target.ne(model.pad))
    glancing = build_vqvae("--glance-ratio", "1.0").model
    glancing.eval()
    terms, _ = _forward(glancing, sample)
    assert torch.equal(
        terms["word_ins"]["mask"], terms["word_ins"]["tgt"].ne(glancing.pad)
    )


def test_glancing_feeds_reference_embeddings_where_it_drops_the_loss(
    build_vqvae, make_sample
):
    built = build_vqvae("--glance-ratio", "0.5", "--dropout", "0")
    model = built.model
    model.train()
    sample = make_sample(built.task, "train", range(8))
    seen = {}
    original = model.decode_inputs

    def spy(h, token_padding, encoder_out):
        seen.setdefault("passes", []).append((h.detach().clone(), token_padding))
        return original(h, token_padding, encoder_out)

    model.decode_inputs = spy
    torch.manual_seed(0)
    terms, _ = _forward(model, sample)
    (first, token_padding), (second, _) = seen[
        "passes"
    ]  # gradient-free pass, trained pass
    target = terms["word_ins"]["tgt"]
    real = target.ne(model.pad)
    glanced = real & ~terms["word_ins"]["mask"]
    assert glanced.any() and not (glanced & ~real).any()
    # Per sentence: floor(0.5 x the first pass's wrong tokens) positions glanced.
    with torch.no_grad():
        logits = original(first, token_padding, _encoder_out(model, sample))
    wrong = (logits.argmax(-1).ne(target) & real).sum(1)
    assert torch.equal(glanced.sum(1), (wrong.float() * 0.5).long())
    gold = model.embed_target(target) * model.scale
    assert torch.allclose(second[glanced], gold[glanced].detach())
    assert torch.equal(second[~glanced], first[~glanced])


def _decoder_latents(model, sample):
    """The latents the decoder read in one training forward (spied on decoder_inputs)."""
    seen = {}
    original = model.decoder_inputs

    def spy(latents, latent_padding):
        seen["latents"] = latents.detach().clone()
        return original(latents, latent_padding)

    model.decoder_inputs = spy
    terms, extra = _forward(model, sample)
    model.decoder_inputs = original
    return seen["latents"], terms, extra


def test_predicted_latents_are_off_by_default_and_in_evaluation(
    build_vqvae, make_sample
):
    built = build_vqvae("--bottleneck", "hard_em", "--dropout", "0")
    model = built.model
    assert built.args.predicted_latent_ratio == 0.0
    model.train()
    sample = make_sample(built.task, "train", range(8))
    latents, _, extra = _decoder_latents(model, sample)
    real = ~extra["latent_padding"]
    # The decoder reads the target's own codes (the untrained predictor's are mostly others).
    target_vectors = model.bottleneck.lookup(extra["codes"])
    assert torch.allclose(latents[real], target_vectors[real], atol=1e-5)
    mixing = build_vqvae(
        "--predicted-latent-ratio", "1.0", "--bottleneck", "hard_em", "--dropout", "0"
    ).model
    mixing.eval()
    latents, _, extra = _decoder_latents(mixing, sample)
    real = ~extra["latent_padding"]
    assert torch.allclose(
        latents[real], mixing.bottleneck.lookup(extra["codes"])[real], atol=1e-5
    )


def test_predicted_latents_replace_the_target_codes_at_the_ratio(
    build_vqvae, make_sample
):
    built = build_vqvae(
        "--predicted-latent-ratio", "1.0", "--bottleneck", "hard_em", "--dropout", "0"
    )
    model = built.model
    model.train()
    sample = make_sample(built.task, "train", range(8))
    torch.manual_seed(0)
    latents, terms, extra = _decoder_latents(model, sample)
    real = ~extra["latent_padding"]
    best = terms["latent"]["out"].argmax(
        -1
    )  # the predictor's teacher-forced best codes
    predicted = model.bottleneck.lookup(best)
    assert torch.allclose(latents[real], predicted[real], atol=1e-5)
    # Where the predictor is wrong, the decoder read another code than the target's.
    wrong = (best.ne(extra["codes"]).any(-1)) & real
    assert wrong.any()
    target_vectors = model.bottleneck.lookup(extra["codes"])
    assert not torch.allclose(latents[wrong], target_vectors[wrong])
    half = build_vqvae(
        "--predicted-latent-ratio", "0.5", "--bottleneck", "hard_em", "--dropout", "0"
    ).model
    half.train()
    torch.manual_seed(0)
    latents, terms, extra = _decoder_latents(half, sample)
    real = ~extra["latent_padding"]
    predicted = half.bottleneck.lookup(terms["latent"]["out"].argmax(-1))
    target_vectors = half.bottleneck.lookup(extra["codes"])
    from_predicted = (latents - predicted).abs().amax(-1).lt(1e-5) & real
    from_target = (latents - target_vectors).abs().amax(-1).lt(1e-5) & real
    assert bool((from_predicted | from_target)[real].all())
    assert from_predicted.any() and (from_target & ~from_predicted).any()


def test_latent_predictor_dropout_defaults_to_dropout_and_sets_only_the_predictor(
    build_vqvae,
):
    def rates(model):
        predictor = model.latent_predictor
        return (
            {predictor.dropout.p}
            | {layer.dropout_module.p for layer in predictor.layers},
            {layer.dropout_module.p for layer in model.decoder_layers},
            {layer.dropout_module.p for layer in model.encoder.layers},
        )

    built = build_vqvae("--dropout", "0.2")
    assert built.args.latent_predictor_dropout is None
    assert rates(built.model) == ({0.2}, {0.2}, {0.2})
    model = build_vqvae("--dropout", "0.2", "--latent-predictor-dropout", "0.4").model
    assert rates(model) == ({0.4}, {0.2}, {0.2})


def test_prior_commitment_is_off_by_default_and_in_evaluation(build_vqvae, make_sample):
    built = build_vqvae("--bottleneck", "hard_em")
    assert built.args.prior_commitment_weight == 0.0
    sample = make_sample(built.task, "train", range(8))
    terms, _ = _forward(built.model.train(), sample)
    assert "prior_commit" not in terms
    on = build_vqvae("--prior-commitment-weight", "0.5").model
    terms, _ = _forward(on.eval(), sample)
    assert "prior_commit" not in terms


@pytest.mark.parametrize("bottleneck", ["soft_em", "hard_em", "vqvae"])
def test_prior_commitment_pulls_latents_to_the_predictors_expected_code(
    bottleneck, build_vqvae, make_sample
):
    built = build_vqvae(
        "--prior-commitment-weight", "0.5", "--bottleneck", bottleneck, "--dropout", "0"
    )
    model = built.model.train()
    sample = make_sample(built.task, "train", range(8))
    seen = {}
    original = model.autoencode

    def spy(*args):
        out = original(*args)
        seen["z"] = out[2]
        return out

    model.autoencode = spy
    terms, extra = _forward(model, sample)
    model.autoencode = original
    term = terms["prior_commit"]
    assert term["factor"] == 0.5
    # ||z - sum_k p_k e_k||^2 / D over the real latents, p the predictor's teacher-forced softmax.
    real = ~extra["latent_padding"]
    probs = torch.softmax(terms["latent"]["out"].float(), -1)[real]  # (M, S, K)
    expected = torch.einsum("msk,skd->msd", probs, model.bottleneck.codebook.weight)
    z = seen["z"][real].reshape(expected.shape)
    assert torch.allclose(term["loss"], ((z - expected) ** 2).mean(), rtol=1e-5)
    # Its gradient reaches the latents' side (compressor) only: not the predictor, not the codes.
    model.zero_grad()
    term["loss"].backward()
    grads = {
        n
        for n, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert any(n.startswith("compressor.") for n in grads), grads
    assert not any(n.startswith("latent_predictor.") for n in grads)
    assert not any(n.startswith("bottleneck.codebook") for n in grads)


def test_prior_commitment_enters_the_criterions_loss(build_vqvae, make_sample):
    built = build_vqvae("--prior-commitment-weight", "2.0", "--bottleneck", "hard_em")
    model, criterion = built.model.train(), built.criterion
    sample = make_sample(built.task, "train", range(8))
    torch.manual_seed(0)
    loss, _, log = criterion(model, sample)
    torch.manual_seed(0)
    terms, _ = _forward(model, sample)
    assert "prior_commit_loss" in log
    assert torch.allclose(
        log["prior_commit_loss"],
        2.0 * terms["prior_commit"]["loss"].detach(),
        rtol=1e-4,
    )


def _encoder_out(model, sample):
    net_input = sample["net_input"]
    return model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])


def test_glancing_ratio_anneals_linearly(build_vqvae):
    model = build_vqvae(
        "--glance-ratio",
        "0.5",
        "--glance-ratio-end",
        "0.3",
        "--glance-anneal-updates",
        "100",
    ).model
    for update, ratio in ((0, 0.5), (50, 0.4), (100, 0.3), (500, 0.3)):
        model.set_num_updates(update)
        assert model.glance_ratio() == pytest.approx(ratio)


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--glance-ratio", "1.5"), "--glance-ratio must be in [0.0, 1.0], got 1.5"),
        (("--glance-ratio-end", "-0.1"), "--glance-ratio-end must be in [0.0, 1.0]"),
        (("--glance-anneal-updates", "-1"), "--glance-anneal-updates must be >= 0"),
        (
            ("--predicted-latent-ratio", "1.5"),
            "--predicted-latent-ratio must be in [0.0, 1.0], got 1.5",
        ),
        (
            ("--prior-commitment-weight", "-1"),
            "--prior-commitment-weight must be >= 0.0, got -1",
        ),
        (("--dropout", "1.0"), "--dropout must be in [0.0, 1.0), got 1.0"),
        (
            ("--latent-predictor-dropout", "-0.1"),
            "--latent-predictor-dropout must be in [0.0, 1.0), got -0.1",
        ),
        (("--num-slices", "0"), "--num-slices must be >= 1, got 0"),
        (
            ("--latent-predictor-only", "--token-decoder-only"),
            "--latent-predictor-only and --token-decoder-only are two separate stages",
        ),
        (("--code-dim", "-8"), "--code-dim must be >= 0, got -8"),
        (("--codebook-decay", "1"), "--codebook-decay must be in [0.0, 1.0), got 1"),
        (
            ("--latent-length", "source", "--length-ratio", "0"),
            "--length-ratio must be a finite number > 0, got 0",
        ),
        (("--soft-em-temperature", "0"), "--soft-em-temperature must be a finite"),
        (("--soft-em-temperature", "inf"), "--soft-em-temperature must be a finite"),
        (
            ("--commitment-weight", "nan"),
            "--commitment-weight must be a finite number, got nan",
        ),
        (
            ("--dead-code-threshold", "inf"),
            "--dead-code-threshold must be a finite number, got inf",
        ),
        (("--num-samples", "0"), "--num-samples must be >= 1"),
        (
            ("--encoder-attention-heads", "3"),
            "--encoder-embed-dim (16) must be divisible by --encoder-attention-heads (3)",
        ),
    ],
)
def test_option_ranges_are_validated_with_the_flag_name(build_vqvae, flags, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_vqvae(*flags)


def test_another_task_or_criterion_is_refused_with_what_to_use(
    build_fairseq, tiny_databin, build_vqvae, make_sample
):
    """Under fairseq's default --task translation the EM codebook would never update (its M-step
    runs in translation_vqvae's optimizer_step), silently; another criterion cannot train it."""
    with pytest.raises(ValueError, match="needs --task translation_vqvae"):
        build_fairseq(tiny_databin, "--share-all-embeddings", task="translation")
    built = build_vqvae()
    sample = make_sample(built.task, "train", range(4))
    net_input = sample["net_input"]
    with pytest.raises(ValueError, match="trains with --criterion vqvae_em"):
        built.model(
            net_input["src_tokens"],
            net_input["src_lengths"],
            net_input["prev_output_tokens"],
        )


def test_every_numeric_option_has_a_validated_range():
    from fairseq_vqvae import config

    numeric = {
        f.name
        for f in config.VQVAENATConfig.__dataclass_fields__.values()
        if f.type in (int, float, Optional[int], Optional[float])
        and not str(f.default).startswith("${")
    }
    assert numeric == set(config.RANGES) | set(config.POSITIVE)


@pytest.mark.parametrize(
    "key", ["bottleneck.codebook.weight", "bottleneck.codebook.ema_sums"]
)
def test_a_checkpoint_with_a_non_finite_codebook_is_refused(build_vqvae, key):
    """It used to decode to empty hypotheses with score nan, exit 0."""
    built = build_vqvae("--bottleneck", "hard_em")
    state = {k: v.clone() for k, v in built.model.state_dict().items()}
    state[key][0, 3] = float("nan")
    with pytest.raises(
        ValueError, match=re.escape(f"codebook is not finite ({key} holds NaN or inf)")
    ):
        build_vqvae("--bottleneck", "hard_em").model.load_state_dict(state)


def test_the_task_logs_a_diverged_codebook_every_health_interval(build_vqvae, caplog):
    from fairseq_vqvae import task as task_module

    built = build_vqvae()
    assert task_module.log_codebook_health(built.model) == []
    built.model.bottleneck.codebook.weight.mul_(1e3)
    with caplog.at_level("WARNING", logger="fairseq_vqvae.task"):
        problems = task_module.log_codebook_health(built.model)
    assert len(problems) == 1 and "the run is diverging" in caplog.text
    assert task_module.HEALTH_INTERVAL == 100


def test_the_health_check_runs_after_every_100th_update_not_the_first(
    build_vqvae, monkeypatch
):
    """The first M-step of the uniform start leaves codes of norm ~500 for a few updates:
    checked there, every default run was told it was diverging."""
    from fairseq_vqvae import task as task_module

    built = build_vqvae()
    checked_after = []
    monkeypatch.setattr(
        task_module, "log_codebook_health", lambda model: checked_after.append(current)
    )
    optimizer = SimpleNamespace(step=lambda: None)
    for current in range(250):  # fairseq passes the updates done before this one
        built.task.optimizer_step(optimizer, built.model, current)
    assert checked_after == [99, 199]


def test_a_checkpoint_refuses_same_size_dictionaries_and_another_kind(
    build_vqvae,
):
    built = build_vqvae()
    state = built.model.state_dict()
    assert "signature" in state
    # the same symbols: loads; a checkpoint without a signature (older): loads
    build_vqvae().model.load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "signature"}
    build_vqvae().model.load_state_dict(old)
    # same size, two symbols swapped
    other = build_vqvae()
    symbols = other.task.target_dictionary.symbols
    symbols[10], symbols[11] = symbols[11], symbols[10]
    from fairseq_vqvae.checkpoint_checks import signature

    other.model.signature.copy_(
        signature(
            other.model.cfg, other.task.source_dictionary, other.task.target_dictionary
        )
    )
    with pytest.raises(ValueError, match="dictionary mismatch: the data's target"):
        other.model.load_state_dict(state)
    hard = build_vqvae("--bottleneck", "hard_em")
    with pytest.raises(
        ValueError,
        match="trained with --bottleneck soft_em, the command line says --bottleneck hard_em",
    ):
        hard.model.load_state_dict(state)
    parallel = build_vqvae("--latent-predictor-kind", "parallel")
    with pytest.raises(
        ValueError,
        match="trained with --latent-predictor-kind autoregressive, the command line says "
        "--latent-predictor-kind parallel",
    ):
        parallel.model.load_state_dict(state)
    # saved before the predictor's kind was recorded: read as autoregressive
    three = {**state, "signature": state["signature"][:3].clone()}
    build_vqvae().model.load_state_dict(three)
    with pytest.raises(ValueError, match="trained with --latent-predictor-kind auto"):
        build_vqvae("--latent-predictor-kind", "parallel").model.load_state_dict(
            {**state, "signature": state["signature"][:3].clone()}
        )


def test_an_empty_or_misaligned_split_gets_a_one_line_error(
    build_vqvae, tiny_databin, tmp_path
):
    import shutil

    empty = tmp_path / "empty"
    shutil.copytree(tiny_databin, empty)
    (empty / "valid.src-tgt.tgt.bin").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"the valid set is empty \(.*valid.src-tgt.tgt.bin"
    ):
        build_vqvae(databin=empty).task.load_dataset("valid")
    misaligned = tmp_path / "misaligned"
    shutil.copytree(tiny_databin, misaligned)
    for ext in ("bin", "idx"):  # the target side of the test set instead of valid's
        shutil.copy(
            misaligned / f"test.src-tgt.tgt.{ext}",
            misaligned / f"valid.src-tgt.tgt.{ext}",
        )
    with pytest.raises(
        ValueError, match="the valid set's src and tgt files hold different numbers"
    ):
        build_vqvae(databin=misaligned).task.load_dataset("valid")


def test_a_split_binarized_with_another_dictionary_gets_a_one_line_error(
    build_vqvae, tiny_databin, tmp_path
):
    import shutil

    from fairseq.data import indexed_dataset

    build = build_vqvae()
    build.task.load_dataset("valid")  # in range: loads
    size = len(build.task.target_dictionary)
    other = tmp_path / "other"
    shutil.copytree(tiny_databin, other)
    prefix = str(other / "valid.src-tgt.tgt")
    builder = indexed_dataset.make_builder(
        prefix + ".bin", impl="mmap", vocab_size=size + 10
    )
    for sentence in build.task.dataset("valid").tgt:  # one id past the dictionary
        builder.add_item(torch.cat([sentence[:-1], torch.tensor([size, 2])]))
    builder.finalize(prefix + ".idx")
    with pytest.raises(
        ValueError,
        match=rf"the valid set's tgt side holds token id {size}, the dictionary dict.tgt.txt "
        rf"in .* has {size} entries: the split was binarized with another dictionary",
    ):
        build_vqvae(databin=other).task.load_dataset("valid")


# The predictor-only stage (--latent-predictor-only) ----------------------------------


def test_single_part_stages_are_off_by_default(build_vqvae):
    built = build_vqvae("--dropout", "0.3")
    assert built.args.latent_predictor_only is False
    assert built.args.token_decoder_only is False
    model = built.model.train()
    assert model.trains_autoencoder and model.encoder.training
    assert all(param.requires_grad for param in model.parameters())


def test_latent_predictor_only_trains_the_predictor_on_frozen_nearest_codes(
    build_vqvae, make_sample
):
    built = build_vqvae("--latent-predictor-only", "--dropout", "0.3")
    model, task, criterion = built.model, built.task, built.criterion
    model.train()
    assert model.training and not model.trains_autoencoder
    assert model.latent_predictor.training
    assert not (model.encoder.training or model.compressor.training)
    assert not (model.bottleneck.training or model.dropout.training)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("latent_predictor.") for n in trained)
    sample = make_sample(task, "train", range(8))
    # No dropout outside the predictor: the frozen parts give the same codes; the decoder
    # is left out (its word loss would only be logged), and measured in evaluation.
    first, _ = _forward(model, sample)
    second, _ = _forward(model, sample)
    assert "word_ins" not in first and torch.equal(
        first["latent"]["codes"], second["latent"]["codes"]
    )
    model.eval()
    with torch.no_grad():
        evaluated, _ = _forward(model, sample)
    model.train()
    assert "word_ins" in evaluated
    _, _, logged = criterion(model, sample)
    assert "nll_loss" not in logged and "word_ins_loss" not in logged
    with metrics.aggregate() as agg:
        criterion.reduce_metrics([logged])
    assert "nll_loss" not in agg.get_smoothed_values()
    assert "latent_loss" in agg.get_smoothed_values()
    # Under soft EM the targets are the nearest codes, not Monte-Carlo samples.
    latent = first["latent"]
    expected = torch.nn.functional.one_hot(latent["codes"], latent["tgt"].shape[-1])
    assert torch.equal(latent["tgt"], expected.float())
    before = copy.deepcopy(model.state_dict())
    optimizer = _adam(built)
    task.train_step(sample, model, criterion, optimizer, 0)
    task.optimizer_step(optimizer, model, 0)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("latent_predictor.") for n in changed), changed


# The token-decoder stage (--token-decoder-only) ----------------------------------------

DECODER_PARTS = ("decompressor.", "decoder_layers.", "decoder_norm.")


def test_token_decoder_only_trains_the_decoder_on_frozen_codes(
    build_vqvae, make_sample
):
    built = build_vqvae("--token-decoder-only", "--dropout", "0.3")
    model, task, criterion = built.model, built.task, built.criterion
    model.train()
    assert model.trains_decoder and not model.trains_autoencoder
    assert model.decompressor.training and all(
        layer.training for layer in model.decoder_layers
    )
    assert not (model.encoder.training or model.compressor.training)
    assert not (model.bottleneck.training or model.latent_predictor.training)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(DECODER_PARTS) for n in trained), trained
    sample = make_sample(task, "train", range(8))
    first, _ = _forward(model, sample)
    second, _ = _forward(model, sample)
    # The frozen autoencoder gives the nearest codes, the same every time; the word loss
    # trains, the latent loss is only measured.
    assert torch.equal(first["latent"]["codes"], second["latent"]["codes"])
    assert first["word_ins"]["out"].requires_grad
    assert not first["latent"]["out"].requires_grad
    before = copy.deepcopy(model.state_dict())
    optimizer = _adam(built)
    for update in range(2):  # the M-step would move the codebook from the second on
        task.train_step(sample, model, criterion, optimizer, update)
        task.optimizer_step(optimizer, model, update)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith(DECODER_PARTS) for n in changed), changed


def test_token_decoder_only_reads_the_predictors_greedy_codes_at_the_ratio(
    build_vqvae, make_sample
):
    built = build_vqvae(
        "--token-decoder-only", "--predicted-latent-ratio", "1.0", "--dropout", "0"
    )
    model = built.model.train()
    sample = make_sample(built.task, "train", range(8))
    latents, terms, extra = _decoder_latents(model, sample)
    real = ~extra["latent_padding"]
    net_input = sample["net_input"]
    with torch.no_grad():
        encoder_out = model.encoder(
            net_input["src_tokens"], src_lengths=net_input["src_lengths"]
        )
        greedy, _ = model.latent_predictor.search(encoder_out, real.sum(1))
    predicted = model.bottleneck.lookup(greedy[:, 0])
    assert torch.allclose(latents[real], predicted[real], atol=1e-5)
    # Free-running, as the generator decodes: not the teacher-forced best codes everywhere.
    forced = terms["latent"]["out"].argmax(-1)
    assert not torch.equal(greedy[:, 0][real], extra["codes"][real])
    assert forced.shape == greedy[:, 0].shape
    # Without the ratio the stage reads the target's own codes.
    plain = build_vqvae("--token-decoder-only", "--dropout", "0").model.train()
    latents, _, extra = _decoder_latents(plain, sample)
    real = ~extra["latent_padding"]
    target_vectors = plain.bottleneck.lookup(extra["codes"])
    assert torch.allclose(latents[real], target_vectors[real], atol=1e-5)


@pytest.mark.parametrize("flags", [(), ("--post-norm",), ("--num-slices", "2")])
def test_cached_latent_steps_match_fairseqs_incremental_layers(
    build_vqvae, make_sample, flags
):
    """The predictor's hand-written step (plain key/value tensors, packed projections) gives
    fairseq's incremental layers' logits at every step, through a beam reordering and over
    padded sources; search takes it in evaluation only (training, and fairseq-generate's
    --retain-dropout, keep dropout through fairseq's layers). The token-decoder stage searches
    with the predictor frozen in evaluation, so it takes the cached steps too."""
    from fairseq_vqvae.latent_search import CachedSteps, FairseqSteps

    built = build_vqvae(*flags)
    model = built.model.eval()
    predictor = model.latent_predictor
    sample = make_sample(built.task, "test", range(3))  # sources of several lengths
    net_input = sample["net_input"]
    assert bool(net_input["src_tokens"].eq(built.task.source_dictionary.pad()).any())
    with torch.no_grad():
        encoder_out = model.encoder(
            net_input["src_tokens"], src_lengths=net_input["src_lengths"]
        )
        # Two rows a sentence, as the search's beams have.
        encoder_out = model.encoder.reorder_encoder_out(
            encoder_out, torch.tensor([0, 0, 1, 1, 2, 2])
        )
        assert CachedSteps.supports(predictor)
        cached = CachedSteps(predictor, encoder_out)
        plain = FairseqSteps(predictor, encoder_out)
        codes = torch.zeros(6, 1, predictor.num_slices, dtype=torch.long)
        for step in range(4):
            x = predictor.embed(codes, offset=step)
            expected, got = plain(x), cached(x)
            assert got.shape == expected.shape == (6, 1, predictor.num_slices, 8)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            # Rows of one sentence tell apart from the second step on.
            apart = (expected.argmax(-1) + torch.arange(6)[:, None, None] % 2) % 8
            codes = torch.cat([codes, apart], dim=1)
            if step == 1:  # each sentence's rows swap, as beams do
                order = torch.tensor([1, 0, 3, 2, 5, 4])
                cached.reorder(order)
                plain.reorder(order)
                codes = codes[order]
    predictor.layers[0].self_attn.dropout_module.apply_during_inference = True
    assert not CachedSteps.supports(predictor)  # --retain-dropout
    predictor.layers[0].self_attn.dropout_module.apply_during_inference = False
    assert CachedSteps.supports(predictor)
    model.train()
    assert not CachedSteps.supports(predictor)
