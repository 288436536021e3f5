"""--codebook-init data: the first update sets the codes from its latents (every bottleneck)."""

import pytest
import torch

from fairseq_vqvae.bottleneck import (
    BOTTLENECKS,
    BottleneckConfig,
    Codebook,
    VQBottleneck,
    em,
)

CODE_DIM, CODEBOOK_SIZE = 4, 6


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def make_vq(bottleneck, init="data", num_slices=1, **overrides):
    return VQBottleneck(
        BottleneckConfig(
            bottleneck=bottleneck,
            codebook_size=CODEBOOK_SIZE,
            code_dim=CODE_DIM,
            num_slices=num_slices,
            num_samples=3,
            decay=0.9,
            codebook_init=init,
            **overrides,
        )
    )


def _rows(x, num_slices):
    return x.reshape(-1, num_slices, CODE_DIM // num_slices)  # (N, S, D/S)


@pytest.mark.parametrize("num_slices", [1, 2])
@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_first_update_sets_every_code_to_a_latent_of_that_update(
    bottleneck, num_slices
):
    vq = make_vq(bottleneck, num_slices=num_slices)
    assert vq.codebook.awaits_data
    x = torch.randn(10, CODE_DIM) + 5.0  # far from the uniform codes near 0
    vq.train()
    vq.step_(vq(x).em_stats)
    codebook = vq.codebook
    assert not codebook.awaits_data
    rows = _rows(x, num_slices)
    for s in range(num_slices):
        # every code is one of this slice's 10 vectors, and no two codes are the same one
        matches = (codebook.weight[s][:, None] == rows[None, :, s]).all(-1)  # (K, N)
        assert (matches.sum(1) == 1).all()
        assert (matches.sum(0) <= 1).all()
    if bottleneck != "vqvae":
        # EMA state of one update in which each of the 6 codes had 10 / 6 of the vectors
        expected = 10 / CODEBOOK_SIZE * (1 - 0.9)
        torch.testing.assert_close(
            codebook.ema_counts, torch.full_like(codebook.ema_counts, expected)
        )
        torch.testing.assert_close(
            codebook.ema_sums, codebook.weight * codebook.ema_counts[..., None]
        )
        assert int(codebook.num_updates) == 1


def test_fewer_latents_than_codes_are_all_used_and_repeats_jittered():
    vq = make_vq("hard_em")
    x = torch.randn(4, CODE_DIM)
    vq.step_(vq(x).em_stats)
    weight = vq.codebook.weight[0]
    order = (weight[:4, None] == x[None]).all(-1).float().argmax(1)
    assert (
        torch.equal(weight[:4], x[order]) and order.unique().numel() == 4
    )  # each once
    nearest = em.squared_distances(weight[4:, None], weight[None, :4]).squeeze(1)
    gap = nearest.min(-1).values
    assert (gap > 0).all() and (gap < 0.01).all()  # close to a latent, not equal to one


def test_the_second_update_is_an_m_step():
    vq = make_vq("hard_em")
    x = torch.randn(12, CODE_DIM)
    vq.step_(vq(x).em_stats)
    initial = vq.codebook.weight.clone()
    out = vq(x)
    vq.step_(out.em_stats)
    codebook = vq.codebook
    assert int(codebook.num_updates) == 2
    torch.testing.assert_close(
        codebook.weight,
        em.codebook_from_ema(codebook.ema_counts, codebook.ema_sums, codebook.epsilon),
    )
    assert not torch.equal(codebook.weight, initial)


def test_uniform_is_the_default_and_never_waits():
    assert BottleneckConfig().codebook_init == "uniform"
    assert not Codebook(1, 3, 2).awaits_data
    vq = make_vq("hard_em", init="uniform")
    before = vq.codebook.weight.clone()
    x = torch.randn(10, CODE_DIM)
    vq.step_(vq(x).em_stats)
    # an ordinary M-step: codes are means of their vectors, not copies of them
    assert not (vq.codebook.weight[0][:, None] == x[None]).all(-1).any()
    assert not torch.equal(vq.codebook.weight, before)


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_eval_dummy_and_empty_updates_do_not_initialise(bottleneck):
    vq = make_vq(bottleneck)
    before = vq.codebook.weight.clone()
    x = torch.randn(8, CODE_DIM)
    vq.eval()
    assert vq(x).em_stats is None
    vq.train()
    vq(x)  # a dummy batch: computed, never accumulated
    vq.update_()
    vq.step_(vq(x[:0]).em_stats)  # a zero-length batch
    assert vq.codebook.awaits_data
    assert torch.equal(vq.codebook.weight, before)
    vq.step_(
        vq(x).em_stats
    )  # the comparison can fail: the first real update initialises
    assert not vq.codebook.awaits_data
    assert not torch.equal(vq.codebook.weight, before)


def test_micro_batches_of_one_update_all_give_candidates():
    vq = make_vq("soft_em")
    first, second = torch.randn(2, CODE_DIM), torch.randn(3, CODE_DIM) + 3.0
    for part in (first, second):
        vq.accumulate_(vq(part).em_stats)
    vq.update_()
    weight = vq.codebook.weight[0]
    for vector in torch.cat([first, second]):
        assert (weight == vector).all(-1).any()


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_state_dict_keeps_whether_it_happened(bottleneck):
    before = make_vq(bottleneck).state_dict()
    assert not bool(before["codebook.initialized"])
    fresh = make_vq(bottleneck)
    fresh.load_state_dict(before)  # killed before its first update: it still waits
    assert fresh.codebook.awaits_data
    trained = make_vq(bottleneck)
    trained.step_(trained(torch.randn(8, CODE_DIM)).em_stats)
    resumed = make_vq(bottleneck)
    resumed.load_state_dict(trained.state_dict())
    assert not resumed.codebook.awaits_data
    assert torch.equal(resumed.codebook.weight, trained.codebook.weight)
    # a checkpoint from before the option holds trained codes: it loads, initialised
    old = {k: v for k, v in before.items() if k != "codebook.initialized"}
    legacy = make_vq(bottleneck)
    legacy.load_state_dict(old)
    assert not legacy.codebook.awaits_data


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_data_init_avoids_the_collapse_of_far_away_latents(bottleneck):
    """Latents far from the small uniform codes all pick the same nearest code; started on
    the latents, the codes split them."""
    generator = torch.Generator().manual_seed(3)
    x = 8.0 + torch.randn(64, CODE_DIM, generator=generator)
    used = {}
    for init in ("uniform", "data"):
        torch.manual_seed(0)
        vq = make_vq(bottleneck, init=init)
        vq.step_(vq(x).em_stats)
        used[init] = int(vq(x).stats["codes_in_use"])
    assert used["uniform"] <= 2
    assert used["data"] >= 4


def test_bad_init_is_rejected():
    with pytest.raises(ValueError, match="codebook_init must be one of uniform, data"):
        BottleneckConfig(codebook_init="kmeans")
    with pytest.raises(ValueError, match="init must be one of"):
        Codebook(1, 3, 2, init="zeros")
