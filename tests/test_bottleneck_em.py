"""Math tests of fairseq_vqvae.bottleneck.em with numbers worked out by hand in the comments.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), sections 2.2 and 3.2.
"""

import pytest
import torch

from fairseq_vqvae.bottleneck import BottleneckConfig, Codebook, VQBottleneck, em


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# Three points and two codes in 2-D, used by the hand-computed EMA step below.
#   e0 = (0, 0), e1 = (4, 0);  x1 = (1, 0), x2 = (3, 2), x3 = (0, 2)
POINTS = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 2.0]])
CODES = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
# Squared distances ||x - e||^2:
#   x1: 1 + 0 = 1       (1-4)^2 + 0 = 9        -> code 0
#   x2: 9 + 4 = 13      (3-4)^2 + 4 = 5        -> code 1
#   x3: 0 + 4 = 4       16 + 4 = 20            -> code 0
DISTANCES = [[1.0, 9.0], [13.0, 5.0], [4.0, 20.0]]
# Statistics: n = (2, 1); s_0 = x1 + x3 = (1, 2); s_1 = x2 = (3, 2).
# Start from a consistent EMA state c = (2, 2), m = c * e = ((0, 0), (8, 0)); decay 0.5, eps 0.1:
#   c'   = 0.5 (2, 2) + 0.5 (2, 1)                = (2, 1.5),  C = 3.5
#   m'_0 = 0.5 (0, 0) + 0.5 (1, 2)                = (0.5, 1)
#   m'_1 = 0.5 (8, 0) + 0.5 (3, 2)                = (5.5, 1)
#   c~_0 = (2 + 0.1) / (3.5 + 2 * 0.1) * 3.5      = 7.35 / 3.7 = 147/74 = 1.98648649
#   c~_1 = (1.5 + 0.1) / 3.7 * 3.5                = 5.6 / 3.7  = 56/37  = 1.51351351
#   e'_0 = (0.5, 1) / (147/74) = (37/147, 74/147) = (0.25170068, 0.50340136)
#   e'_1 = (5.5, 1) / (56/37)  = (407/112, 37/56) = (3.63392857, 0.66071429)
EXPECTED_COUNTS = [2.0, 1.5]
EXPECTED_SUMS = [[0.5, 1.0], [5.5, 1.0]]
EXPECTED_SMOOTHED = [1.98648649, 1.51351351]
EXPECTED_CODES = [[0.25170068, 0.50340136], [3.63392857, 0.66071429]]


def _close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=0, atol=atol)


def test_ema_step_functions_match_hand_computed_means():
    x = POINTS[:, None]  # (N=3, S=1, D=2)
    distances = em.squared_distances(x, CODES[None])  # (3, 1, 2)
    _close(distances[:, 0], DISTANCES)
    codes = em.hard_assignments(distances)
    assert codes[:, 0].tolist() == [0, 1, 0]
    counts, sums = em.em_statistics(x, torch.nn.functional.one_hot(codes, 2).float())
    _close(counts[0], [2.0, 1.0])
    _close(sums[0], [[1.0, 2.0], [3.0, 2.0]])
    ema_counts, ema_sums = em.ema_update(
        torch.tensor([[2.0, 2.0]]),
        torch.tensor([[[0.0, 0.0], [8.0, 0.0]]]),
        counts,
        sums,
        0.5,
    )
    _close(ema_counts[0], EXPECTED_COUNTS)
    _close(ema_sums[0], EXPECTED_SUMS)
    _close(em.laplace_smoothing(ema_counts, 0.1)[0], EXPECTED_SMOOTHED)
    _close(em.codebook_from_ema(ema_counts, ema_sums, 0.1)[0], EXPECTED_CODES)


def test_bottleneck_hard_em_step_matches_hand_computed_means():
    config = BottleneckConfig(
        bottleneck="hard_em", codebook_size=2, code_dim=2, decay=0.5, epsilon=0.1
    )
    vq = VQBottleneck(config)
    vq.codebook.weight.copy_(CODES[None])
    vq.codebook.ema_counts.copy_(torch.tensor([[2.0, 2.0]]))
    vq.codebook.ema_sums.copy_(torch.tensor([[[0.0, 0.0], [8.0, 0.0]]]))
    out = vq(POINTS)
    assert out.codes[:, 0].tolist() == [0, 1, 0]
    # Commitment: beta * mean((x - q)^2) = 0.25 * (1 + (1 + 4) + 4) / 6 elements = 0.41666667.
    _close(out.commit_loss, 0.25 * 10.0 / 6.0)
    vq.step_(out.em_stats)
    _close(vq.codebook.ema_counts[0], EXPECTED_COUNTS)
    _close(vq.codebook.ema_sums[0], EXPECTED_SUMS)
    _close(vq.codebook.weight[0], EXPECTED_CODES)
    assert int(vq.codebook.num_updates) == 1


def test_codebook_update_with_zero_counts_keeps_initial_codes():
    # Before any vector was assigned, all EMA counts are 0 and the M-step would divide by 0.
    codebook = Codebook(1, 4, 3, decay=0.9)
    initial = codebook.weight.clone()
    codebook.update_()
    assert torch.equal(codebook.weight, initial)
    # The EMA state still decayed, and a later real update gives finite codes:
    # c = 0.1 * 1, m_k = 0.9 * 0.9 * init_k + 0.1 * x  ->  e_k = m_k / c~_k.
    torch.testing.assert_close(codebook.ema_sums, 0.9 * initial)
    x = torch.tensor([[[0.5, -0.5, 2.0]]])  # (N=1, S=1, D=3)
    code = int(em.hard_assignments(codebook.distances(x)))
    counts, sums = em.em_statistics(
        x, torch.nn.functional.one_hot(torch.tensor([[code]]), 4)
    )
    codebook.accumulate_(counts, sums)
    codebook.update_()
    smoothed = (0.1 + 1e-5) / (0.1 + 4e-5) * 0.1
    expected = (0.81 * initial[0, code] + 0.1 * x[0, 0]) / smoothed
    torch.testing.assert_close(codebook.weight[0, code], expected)


def test_laplace_smoothing_keeps_total_and_removes_zeros():
    counts = torch.tensor([[0.0, 3.0, 1.0, 0.0], [5.0, 5.0, 0.0, 2.0]])
    smoothed = em.laplace_smoothing(counts, 0.01)
    torch.testing.assert_close(smoothed.sum(-1), counts.sum(-1))
    assert (smoothed > 0).all()
    # Hand value: (0 + 0.01) / (4 + 4 * 0.01) * 4 = 0.04 / 4.04 = 0.00990099.
    _close(smoothed[0, 0], 0.00990099)
    random_counts = torch.rand(3, 7) * 10
    torch.testing.assert_close(
        em.laplace_smoothing(random_counts, 1e-5).sum(-1), random_counts.sum(-1)
    )


def test_soft_responsibilities_hand_value():
    # softmax(-(1, 9) / 4) = softmax(-0.25, -2.25); first entry = 1 / (1 + e^-2) = 0.88079708.
    r = em.soft_responsibilities(torch.tensor([[[1.0, 9.0]]]), temperature=4.0)
    _close(r[0, 0], [0.88079708, 1 - 0.88079708])


def test_soft_em_with_temperature_to_zero_equals_hard_em():
    distances = torch.tensor(DISTANCES)[:, None]  # (3, 1, 2)
    hard = torch.nn.functional.one_hot(em.hard_assignments(distances), 2).float()
    soft_cold = em.soft_responsibilities(distances, temperature=1e-3)
    assert torch.equal(soft_cold, hard)
    assert not torch.equal(em.soft_responsibilities(distances, temperature=4.0), hard)
    x = POINTS[:, None]
    for a, b in zip(em.em_statistics(x, soft_cold), em.em_statistics(x, hard)):
        assert torch.equal(a, b)


def test_one_sample_is_sampled_hard_em():
    distances = torch.rand(50, 2, 5) * 3
    generator = torch.Generator().manual_seed(1)
    r, samples = em.sample_responsibilities(distances, 1, generator=generator)
    assert samples.shape == (50, 2, 1) and r.shape == (50, 2, 5)
    assert torch.equal(r.sum(-1), torch.ones(50, 2))
    assert torch.equal(r.max(-1).values, torch.ones(50, 2))  # one-hot rows
    assert torch.equal(r.argmax(-1), samples[..., 0])
    # Sampled, not argmin: with these soft distances some rows pick a non-nearest code.
    assert (samples[..., 0] != em.hard_assignments(distances)).any()


def test_many_samples_approach_exact_responsibilities():
    # With m = 20000 draws the standard error per entry is <= sqrt(0.25 / 20000) = 0.0035;
    # 0.02 is more than 5 standard errors.
    distances = torch.tensor([[[0.0, 0.5, 1.0]], [[2.0, 0.1, 0.3]], [[1.0, 1.0, 4.0]]])
    exact = em.soft_responsibilities(distances, temperature=1.0)
    generator = torch.Generator().manual_seed(1234)
    sampled, _ = em.sample_responsibilities(distances, 20000, generator=generator)
    torch.testing.assert_close(sampled, exact, rtol=0, atol=0.02)
    torch.testing.assert_close(sampled.sum(-1), torch.ones(3, 1))
    few, _ = em.sample_responsibilities(distances, 2, generator=generator)
    assert (
        few - exact
    ).abs().max() > 0.02  # the tolerance is tight enough to notice m = 2


def test_sample_responsibilities_of_empty_batch():
    r, samples = em.sample_responsibilities(torch.zeros(0, 2, 4), 3)
    assert r.shape == (0, 2, 4) and samples.shape == (0, 2, 3)


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([3.0, 3.0, 3.0, 3.0], 4.0),  # uniform over 4 codes
        ([0.0, 5.0, 0.0, 0.0], 1.0),  # one code
        ([0.0, 0.0, 0.0, 0.0], 0.0),  # nothing assigned
        # p = (1/4, 1/4, 1/2): H = 2 * (1/4) ln 4 + (1/2) ln 2 = 1.5 ln 2; exp(H) = 2^1.5.
        ([1.0, 1.0, 2.0], 2.0**1.5),
    ],
)
def test_perplexity_of_histograms(counts, expected):
    _close(em.perplexity(torch.tensor(counts)), expected, atol=1e-5)


def test_perplexity_is_per_row():
    result = em.perplexity(torch.tensor([[1.0, 1.0], [0.0, 7.0], [0.0, 0.0]]))
    _close(result, [2.0, 1.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_is_rejected(decay):
    with pytest.raises(ValueError, match="decay"):
        em.ema_update(
            torch.zeros(1, 2),
            torch.zeros(1, 2, 3),
            torch.zeros(1, 2),
            torch.zeros(1, 2, 3),
            decay,
        )
    with pytest.raises(ValueError, match="decay"):
        Codebook(1, 2, 3, decay=decay)
    with pytest.raises(ValueError, match="decay"):
        VQBottleneck(
            BottleneckConfig(
                bottleneck="hard_em", codebook_size=2, code_dim=4, decay=decay
            )
        )


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match="temperature"):
        em.soft_responsibilities(torch.zeros(1, 1, 2), temperature)
    with pytest.raises(ValueError, match="temperature"):
        em.sample_responsibilities(torch.zeros(1, 1, 2), 2, temperature)
    with pytest.raises(ValueError, match="temperature"):
        BottleneckConfig(temperature=temperature)


@pytest.mark.parametrize("num_samples", [0, -3])
def test_bad_num_samples_is_rejected(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        em.sample_responsibilities(torch.zeros(1, 1, 2), num_samples)
    with pytest.raises(ValueError, match="num_samples"):
        BottleneckConfig(num_samples=num_samples)


def test_other_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="bottleneck"):
        BottleneckConfig(bottleneck="ema")
    with pytest.raises(ValueError, match="divisible"):
        BottleneckConfig(code_dim=10, num_slices=3)
    with pytest.raises(ValueError, match="epsilon"):
        Codebook(1, 2, 3, epsilon=0.0)
    with pytest.raises(ValueError, match="dead_code_threshold"):
        BottleneckConfig(dead_code_threshold=-1.0)
    with pytest.raises(ValueError, match=">= 1"):
        Codebook(0, 2, 3)


def test_soft_em_bottleneck_trains_on_sampled_responsibilities():
    # Codes e0 = (0, 0), e1 = (1, 0); x = (0.5, y) is equidistant, so softmax gives (1/2, 1/2),
    # and x = (0, 0) gives softmax(-(0, 1)) = (0.73105858, 0.26894142) at temperature 1.
    config = BottleneckConfig(
        bottleneck="soft_em", codebook_size=2, code_dim=2, num_samples=4000
    )
    vq = VQBottleneck(config)
    vq.codebook.weight.copy_(torch.tensor([[[0.0, 0.0], [1.0, 0.0]]]))
    x = torch.tensor([[0.5, 0.3], [0.0, 0.0]])
    out = vq(x)
    # Averages of 4000 one-hot samples: multiples of 1 / 4000, close to the softmax
    # (standard error <= 0.008, tolerance 0.03).
    targets = out.soft_targets[:, 0]  # (2, K)
    assert ((targets * 4000 - torch.round(targets * 4000)).abs() < 1e-2).all()
    _close(targets, [[0.5, 0.5], [0.73105858, 0.26894142]], atol=0.03)
    # The decoder gets the mean of the sampled codes; EM statistics use the same samples.
    _close(out.quantized[:, 0], targets[:, 1].tolist(), atol=1e-6)
    _close(out.em_stats.counts[0], targets.sum(0).tolist(), atol=1e-6)
    assert torch.equal(
        vq.eval()(x).soft_targets[:, 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    )


def test_ema_perplexity_counts_only_codes_in_use_when_dead_codes_restart():
    """Restarted codes are seeded with the threshold count: counted, 4 codes in use read as
    about 20 (an issue-16 report: 58,928 of 65,536 with 58 in use)."""
    torch.manual_seed(0)
    codebook = Codebook(1, 64, 2, decay=0.9, dead_code_threshold=0.5)
    for _ in range(50):
        counts = torch.zeros(1, 64)
        counts[0, :4] = 10.0
        sums = codebook.weight.detach().clone() * counts.unsqueeze(-1)
        codebook.accumulate_(counts, sums, candidates=torch.randn(8, 1, 2))
        codebook.update_()
    assert int((codebook.ema_counts > 0).sum()) > 4  # restarted codes hold seed counts
    assert float(codebook.ema_perplexity()[0]) == pytest.approx(4.0, rel=0.01)
    plain = Codebook(1, 64, 2, decay=0.9)  # no restarts: unused codes count 0 anyway
    counts = torch.zeros(1, 64)
    counts[0, :4] = 10.0
    plain.accumulate_(counts, plain.weight.detach().clone() * counts.unsqueeze(-1))
    plain.update_()
    assert float(plain.ema_perplexity()[0]) == pytest.approx(4.0, rel=0.01)


def test_health_names_a_diverged_or_collapsed_codebook_and_passes_a_sound_one():
    torch.manual_seed(0)
    codebook = Codebook(1, 16, 4, decay=0.5)
    assert codebook.health() is None  # fresh
    codebook.weight[0, 3] = 100.0  # norm 200 > 10 sqrt(4)
    assert "the run is diverging" in codebook.health()
    codebook.weight[0, 3] = float("nan")
    assert "NaN or inf" in codebook.health()
    codebook.weight[0, 3] = 0.0
    for _ in range(
        3
    ):  # every vector on code 0; the unused codes' norms blow up (t2t's EMA)
        counts = torch.zeros(1, 16)
        counts[0, 0] = 10.0
        codebook.accumulate_(counts, codebook.weight.clone() * counts.unsqueeze(-1))
        codebook.update_()
    assert float(codebook.weight.norm(dim=-1).max()) > 1e3
    assert (
        codebook.health(min_updates=5) is None
    )  # too early to judge, unused codes ignored
    assert "codebook collapsed" in codebook.health(min_updates=3)
    spread = Codebook(1, 16, 4, decay=0.5)
    for _ in range(3):  # usage over 8 codes
        counts = torch.zeros(1, 16)
        counts[0, :8] = 10.0
        spread.accumulate_(counts, spread.weight.clone() * counts.unsqueeze(-1))
        spread.update_()
    assert spread.health(min_updates=3) is None
