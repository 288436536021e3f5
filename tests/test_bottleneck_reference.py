"""Reference tests: the vectorised bottleneck code against naive python loops written here."""

import math

import pytest
import torch

from fairseq_vqvae.bottleneck import BottleneckConfig, VQBottleneck, em


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def naive_squared_distances(x, codebook):
    """x (N, S, D), codebook (S, K, D) -> nested lists [n][s][k] of float64 sums."""
    n, s, d = x.shape
    k = codebook.shape[1]
    return [
        [
            [
                sum(
                    (float(x[i, j, c]) - float(codebook[j, m, c])) ** 2
                    for c in range(d)
                )
                for m in range(k)
            ]
            for j in range(s)
        ]
        for i in range(n)
    ]


def naive_em_statistics(x, responsibilities):
    n, s, d = x.shape
    k = responsibilities.shape[-1]
    counts = [[0.0] * k for _ in range(s)]
    sums = [[[0.0] * d for _ in range(k)] for _ in range(s)]
    for i in range(n):
        for j in range(s):
            for m in range(k):
                r = float(responsibilities[i, j, m])
                counts[j][m] += r
                for c in range(d):
                    sums[j][m][c] += r * float(x[i, j, c])
    return counts, sums


def naive_softmax(row, temperature):
    peak = max(-v / temperature for v in row)
    exps = [math.exp(-v / temperature - peak) for v in row]
    return [e / sum(exps) for e in exps]


def _tensor(values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("num_slices", [1, 3])
def test_squared_distances_match_naive_loop(num_slices):
    x = torch.randn(7, num_slices, 4) * 2
    codebook = torch.randn(num_slices, 5, 4)
    distances = em.squared_distances(x, codebook)
    assert distances.dtype == torch.float32 and distances.shape == (7, num_slices, 5)
    expected = _tensor(naive_squared_distances(x, codebook))
    torch.testing.assert_close(distances.double(), expected, rtol=1e-5, atol=1e-5)


def test_squared_distances_of_half_inputs_are_fp32_and_close():
    x = torch.randn(6, 1, 8)
    codebook = torch.randn(1, 4, 8)
    distances = em.squared_distances(x.half(), codebook)
    assert distances.dtype == torch.float32
    expected = _tensor(naive_squared_distances(x.half().float(), codebook))
    torch.testing.assert_close(distances.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_soft_responsibilities_match_naive_softmax(temperature):
    distances = torch.rand(5, 2, 4) * 6
    result = em.soft_responsibilities(distances, temperature)
    expected = [
        [naive_softmax(distances[i, j].tolist(), temperature) for j in range(2)]
        for i in range(5)
    ]
    torch.testing.assert_close(result.double(), _tensor(expected), rtol=1e-5, atol=1e-6)


def test_em_statistics_match_naive_loop():
    x = torch.randn(9, 2, 3)
    responsibilities = torch.softmax(torch.randn(9, 2, 4), dim=-1)
    counts, sums = em.em_statistics(x, responsibilities)
    naive_counts, naive_sums = naive_em_statistics(x, responsibilities)
    torch.testing.assert_close(
        counts.double(), _tensor(naive_counts), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(sums.double(), _tensor(naive_sums), rtol=1e-5, atol=1e-5)


class NaiveHardEM:
    """EMA K-means written out code by code, in float64 python lists."""

    def __init__(self, weight, decay, epsilon):
        self.weight = weight.double().tolist()  # [s][k][d]
        self.ema_sums = weight.double().tolist()
        self.ema_counts = [[0.0] * len(weight[0]) for _ in range(len(weight))]
        self.decay, self.epsilon = decay, epsilon

    def step(self, vectors):
        """vectors: list of (S, D) tensors (padding already left out)."""
        num_slices, k, d = len(self.weight), len(self.weight[0]), len(self.weight[0][0])
        counts = [[0.0] * k for _ in range(num_slices)]
        sums = [[[0.0] * d for _ in range(k)] for _ in range(num_slices)]
        for vector in vectors:
            for s in range(num_slices):
                row = [float(v) for v in vector[s]]
                dist = [
                    sum((a - b) ** 2 for a, b in zip(row, code))
                    for code in self.weight[s]
                ]
                best = dist.index(min(dist))
                counts[s][best] += 1.0
                sums[s][best] = [a + b for a, b in zip(sums[s][best], row)]
        lam, eps = self.decay, self.epsilon
        for s in range(num_slices):
            for j in range(k):
                self.ema_counts[s][j] = (
                    lam * self.ema_counts[s][j] + (1 - lam) * counts[s][j]
                )
                self.ema_sums[s][j] = [
                    lam * m + (1 - lam) * v
                    for m, v in zip(self.ema_sums[s][j], sums[s][j])
                ]
            total = sum(self.ema_counts[s])
            for j in range(k):
                smoothed = (self.ema_counts[s][j] + eps) / (total + k * eps) * total
                self.weight[s][j] = [m / smoothed for m in self.ema_sums[s][j]]


@pytest.mark.parametrize("num_slices", [1, 2])
def test_hard_em_updates_match_naive_kmeans(num_slices):
    config = BottleneckConfig(
        bottleneck="hard_em",
        codebook_size=4,
        code_dim=6,
        num_slices=num_slices,
        decay=0.8,
        epsilon=1e-3,
    )
    vq = VQBottleneck(config)
    # Start the codes on data-like points so that every code is used and none explodes.
    vq.codebook.weight.copy_(torch.randn(num_slices, 4, 6 // num_slices))
    vq.codebook.ema_sums.copy_(vq.codebook.weight)
    naive = NaiveHardEM(vq.codebook.weight, config.decay, config.epsilon)
    for _ in range(4):
        x = torch.randn(3, 5, 6)  # (B, T, C)
        lengths = torch.tensor([5, 2, 4])
        padding_mask = torch.arange(5)[None, :] >= lengths[:, None]  # (B, T)
        x[padding_mask] = 1e3  # garbage at padding must be ignored
        out = vq(x, padding_mask)
        vq.step_(out.em_stats)
        kept = [
            x[b, t].reshape(num_slices, -1)
            for b in range(3)
            for t in range(int(lengths[b]))
        ]
        naive.step(kept)
        torch.testing.assert_close(
            vq.codebook.ema_counts.double(), _tensor(naive.ema_counts)
        )
        torch.testing.assert_close(
            vq.codebook.ema_sums.double(), _tensor(naive.ema_sums), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            vq.codebook.weight.double(), _tensor(naive.weight), rtol=1e-4, atol=1e-4
        )
    assert int(vq.codebook.num_updates) == 4


def test_codes_and_commit_loss_match_naive_loop_with_padding():
    config = BottleneckConfig(
        bottleneck="hard_em", codebook_size=5, code_dim=4, num_slices=2
    )
    vq = VQBottleneck(config)
    x = torch.randn(2, 4, 4)
    padding_mask = torch.tensor(
        [[False, False, True, True], [False, False, False, True]]
    )
    out = vq(x, padding_mask)
    weight = vq.codebook.weight
    squared_error, elements = 0.0, 0
    for b in range(2):
        for t in range(4):
            for s in range(2):
                piece = x[b, t, 2 * s : 2 * s + 2]
                dist = [float(((piece - weight[s, k]) ** 2).sum()) for k in range(5)]
                best = dist.index(min(dist))
                assert (
                    int(out.codes[b, t, s]) == best
                )  # codes at padding are still computed
                if not padding_mask[b, t]:
                    squared_error += dist[best]
                    elements += 2
    assert out.commit_loss.item() == pytest.approx(
        0.25 * squared_error / elements, rel=1e-5
    )
    assert out.em_stats.candidates.shape == (5, 2, 2)
