"""research/swap_codes.py: fairseq-generate with the predictor's codes swapped (a diagnostic)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "swap_codes.py"
sys.path.insert(0, str(SCRIPT.parent))
from swap_codes import (  # noqa: E402
    expected_code_logits,
    expected_temperature,
    neighbour_order,
    neighbour_rank,
    neighbours,
    refused_flags,
    swap,
)


def _codes():
    return torch.arange(6 * 2 * 3).view(6, 1, 2, 3) % 17  # (B, C, N, S)


def test_predicted_codes_are_left_alone():
    codes = _codes()
    assert swap(codes, "predicted", 17) is codes


def test_shuffled_codes_are_other_sentences_codes():
    codes = _codes()
    out = swap(codes, "shuffled", 17, torch.Generator().manual_seed(1))
    rows = {tuple(row.flatten().tolist()) for row in codes}
    assert {tuple(row.flatten().tolist()) for row in out} == rows
    assert not torch.equal(out, codes)  # this seed moves some sentence


def test_random_codes_are_uniform_over_the_codebook():
    codes = _codes()
    out = swap(codes.expand(6, 1, 2, 3).repeat(100, 1, 1, 1), "random", 17)
    assert out.dtype == codes.dtype and out.shape == (600, 1, 2, 3)
    assert out.min() == 0 and out.max() == 16
    assert out.unique().numel() == 17


def test_unknown_mode_is_refused():
    with pytest.raises(
        ValueError, match="mode must be one of predicted, shuffled, random"
    ):
        swap(_codes(), "sorted", 17)


def test_neighbours_are_the_rank_th_nearest_other_code_of_the_same_slice():
    # slice 0: codes on a line at 0, 1, 3, 7; slice 1: the same line reversed
    line = torch.tensor([0.0, 1.0, 3.0, 7.0])[:, None]
    weight = torch.stack([line, line.flip(0)])  # (S=2, K=4, D=1)
    codes = torch.tensor([[[0, 0], [2, 3], [3, 1]]])  # (B=1, N=3, S=2)
    # slice 0 nearest others: 0->1, 2->1, 3->2; slice 1 (values 7, 3, 1, 0): 0->1, 3->2, 1->2
    order = neighbour_order(weight)
    assert neighbours(order, 1, codes).tolist() == [[[1, 1], [1, 2], [2, 2]]]
    # second nearest: slice 0: 0->2, 2->0 (3 from 3, 4 from 7: 0 is at 3), 3->1
    assert neighbours(order, 2, codes)[0, :, 0].tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="more than 4 codes"):
        neighbours(order, 4, codes)


def test_neighbour_rank_is_parsed_and_checked():
    assert neighbour_rank("neighbour:3") == 3
    assert neighbour_rank("random") is None
    for bad in ("neighbour:0", "neighbour:x", "neighbour:"):
        with pytest.raises(ValueError, match="integer R >= 1"):
            neighbour_rank(bad)


def test_expected_code_is_the_nearest_to_the_mean_code_vector():
    line = torch.tensor([0.0, 1.0, 3.0, 7.0])[:, None]
    weight = line[None]  # (S=1, K=4, D=1)
    # equal mass on codes at 0 and 7: the mean 3.5 is nearest code 2 (at 3), which the
    # argmax never picks
    logits = torch.tensor([[[0.0, -30.0, -30.0, 0.0]]])  # (N=1, S=1, K=4)
    out = expected_code_logits(logits, weight, 1.0)
    assert out.shape == logits.shape and out.argmax(-1).item() == 2
    # a sharp temperature is the argmax again
    tilted = torch.tensor([[[0.0, -30.0, -30.0, 0.5]]])
    assert expected_code_logits(tilted, weight, 0.01).argmax(-1).item() == 3
    assert expected_code_logits(tilted, weight, 1.0).argmax(-1).item() == 2


def test_expected_temperature_is_parsed_and_checked():
    assert expected_temperature("expected:0.5") == 0.5
    assert expected_temperature("predicted") is None
    for bad in (
        "expected:0",
        "expected:-1",
        "expected:x",
        "expected:inf",
        "expected:nan",
    ):
        with pytest.raises(ValueError, match="number T > 0"):
            expected_temperature(bad)


def test_neighbour_ties_go_to_the_lower_index():
    weight = torch.tensor([0.0, -1.0, 1.0])[
        None, :, None
    ]  # codes 1 and 2 equally near 0
    order = neighbour_order(weight)
    assert order[0, 0].tolist() == [0, 1, 2]
    assert neighbours(order, 1, torch.tensor([[0]])).item() == 1


def test_expected_code_is_chosen_per_slice():
    line = torch.tensor([0.0, 1.0, 3.0, 7.0])[:, None]
    weight = torch.stack([line, line.flip(0)])  # (S=2, K=4, D=1); slice 1: 7, 3, 1, 0
    logits = torch.tensor([[[0.0, -30.0, -30.0, 0.0], [0.0, -30.0, -30.0, -30.0]]])
    # slice 0: mean of 0 and 7 is 3.5 -> code 2; slice 1: all mass on code 0 (at 7) -> 0
    assert expected_code_logits(logits, weight, 1.0).argmax(-1).tolist() == [[2, 0]]


@pytest.mark.parametrize(
    "mode, args, refused",
    [
        ("expected:0.5", ["--gen-latent-beam", "4"], "drop --gen-latent-beam"),
        ("expected:0.5", ["--gen-latent-samples=2"], "drop --gen-latent-samples"),
        ("expected:0.5", ["--gen-length-beam", "3"], "drop --gen-length-beam"),
        ("expected:0.5", ["--gen-latent-beam", "1"], None),
        ("shuffled", ["--gen-oracle-latents"], "never reads"),
        ("expected:1", ["--gen-oracle-latents", "--cpu"], "never reads"),
        ("neighbour:2", ["--gen-oracle-latents"], None),
        ("predicted", ["--gen-oracle-latents"], None),
    ],
)
def test_flags_that_change_a_mode_are_refused(mode, args, refused):
    reason = refused_flags(mode, args)
    assert (reason is None) if refused is None else (refused in reason)


@pytest.mark.parametrize(
    "argv, line",
    [
        (["sorted"], "usage: swap_codes.py {predicted,shuffled,random,expected:T,"),
        (["neighbour:0"], "swap_codes.py: neighbour:R needs an integer R >= 1, got"),
        (["expected:0"], "swap_codes.py: expected:T needs a number T > 0, got"),
        (
            ["expected:1", "data", "--gen-latent-beam", "4"],
            "swap_codes.py: expected:1 is a greedy search of one candidate: drop",
        ),
    ],
)
def test_a_bad_mode_or_flag_is_a_one_line_error(argv, line):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
