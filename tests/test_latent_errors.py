"""research/latent_errors.py: how far the latent predictor's wrong codes are from the right ones."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research"))
from latent_errors import neighbour_ranks, summary, tally  # noqa: E402


def _line_codebook():
    return torch.tensor([0.0, 1.0, 3.0, 7.0])[None, :, None]  # (S=1, K=4, D=1)


def test_neighbour_ranks_order_the_other_codes_by_distance():
    ranks = neighbour_ranks(_line_codebook())[0]
    assert ranks.diagonal().tolist() == [0, 0, 0, 0]
    assert ranks[0].tolist() == [0, 1, 2, 3]  # from 0: 1, 3, 7
    assert ranks[2].tolist() == [2, 1, 0, 3]  # from 3: 1 (2), 0 (3), 7 (4)
    assert ranks[3].tolist() == [3, 2, 1, 0]


def test_tally_ranks_the_argmax_and_the_oracle_code_on_kept_latents_only():
    ranks = neighbour_ranks(_line_codebook())
    # two latents: oracle 0 predicted as 2 (its 2nd neighbour; oracle 2nd most likely),
    # oracle 3 predicted right; a third latent is padding
    logits = torch.tensor(
        [[[[1.0, 0.5, 2.0, 0.0]], [[0.0, 0.0, 0.0, 5.0]], [[9.0, 0.0, 0.0, 0.0]]]]
    )  # (B=1, N=3, S=1, K=4)
    oracle = torch.tensor([[[0], [3], [1]]])
    keep = torch.tensor([[True, True, False]])
    out = tally(logits, oracle, keep, ranks)
    assert out["neighbour"].tolist() == [2, 0]
    assert out["above"].tolist() == [1, 0]
    result = summary(out["neighbour"], out["above"])
    assert result["latent_codes"] == 2
    assert result["median_neighbour_rank_of_wrong_argmax"] == 2.0
    assert result["argmax_within_neighbours"]["0"] == 0.5
    assert result["argmax_within_neighbours"]["2"] == 1.0
    assert result["oracle_in_top"]["1"] == 0.5 and result["oracle_in_top"]["2"] == 1.0


def test_an_empty_subset_is_refused():
    with pytest.raises(ValueError, match="no latents"):
        summary(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def test_ties_rank_the_oracle_code_as_the_argmax_does():
    ranks = neighbour_ranks(_line_codebook())
    logits = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0, 0.0]]]])
    oracle = torch.tensor([[[0], [1]]])  # argmax takes code 0 of the tied pair
    out = tally(logits, oracle, torch.tensor([[True, True]]), ranks)
    assert out["neighbour"].tolist() == [0, 1]
    assert out["above"].tolist() == [0, 1]  # code 1 comes after its tied lower index
