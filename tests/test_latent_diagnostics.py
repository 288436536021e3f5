"""research/latent_diagnostics.py: the latent predictor's accuracy by position, free-running
accuracy, the share of its training targets that are evaluation codes, last-code entropy."""

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research"))
from latent_diagnostics import (  # noqa: E402
    Accuracy,
    conditional_entropy_bits,
    entropy_bits,
    position_classes,
    subset_diagnostics,
    training_targets,
)


def test_positions_are_first_middle_last_and_a_single_latent_is_last():
    padding = torch.tensor(
        [
            [False, False, False, False],
            [False, True, True, True],
            [False, False, True, True],
        ]
    )
    assert position_classes(padding).tolist() == [
        [0, 1, 1, 2],
        [2, -1, -1, -1],
        [0, 2, -1, -1],
    ]


def test_accuracy_counts_each_slice_by_position():
    acc = Accuracy()
    classes = torch.tensor([[0, 1, 2, -1]])
    reference = torch.tensor([[[1, 2], [3, 4], [5, 6], [7, 8]]])  # (B=1, N=4, S=2)
    predicted = torch.tensor([[[1, 2], [3, 0], [0, 0], [7, 8]]])  # padding ignored
    acc.add(predicted, reference, classes)
    result = acc.result()
    assert result["codes"] == 6
    assert result["all"] == pytest.approx(3 / 6, abs=1e-4)
    assert (result["first"], result["middle"], result["last"]) == (1.0, 0.5, 0.0)
    assert result["last_share"] == pytest.approx(1 / 3, abs=1e-4)
    with pytest.raises(ValueError, match="no latents"):
        Accuracy().result()


def test_the_conditional_entropy_removes_what_the_condition_tells():
    # The code is the condition: it carries 1 bit, none of it left given the condition.
    pairs = [(0, 5), (1, 7)] * 4
    assert entropy_bits(Counter(c for _, c in pairs)) == pytest.approx(1.0)
    assert conditional_entropy_bits(pairs) == pytest.approx(0.0)
    independent = [(m, c) for m in (0, 1) for c in (5, 7)]
    assert conditional_entropy_bits(independent) == pytest.approx(1.0)


def test_diagnostics_of_a_model_and_its_clean_training_targets(
    build_vqvae, make_sample
):
    built = build_vqvae("--bottleneck", "hard_em", "--dropout", "0.5")
    model = built.model
    batches = [
        make_sample(built.task, "valid", range(0, 8)),
        make_sample(built.task, "valid", range(8, 16)),
    ]
    result = subset_diagnostics(model, batches)
    forced, free = result["teacher_forced"], result["free_running"]
    assert forced["codes"] == free["codes"] > 0
    assert forced["first_share"] + forced["middle_share"] + forced[
        "last_share"
    ] == pytest.approx(1, abs=1e-3)
    assert 0 <= free["all"] <= 1 and result["codes_in_use"] >= 1
    entropy = result["last_code_entropy_bits"]
    assert entropy["given_T_mod_ratio"] <= entropy["unconditioned"] + 1e-9
    assert not model.training
    train = [make_sample(built.task, "train", range(16))]
    noisy = training_targets(model, train)
    # Dropout 0.5 in the compressor moves some training-mode codes off the evaluation code.
    assert noisy["inputs_equal_eval"] < 1.0
    clean = build_vqvae(
        "--bottleneck", "hard_em", "--dropout", "0.5", "--latent-clean-targets"
    ).model
    clean.load_state_dict(model.state_dict())
    result = training_targets(clean, train)
    assert result["inputs_equal_eval"] == result["target_mass_on_eval"] == 1.0
    assert not clean.training


def test_free_running_accuracy_is_the_generators_greedy_search(
    build_vqvae, make_sample
):
    built = build_vqvae("--latent-length-condition")
    model = built.model
    sample = make_sample(built.task, "valid", range(8))
    result = subset_diagnostics(model, [sample])
    with torch.no_grad():
        net = sample["net_input"]
        encoder_out = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
        _, padding, _, vq = model.autoencode(
            sample["target"], net["src_lengths"], encoder_out
        )
        greedy, _ = model.latent_predictor.search(
            encoder_out,
            (~padding).sum(1),
            lengths=sample["target"].ne(model.pad).sum(1),
        )
    real = ~padding
    expected = (greedy[:, 0][real] == vq.codes[real]).float().mean().item()
    assert result["free_running"]["all"] == pytest.approx(expected, abs=1e-4)


def test_the_command_line_reads_a_fairseq_checkpoint(build_vqvae, tmp_path, capsys):
    import json

    import latent_diagnostics

    from conftest import save_checkpoint

    built = build_vqvae("--latent-clean-targets")
    path = tmp_path / "checkpoint_best.pt"
    save_checkpoint(built, path)
    out = tmp_path / "diagnostics.json"
    data = built.args.data
    args = [str(path), data, "--train-sentences", "40", "--json", str(out)]
    assert latent_diagnostics.main(args) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert result["training_targets"]["inputs_equal_eval"] == 1.0
    assert set(result) >= {"teacher_forced", "free_running", "last_code_entropy_bits"}
    with pytest.raises(SystemExit):
        latent_diagnostics.main([str(tmp_path / "missing.pt"), data])
    assert "no checkpoint at" in capsys.readouterr().err
