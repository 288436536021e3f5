"""scripts/average_checkpoints.py: the mean of the newest N epoch checkpoints, for decoding."""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import average_checkpoints  # noqa: E402


def _save(path, model, epoch):
    torch.save(
        {
            "model": model.state_dict(),
            "cfg": {"epoch": epoch},
            "extra_state": {"epoch": epoch},
            "last_optimizer_state": {"state": "big"},
        },
        path,
    )


def test_average_is_the_mean_of_the_newest_epochs_and_loads_into_the_model(
    tmp_path, build_vqvae
):
    models = [
        build_vqvae().model for _ in range(4)
    ]  # the autouse seed differs per build
    for epoch, model in zip((2, 9, 10, 11), models):
        # an EM buffer that differs between checkpoints, as M-steps make it
        model.bottleneck.codebook.num_updates.fill_(epoch)
        _save(tmp_path / f"checkpoint{epoch}.pt", model, epoch)
    _save(tmp_path / "checkpoint_last.pt", models[0], 99)  # not an epoch checkpoint
    _save(tmp_path / "checkpoint_1_2.pt", models[0], 98)  # nor a mid-epoch one
    out = tmp_path / "avg" / "checkpoint_avg3.pt"
    assert (
        average_checkpoints.main(
            [str(tmp_path), "--num-epoch-checkpoints", "3", "--output", str(out)]
        )
        == 0
    )
    state = torch.load(out, map_location="cpu", weights_only=False)
    assert state["averaged_from"] == [
        "checkpoint9.pt",
        "checkpoint10.pt",
        "checkpoint11.pt",
    ]
    assert "last_optimizer_state" not in state and state["extra_state"] == {"epoch": 11}
    newest = [m.state_dict() for m in models[1:]]
    for key, value in state["model"].items():
        if value.is_floating_point():
            expected = sum(s[key] for s in newest) / 3
            torch.testing.assert_close(value, expected, msg=key)
        else:
            assert torch.equal(value, newest[-1][key]), key
    weight = state["model"]["bottleneck.codebook.weight"]
    assert not torch.equal(weight, newest[-1]["bottleneck.codebook.weight"])
    assert int(state["model"]["bottleneck.codebook.num_updates"]) == 11
    fresh = build_vqvae().model
    fresh.load_state_dict(state["model"])  # the plugin's own checks accept it
    torch.testing.assert_close(fresh.bottleneck.codebook.weight, weight)


def _average(save_dir, count):
    return average_checkpoints.main(
        [
            str(save_dir),
            "--num-epoch-checkpoints",
            str(count),
            "--output",
            str(save_dir / "a.pt"),
        ]
    )


def test_errors_say_what_to_fix(tmp_path, build_vqvae):
    model = build_vqvae().model
    _save(tmp_path / "checkpoint1.pt", model, 1)
    with pytest.raises(
        SystemExit,
        match="has 1 epoch checkpoints .* 2 are needed: train with --keep-last-epochs 2",
    ):
        _average(tmp_path, 2)
    other = build_vqvae("--decoder-layers", "1").model
    _save(tmp_path / "checkpoint2.pt", other, 2)
    with pytest.raises(
        SystemExit, match="holds other model tensors .* one training run only"
    ):
        _average(tmp_path, 2)
    with pytest.raises(SystemExit):
        _average(tmp_path, 0)
