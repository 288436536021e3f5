"""Contract tests of VQBottleneck, parametrized over every bottleneck variant."""

import copy

import pytest
import torch

from fairseq_vqvae.bottleneck import (
    BOTTLENECKS,
    BottleneckConfig,
    Codebook,
    VQBottleneck,
    em,
)

EM_VARIANTS = ("hard_em", "soft_em")
CODE_DIM, CODEBOOK_SIZE = 8, 6


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def make_vq(bottleneck, num_slices=1, input_dim=None, **overrides):
    config = BottleneckConfig(
        bottleneck=bottleneck,
        codebook_size=CODEBOOK_SIZE,
        code_dim=CODE_DIM,
        input_dim=input_dim,
        num_slices=num_slices,
        num_samples=3,
        **overrides,
    )
    return VQBottleneck(config)


def snapshot(module):
    return {
        name: t.detach().clone()
        for name, t in [*module.named_buffers(), *module.named_parameters()]
    }


def assert_bit_identical(before, module):
    after = snapshot(module)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert tensor.dtype == after[name].dtype, name
        assert torch.equal(tensor, after[name]), name


@pytest.mark.parametrize("input_dim", [None, 12])
@pytest.mark.parametrize("num_slices", [1, 2])
@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_output_shapes(bottleneck, num_slices, input_dim):
    vq = make_vq(bottleneck, num_slices, input_dim)
    x = torch.randn(2, 5, input_dim or CODE_DIM)  # (B, T, C)
    padding_mask = torch.zeros(2, 5, dtype=torch.bool)
    padding_mask[1, 3:] = True
    out = vq(x, padding_mask)
    assert out.quantized.shape == x.shape and out.quantized.dtype == x.dtype
    assert out.codes.shape == (2, 5, num_slices) and out.codes.dtype == torch.int64
    assert ((out.codes >= 0) & (out.codes < CODEBOOK_SIZE)).all()
    assert out.soft_targets.shape == (2, 5, num_slices, CODEBOOK_SIZE)
    torch.testing.assert_close(out.soft_targets.sum(-1), torch.ones(2, 5, num_slices))
    assert out.commit_loss.shape == () and out.codebook_loss.shape == ()
    assert (out.codebook_loss > 0) == (bottleneck == "vqvae")
    assert set(out.stats) == {"code_perplexity", "codes_in_use", "ema_perplexity"}
    if bottleneck == "vqvae":
        assert out.em_stats is None
    else:
        slice_dim = CODE_DIM // num_slices
        assert out.em_stats.counts.shape == (num_slices, CODEBOOK_SIZE)
        assert out.em_stats.sums.shape == (num_slices, CODEBOOK_SIZE, slice_dim)
        assert out.em_stats.candidates.shape == (
            8,
            num_slices,
            slice_dim,
        )  # 10 - 2 padded
        torch.testing.assert_close(
            out.em_stats.counts.sum(-1), torch.full((num_slices,), 8.0)
        )
    vq.eval()
    assert vq(x, padding_mask).em_stats is None


@pytest.mark.parametrize("input_dim", [None, 12])
@pytest.mark.parametrize("num_slices", [1, 2])
@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_eval_lookup_of_codes_equals_quantized(bottleneck, num_slices, input_dim):
    vq = make_vq(bottleneck, num_slices, input_dim).eval()
    x = torch.randn(3, 4, input_dim or CODE_DIM)
    out = vq(x)
    # NB: not bit-exact: quantized is x + (q - x).detach(), which rounds at the ulp of |x|.
    torch.testing.assert_close(
        vq.lookup(out.codes), out.quantized, rtol=1e-5, atol=1e-5
    )
    assert torch.equal(out.soft_targets.argmax(-1), out.codes)
    if input_dim is None:  # the quantized vectors are codebook rows
        weight = vq.codebook.weight
        codes = torch.stack(
            [weight[s, out.codes[..., s]] for s in range(num_slices)], -2
        )
        torch.testing.assert_close(
            out.quantized, codes.reshape(3, 4, CODE_DIM), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("num_slices", [1, 2])
@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_straight_through_gradient_is_identity(bottleneck, num_slices):
    vq = make_vq(bottleneck, num_slices)
    x = torch.randn(2, 3, CODE_DIM, requires_grad=True)
    upstream = torch.randn(2, 3, CODE_DIM)
    out = vq(x)
    assert not torch.equal(out.quantized, x)  # it did quantize
    (out.quantized * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)


def test_vqvae_codebook_gets_gradient_only_from_codebook_loss():
    vq = make_vq("vqvae")
    out = vq(torch.randn(4, CODE_DIM, requires_grad=True))
    (out.quantized.sum() + out.commit_loss).backward()
    assert vq.codebook.weight.grad is None or not vq.codebook.weight.grad.any()
    vq(torch.randn(4, CODE_DIM)).codebook_loss.backward()
    assert vq.codebook.weight.grad.any()


def _padded_pair(bottleneck):
    vq = make_vq(bottleneck, num_slices=2)
    x = torch.randn(7, CODE_DIM)
    garbage = torch.randn(4, CODE_DIM) * 50 + 3
    padding_mask = torch.cat(
        [torch.zeros(7, dtype=torch.bool), torch.ones(4, dtype=torch.bool)]
    )
    torch.manual_seed(5)  # soft_em samples: same draws for the 7 real rows
    plain = vq(x)
    torch.manual_seed(5)
    padded = vq(torch.cat([x, garbage]), padding_mask)
    return plain, padded


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_padding_does_not_change_statistics(bottleneck):
    plain, padded = _padded_pair(bottleneck)
    assert torch.equal(plain.commit_loss, padded.commit_loss)
    assert torch.equal(plain.codebook_loss, padded.codebook_loss)
    for key in plain.stats:
        assert torch.equal(plain.stats[key], padded.stats[key]), key
    if bottleneck == "vqvae":
        return
    for a, b in zip(plain.em_stats, padded.em_stats):
        assert torch.equal(a, b)


def test_padding_inside_sequences_is_ignored():
    vq = make_vq("hard_em")
    x = torch.randn(2, 4, CODE_DIM)  # (B, T, C)
    padding_mask = torch.tensor(
        [[False, False, False, True], [False, True, True, True]]
    )
    padded = vq(x.masked_fill(padding_mask[..., None], 1e4), padding_mask)
    plain = vq(x[~padding_mask])  # the 4 real positions, (N, C)
    for a, b in zip(plain.em_stats, padded.em_stats):
        assert torch.equal(a, b)
    assert torch.equal(plain.commit_loss, padded.commit_loss)


@pytest.mark.parametrize("shape", [(0, CODE_DIM), (2, 0, CODE_DIM)])
@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_zero_length_batch(bottleneck, shape):
    vq = make_vq(bottleneck, num_slices=2)
    weight = vq.codebook.weight.detach().clone()
    out = vq(torch.randn(*shape), torch.zeros(shape[:-1], dtype=torch.bool))
    assert out.quantized.shape == shape
    assert out.codes.shape == (*shape[:-1], 2)
    assert out.commit_loss.item() == 0.0 and out.codebook_loss.item() == 0.0
    assert out.stats["code_perplexity"].item() == 0.0
    vq.step_(out.em_stats)
    assert torch.equal(
        vq.codebook.weight, weight
    )  # nothing to learn from, nothing changes
    vq.eval()
    assert vq(torch.randn(*shape)).quantized.shape == shape


@pytest.mark.parametrize("bottleneck", EM_VARIANTS)
def test_zero_length_batch_after_training_keeps_codes_finite(bottleneck):
    vq = make_vq(bottleneck, decay=0.5)
    vq.step_(vq(torch.randn(10, CODE_DIM)).em_stats)
    counts = vq.codebook.ema_counts.clone()
    vq.step_(vq(torch.randn(0, CODE_DIM)).em_stats)
    assert torch.isfinite(vq.codebook.weight).all()
    torch.testing.assert_close(vq.codebook.ema_counts, 0.5 * counts)


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_em_buffers_are_not_parameters(bottleneck):
    vq = make_vq(bottleneck, input_dim=12)
    parameter_ids = {id(p) for p in vq.parameters()}
    state = vq.state_dict()
    assert "codebook.weight" in state
    if bottleneck == "vqvae":
        assert id(vq.codebook.weight) in parameter_ids
        assert isinstance(vq.codebook.weight, torch.nn.Parameter)
        assert "codebook.ema_counts" not in state
        return
    buffers = dict(vq.named_buffers())
    for name in ("weight", "ema_counts", "ema_sums", "pending_counts", "pending_sums"):
        assert id(buffers[f"codebook.{name}"]) not in parameter_ids, name
    assert not isinstance(vq.codebook.weight, torch.nn.Parameter)
    assert {
        "codebook.ema_counts",
        "codebook.ema_sums",
        "codebook.num_updates",
    } <= state.keys()
    assert not any("pending" in key for key in state)
    assert len(list(vq.parameters())) == 4  # project_in/out weight and bias only


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_eval_and_unaccumulated_batches_leave_state_bit_identical(bottleneck):
    vq = make_vq(bottleneck, num_slices=2, input_dim=12, dead_code_threshold=0.5)
    before = snapshot(vq)
    x = torch.randn(3, 4, 12)
    vq.eval()
    vq(x)
    vq.train()
    dummy = vq(x)  # fairseq dummy / ignore_grad batch: computed, never accumulated
    vq.accumulate_(None)  # what an eval-mode output hands over
    assert_bit_identical(before, vq)
    if (
        bottleneck != "vqvae"
    ):  # the comparison can fail: a real update changes the state
        vq.step_(dummy.em_stats)
        with pytest.raises(AssertionError):
            assert_bit_identical(before, vq)


def _micro_batches(sizes):
    return [torch.randn(n, CODE_DIM) for n in sizes]


@pytest.mark.parametrize("num_slices", [1, 2])
def test_accumulated_micro_batches_equal_one_concatenated_update(num_slices):
    accumulated = make_vq("hard_em", num_slices, decay=0.7)
    concatenated = copy.deepcopy(accumulated)
    for _ in range(3):  # optimizer updates
        batches = _micro_batches([5, 0, 3, 8])  # k = 4 micro-batches, one empty
        for batch in batches:
            accumulated.accumulate_(accumulated(batch).em_stats)
        accumulated.update_()
        concatenated.step_(concatenated(torch.cat(batches)).em_stats)
        for name, tensor in concatenated.codebook.state_dict().items():
            torch.testing.assert_close(
                accumulated.codebook.state_dict()[name], tensor, msg=name
            )
    assert int(accumulated.codebook.num_updates) == 3
    # Not a tautology: one update per micro-batch is a different algorithm.
    per_micro_batch = copy.deepcopy(concatenated)
    for batch in _micro_batches([5, 3, 8]):
        per_micro_batch.step_(per_micro_batch(batch).em_stats)
    assert not torch.allclose(
        per_micro_batch.codebook.weight, concatenated.codebook.weight
    )


def test_soft_em_accumulation_with_fixed_responsibilities():
    accumulated = Codebook(2, CODEBOOK_SIZE, 3, decay=0.7)
    concatenated = copy.deepcopy(accumulated)
    for _ in range(3):
        batches = [torch.randn(n, 2, 3) for n in (4, 6, 1)]  # (N, S, D)
        for batch in batches:
            r = em.soft_responsibilities(accumulated.distances(batch), temperature=2.0)
            accumulated.accumulate_(*em.em_statistics(batch, r))
        accumulated.update_()
        union = torch.cat(batches)
        r = em.soft_responsibilities(concatenated.distances(union), temperature=2.0)
        concatenated.accumulate_(*em.em_statistics(union, r))
        concatenated.update_()
        for name, tensor in concatenated.state_dict().items():
            torch.testing.assert_close(accumulated.state_dict()[name], tensor, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bottleneck", EM_VARIANTS)
def test_low_precision_cast_keeps_em_buffers_fp32(bottleneck, dtype):
    vq = make_vq(bottleneck, input_dim=12, dead_code_threshold=0.5)
    vq.step_(vq(torch.randn(6, 12)).em_stats)
    before = {k: v.clone() for k, v in vq.codebook.named_buffers()}
    vq.half() if dtype == torch.float16 else vq.to(dtype)
    assert vq.project_in.weight.dtype == dtype  # the rest of the module was cast
    for name, tensor in vq.codebook.named_buffers():
        assert tensor.dtype == before[name].dtype, name  # fp32 (num_updates: int64)
        assert torch.equal(tensor, before[name]), name
    out = vq(torch.randn(6, 12, dtype=dtype))
    assert out.quantized.dtype == dtype
    vq.step_(out.em_stats)
    assert vq.codebook.weight.dtype == torch.float32
    assert vq.codebook.ema_sums.dtype == torch.float32


def test_vqvae_codebook_is_cast_like_any_parameter():
    vq = make_vq("vqvae").to(torch.bfloat16)
    assert vq.codebook.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("dead_code_threshold", [0.0, 0.5])
@pytest.mark.parametrize("bottleneck", EM_VARIANTS)
def test_state_dict_round_trip_gives_identical_next_update(
    bottleneck, dead_code_threshold
):
    vq = make_vq(
        bottleneck, num_slices=2, decay=0.6, dead_code_threshold=dead_code_threshold
    )
    for _ in range(2):
        vq.step_(vq(torch.randn(9, CODE_DIM)).em_stats)
    torch.manual_seed(123)  # a fresh module with a different initial codebook
    fresh = make_vq(
        bottleneck, num_slices=2, decay=0.6, dead_code_threshold=dead_code_threshold
    )
    assert not torch.equal(fresh.codebook.weight, vq.codebook.weight)
    fresh.load_state_dict(vq.state_dict())
    for name, tensor in vq.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    x = torch.randn(9, CODE_DIM)
    for module in (vq, fresh):
        torch.manual_seed(7)  # same soft_em samples and restart candidates
        module.step_(module(x).em_stats)
    for name, tensor in vq.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def _dead_code_setup(threshold):
    vq = make_vq("hard_em", decay=0.9, dead_code_threshold=threshold)
    centres = torch.randn(2, CODE_DIM)
    weight = torch.full(
        (1, CODEBOOK_SIZE, CODE_DIM), 100.0
    )  # codes 2..5: far away, dead
    weight[0, :2] = centres
    vq.codebook.weight.copy_(weight)
    vq.codebook.ema_sums.copy_(weight)
    return vq, centres


def test_dead_codes_are_restarted_from_batch_vectors():
    restarted, centres = _dead_code_setup(threshold=0.5)
    plain = copy.deepcopy(restarted)
    plain.codebook.dead_code_threshold = 0.0
    x = centres[torch.arange(20) % 2] + 0.1 * torch.randn(20, CODE_DIM)
    for module in (restarted, plain):
        out = module(x)
        assert set(out.codes.flatten().tolist()) == {0, 1}
        module.step_(out.em_stats)
    codebook = restarted.codebook
    # Codes in use: the same M-step as without restarts, bit for bit.
    assert torch.equal(codebook.weight[0, :2], plain.codebook.weight[0, :2])
    assert torch.equal(codebook.ema_counts[0, :2], plain.codebook.ema_counts[0, :2])
    assert torch.equal(codebook.ema_sums[0, :2], plain.codebook.ema_sums[0, :2])
    # Dead codes: replaced by vectors of this batch, EMA state reset to the threshold
    # (bias-corrected after 1 update: 0.5 * (1 - 0.9) = 0.05) times the new vector.
    for k in range(2, CODEBOOK_SIZE):
        assert (codebook.weight[0, k] == x).all(-1).any(), k
    torch.testing.assert_close(codebook.ema_counts[0, 2:], torch.full((4,), 0.05))
    torch.testing.assert_close(codebook.ema_sums[0, 2:], 0.05 * codebook.weight[0, 2:])
    assert (
        plain.codebook.weight[0, 2:].abs() > 1e3
    ).all()  # without restarts: still dead
    # The restarted codes now take part: the next batch uses more than 2 codes.
    assert len(set(restarted(x).codes.flatten().tolist())) > 2


@pytest.mark.parametrize(
    "grace, expected", [(0, [4, 4, 4, 4, 4]), (3, [4, 0, 0, 4, 0])]
)
def test_a_restarted_code_is_not_restarted_again_within_its_grace_period(
    grace, expected
):
    """Restart candidates far from the batch: restarted codes stay unused and fall below the
    threshold at the next M-step."""
    vq, centres = _dead_code_setup(threshold=0.5)
    vq.codebook.restart_grace = grace
    x = centres[torch.arange(20) % 2] + 0.1 * torch.randn(20, CODE_DIM)
    far = 50.0 + torch.randn(20, 1, CODE_DIM)
    restarts = []
    for _ in expected:
        out = vq(x)
        assert set(out.codes.flatten().tolist()) <= {0, 1}  # restarted codes unused
        stats = out.em_stats
        vq.codebook.accumulate_(stats.counts, stats.sums, far)
        vq.update_()
        restarts.append(vq.codebook.restarts)
    assert restarts == expected
    last = max(i for i, n in enumerate(expected) if n)
    assert vq.codebook.restarted_at[0, 2:].tolist() == [last] * 4
    assert vq.codebook.restarted_at[0, :2].tolist() == [-1, -1]  # never restarted


def test_a_checkpoint_from_before_grace_periods_loads_with_no_code_restarted():
    vq, _ = _dead_code_setup(threshold=0.5)
    state = vq.state_dict()
    del state["codebook.restarted_at"]
    fresh, _ = _dead_code_setup(threshold=0.5)
    fresh.codebook.restarted_at.fill_(5)
    fresh.load_state_dict(state)
    assert bool((fresh.codebook.restarted_at == -1).all())


def test_restart_leaves_codebook_alone_when_no_code_is_dead():
    restarted = make_vq("hard_em", decay=0.9, dead_code_threshold=0.5)
    plain = copy.deepcopy(restarted)
    plain.codebook.dead_code_threshold = 0.0
    x = restarted.codebook.weight[0].repeat(3, 1) + 0.01 * torch.randn(
        3 * CODEBOOK_SIZE, CODE_DIM
    )
    for module in (restarted, plain):
        module.step_(module(x).em_stats)
    for name, tensor in plain.codebook.state_dict().items():
        assert torch.equal(restarted.codebook.state_dict()[name], tensor), name


@pytest.mark.parametrize("variant", ["hard_em", "soft_em"])
def test_non_finite_statistics_skip_the_update_and_leave_the_codebook_intact(variant):
    torch.manual_seed(0)
    vq = VQBottleneck(BottleneckConfig(bottleneck=variant, codebook_size=4, code_dim=2))
    x = torch.randn(6, 2)
    x[2, 1] = float("nan")
    state = {k: v.clone() for k, v in vq.codebook.state_dict().items()}
    vq.step_(vq(x).em_stats)
    for key, value in vq.codebook.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert float(vq.codebook.pending_counts.abs().sum()) == 0.0  # nothing carried over
    vq.step_(vq(torch.randn(6, 2)).em_stats)  # the next finite update applies normally
    assert int(vq.codebook.num_updates) == 1
