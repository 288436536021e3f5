"""scripts/swap_codes.py: fairseq-generate with the predictor's codes swapped (a diagnostic)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "swap_codes.py"
sys.path.insert(0, str(SCRIPT.parent))
from swap_codes import swap  # noqa: E402


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
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "sorted"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "usage: swap_codes.py" in result.stderr
