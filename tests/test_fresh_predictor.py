"""scripts/fresh_latent_predictor.py: a trained model with a new latent predictor, for a
second stage that learns the predictor again (--latent-predictor-only --finetune-from-model)."""

import sys
from pathlib import Path

import pytest
import torch

from fairseq_vqvae.errors import OptionError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import fresh_latent_predictor  # noqa: E402

PREFIX = "latent_predictor."


def _checkpoint(built) -> dict:
    """What fairseq-train saves, as far as the script reads it (cfg.model: the namespace)."""
    return {
        "model": built.model.state_dict(),
        "cfg": {"model": built.args, "task": {"data": "bin"}},
        "args": None,
        "extra_state": {"epoch": 3, "previous_training_time": 1234.5},
        "last_optimizer_state": {"state": "big"},
    }


def _predictor(state_dict) -> dict:
    return {k: v for k, v in state_dict.items() if k.startswith(PREFIX)}


def test_the_predictor_is_new_and_everything_else_is_kept(build_vqvae):
    trained = build_vqvae()  # TINY_FLAGS: a 2-layer predictor
    with torch.no_grad():  # a "trained" predictor: nothing a fresh one could equal
        for param in trained.model.latent_predictor.parameters():
            param.add_(1.0)
    state = fresh_latent_predictor.fresh_predictor_state(
        _checkpoint(trained), latent_layers=1, seed=3
    )
    model = state["model"]
    original = trained.model.state_dict()
    for key, value in original.items():
        if not key.startswith(PREFIX):
            assert torch.equal(model[key], value), key
    one_layer = build_vqvae("--latent-layers", "1").model
    assert set(_predictor(model)) == set(_predictor(one_layer.state_dict()))
    assert not any(k.startswith(PREFIX + "layers.1.") for k in model)
    for key in ("embed_codes.weight", "output.weight", "layers.0.fc1.weight"):
        assert not torch.equal(model[PREFIX + key], original[PREFIX + key]), key
    # the configuration says 1 layer, and fairseq's strict load into such a model works
    assert state["cfg"]["model"].latent_layers == 1
    assert (
        trained.args.latent_layers == 2
    )  # the checkpoint's own namespace is not changed
    assert state["cfg"]["task"] == {"data": "bin"} and state["extra_state"] == {
        "epoch": 3
    }
    assert "last_optimizer_state" not in state
    assert state["fresh_latent_predictor"] == {"latent_layers": 1, "seed": 3}
    one_layer.load_state_dict(model, strict=True)


def test_the_new_predictor_is_seeded_and_keeps_the_depth_by_default(build_vqvae):
    checkpoint = _checkpoint(build_vqvae())
    first, again, other = (
        fresh_latent_predictor.fresh_predictor_state(checkpoint, seed=seed)["model"]
        for seed in (1, 1, 2)
    )
    key = PREFIX + "layers.1.fc1.weight"  # 2 layers, as the checkpoint
    assert torch.equal(first[key], again[key])
    assert not torch.equal(first[key], other[key])
    assert not torch.equal(first[key], checkpoint["model"][key])


def test_command_line_writes_the_checkpoint_and_refuses_bad_input(
    build_vqvae, tmp_path, capsys
):
    source = tmp_path / "checkpoint_best.pt"
    torch.save(_checkpoint(build_vqvae()), source)
    out = tmp_path / "stage2" / "fresh.pt"
    args = [str(source), "--output", str(out), "--latent-layers", "1"]
    assert fresh_latent_predictor.main(args) == 0
    assert torch.load(out, weights_only=False)["cfg"]["model"].latent_layers == 1
    assert "fresh 1-layer latent predictor" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--latent-layers must be >= 1, got 0"):
        fresh_latent_predictor.main(
            [str(source), "--output", str(out), "--latent-layers", "0"]
        )
    with pytest.raises(SystemExit):
        fresh_latent_predictor.main([str(source), "--output", str(source)])
    assert "must not be the checkpoint itself" in capsys.readouterr().err
    torch.save({"model": {"encoder.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not a vqvae_nat model"):
        fresh_latent_predictor.main([str(tmp_path / "other.pt"), "--output", str(out)])


def test_a_predictor_of_another_depth_gets_a_one_line_error(build_vqvae):
    two_layers = build_vqvae().model.state_dict()
    one_layer = build_vqvae("--latent-layers", "1").model
    with pytest.raises(
        OptionError, match="latent predictor has 2 layers, the command line builds 1"
    ):
        one_layer.load_state_dict(two_layers)


def test_the_output_is_never_a_training_file_and_replaces_only_its_own(
    build_vqvae, tmp_path, capsys
):
    """Issue 42: --output ck/checkpoint_last.pt replaced the resume point."""
    source = tmp_path / "stage1" / "checkpoint_best.pt"
    source.parent.mkdir()
    torch.save(_checkpoint(build_vqvae()), source)
    stage2 = tmp_path / "stage2"
    stage2.mkdir()
    (stage2 / "checkpoint_last.pt").write_bytes(b"the resume point")
    notes = stage2 / "notes.pt"
    notes.write_bytes(b"not a checkpoint")
    for output, flags, message in (
        (stage2 / "checkpoint_last.pt", [], "is a name fairseq-train writes"),
        (stage2 / "checkpoint_last.pt", ["--force"], "is a name fairseq-train writes"),
        (stage2 / "checkpoint_best.pt", [], "is a name fairseq-train writes"),
        (stage2 / "checkpoint3.pt", [], "is a name fairseq-train writes"),
        (notes, [], "exists and is not this script's output: pass --force"),
    ):
        with pytest.raises(SystemExit):
            fresh_latent_predictor.main([str(source), "--output", str(output), *flags])
        assert message in capsys.readouterr().err, output
    assert (stage2 / "checkpoint_last.pt").read_bytes() == b"the resume point"
    assert notes.read_bytes() == b"not a checkpoint"
    assert sorted(p.name for p in stage2.iterdir()) == [
        "checkpoint_last.pt",
        "notes.pt",
    ]
    forced = [str(source), "--output", str(notes), "--force"]
    assert fresh_latent_predictor.main(forced) == 0
    fresh = stage2 / "fresh_predictor.pt"
    assert fresh_latent_predictor.main([str(source), "--output", str(fresh)]) == 0
    again = [str(source), "--output", str(fresh), "--seed", "2"]
    assert fresh_latent_predictor.main(again) == 0  # its own output: remade
    assert torch.load(fresh, weights_only=False)["fresh_latent_predictor"]["seed"] == 2
