"""scripts/bottleneck_demo.py end to end on a tiny CIFAR-layout pickle written to tmp_path."""

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bottleneck_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("bottleneck_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cifar_folder(folder: Path, num_train=6, num_test=3) -> Path:
    """The official python layout: dicts with b"data" (N, 3072) uint8 and b"labels"."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name, n in (("data_batch_1", num_train), ("test_batch", num_test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [0] * n,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_patches_follow_the_cifar_plane_layout(demo):
    channel, row, col = np.meshgrid(
        np.arange(3), np.arange(32), np.arange(32), indexing="ij"
    )
    # Image 0 encodes which patch a pixel is in: channel * 80 + grid_row * 8 + grid_col.
    # Image 1 encodes the position inside the patch: channel * 16 + (row % 4) * 4 + col % 4.
    where = channel * 80 + (row // 4) * 8 + col // 4
    inside = channel * 16 + (row % 4) * 4 + col % 4
    images = (
        np.stack([where, inside]).astype(np.uint8).reshape(2, 3072)
    )  # R, G, B planes
    patches = demo.to_patches(images)  # (2 * 64, 48)
    assert patches.shape == (128, 48)
    patch = patches[9].reshape(
        4, 4, 3
    )  # image 0, grid row 1, grid col 1: (py, px, RGB)
    assert patch[..., 0].unique().tolist() == [9.0]
    assert patch[..., 2].unique().tolist() == [169.0]
    expected = np.arange(3)[None, None, :] * 16 + np.arange(16).reshape(4, 4, 1)
    for k in (64, 64 + 37):  # every patch of image 1 is the same (py, px, c) ramp
        assert patches[k].reshape(4, 4, 3).numpy().tolist() == expected.tolist()


def test_demo_writes_results_and_plot(demo, tmp_path, capsys):
    data = write_cifar_folder(tmp_path / "cifar")
    out = tmp_path / "out"
    summary = demo.main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--updates",
            "6",
            "--batch-size",
            "32",
            "--codebook-size",
            "8",
            "--eval-every",
            "3",
            "--curve-patches",
            "64",
            "--threads",
            "1",
        ]
    )
    assert json.loads((out / "results.json").read_text()) == json.loads(
        json.dumps(summary)
    )
    assert (out / "bottleneck_demo.png").stat().st_size > 1000
    assert (
        summary["num_train_patches"] == 6 * 64 and summary["num_test_patches"] == 3 * 64
    )
    results = {r["variant"]: r for r in summary["results"]}
    assert set(results) == {
        "vqvae",
        "hard_em",
        "hard_em+restart",
        "hard_em+data_init",
        "soft_em",
        "soft_em+data_init",
    }
    for name, r in results.items():
        assert 0 < r["heldout_mse"] < 10, name  # standardized patches: variance about 1
        assert 1 <= r["codes_in_use"] <= 8
        assert 1 <= r["code_perplexity"] <= r["codes_in_use"] + 1e-4
        assert sum(r["usage"]) == 3 * 64
        assert [step for step, _ in r["curve"]] == [0, 3, 6]
        assert (r["ema_perplexity"] is None) == (name == "vqvae")
    assert results["hard_em+restart"]["dead_code_threshold"] > 0
    assert results["hard_em+data_init"]["codebook_init"] == "data"
    assert results["hard_em"]["codebook_init"] == "uniform"  # the default reaches it
    printed = capsys.readouterr().out
    assert "| variant | held-out MSE" in printed and "| hard_em+restart |" in printed


def test_demo_errors_clearly_on_missing_folder(demo, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SystemExit) as error:
        demo.main(["--data", str(missing), "--out", str(tmp_path / "out")])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert str(missing) in message and "--data" in message
    assert not (tmp_path / "out").exists()
