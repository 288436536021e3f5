"""scripts/average_checkpoints.py: the mean of the newest N epoch checkpoints, for decoding."""

import argparse
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


def _run(save_dir, output, *flags):
    return average_checkpoints.main(
        [str(save_dir), "--num-epoch-checkpoints", "2", "--output", str(output), *flags]
    )


def test_the_output_is_never_an_input_nor_a_name_fairseq_train_writes(
    tmp_path, build_vqvae, capsys
):
    """Issue 42: --output ck/checkpoint_last.pt replaced the resume point."""
    model = build_vqvae().model
    for epoch in (1, 2):
        _save(tmp_path / f"checkpoint{epoch}.pt", model, epoch)
    _save(tmp_path / "checkpoint_last.pt", model, 2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name, force, message in (
        ("checkpoint_last.pt", "", "is a name fairseq-train writes"),
        ("checkpoint2.pt", "", "is one of the checkpoints it reads"),
        ("checkpoint2.pt", "--force", "is one of the checkpoints it reads"),
        ("checkpoint_last.pt", "--force", "is a name fairseq-train writes"),
        ("checkpoint_best.pt", "", "is a name fairseq-train writes"),
        ("checkpoint7.pt", "", "is a name fairseq-train writes"),  # a later average's
        ("checkpoint_1_400.pt", "", "is a name fairseq-train writes"),
    ):
        with pytest.raises(SystemExit):
            _run(tmp_path, tmp_path / name, *filter(None, [force]))
        assert message in capsys.readouterr().err, name
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_existing_output_is_replaced_only_with_force_or_when_it_is_an_average(
    tmp_path, build_vqvae, capsys
):
    model = build_vqvae().model
    for epoch in (1, 2):
        _save(tmp_path / f"checkpoint{epoch}.pt", model, epoch)
    notes = tmp_path / "out" / "notes.pt"
    notes.parent.mkdir()
    notes.write_bytes(b"not an average")
    with pytest.raises(SystemExit):
        _run(tmp_path, notes)
    assert "exists and is not this script's output: pass --force" in (
        capsys.readouterr().err
    )
    assert notes.read_bytes() == b"not an average"
    assert _run(tmp_path, notes, "--force") == 0
    assert _run(tmp_path, notes) == 0  # an earlier average: a rerun remakes it
    assert torch.load(notes, weights_only=False)["averaged_from"] == [
        "checkpoint1.pt",
        "checkpoint2.pt",
    ]
    assert sorted(p.name for p in notes.parent.iterdir()) == ["notes.pt"]  # no .tmp


def test_checkpoints_of_different_trainings_are_refused(tmp_path, build_vqvae):
    """Issue 42: a soft EM and a hard EM checkpoint (same tensor names) were averaged."""
    soft = build_vqvae("--bottleneck", "soft_em")
    hard = build_vqvae("--bottleneck", "hard_em")
    for epoch, built in ((1, soft), (2, hard)):
        torch.save(
            {"model": built.model.state_dict(), "cfg": {"model": built.args}},
            tmp_path / f"checkpoint{epoch}.pt",
        )
    with pytest.raises(
        SystemExit,
        match=r"checkpoint1.pt and .*checkpoint2.pt were trained with different "
        r"--bottleneck \('soft_em' and 'hard_em'\): average checkpoints of one training "
        r"run only",
    ):
        _run(tmp_path, tmp_path / "avg.pt")
    resumed = argparse.Namespace(
        **vars(soft.args)
    )  # one run, resumed with a new schedule
    for option, value in {
        "lr": [5e-4],
        "max_update": 99,
        "seed": 7,
        "save_dir": "elsewhere",
        "warmup_updates": 10,
        "data": "moved",
        "num_workers": 3,
        "eval_bleu": True,
        "bf16_autocast": True,
        "added_later": 1,  # only in the newer checkpoint: not compared
    }.items():
        setattr(resumed, option, value)
    torch.save(
        {"model": soft.model.state_dict(), "cfg": {"model": resumed}},
        tmp_path / "checkpoint2.pt",
    )
    assert _run(tmp_path, tmp_path / "avg.pt") == 0
    hard_dict = {"model": hard.model.state_dict(), "cfg": {"model": vars(hard.args)}}
    torch.save(hard_dict, tmp_path / "checkpoint2.pt")  # a hydra run: cfg.model a dict
    with pytest.raises(SystemExit, match="different --bottleneck"):
        _run(tmp_path, tmp_path / "avg.pt")
