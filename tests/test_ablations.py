"""The recipe ablation harness: examples/multi30k/ablate.sh and research/ablations.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "research"))
import ablations  # noqa: E402

VALID = (
    "{stamp} | INFO | valid | epoch {epoch:03d} | valid on 'valid' subset | loss 9.1 | latent_acc {acc} "
    "| code_usage {codes} | bleu {bleu} | wps 634 | num_updates {updates}"
)
START = "{stamp} | INFO | fairseq_cli.train | {{'_name': None}}"


def _log(entries):
    return "\n".join(line.format(**fields) for line, fields in entries) + "\n"


def test_validations_keep_every_update_once_across_a_resume():
    log = _log(
        [
            (START, {"stamp": "2026-12-02 10:00:00"}),
            (
                VALID,
                dict(
                    stamp="2026-12-02 10:10:00",
                    epoch=1,
                    acc=0.1,
                    codes=12.6,
                    bleu=2.0,
                    updates=140,
                ),
            ),
            (
                VALID,
                dict(
                    stamp="2026-12-02 10:20:00",
                    epoch=2,
                    acc=0.2,
                    codes=30,
                    bleu=5.5,
                    updates=280,
                ),
            ),
            # killed, resumed from checkpoint_last (update 140): epoch 2 is validated again
            (START, {"stamp": "2026-12-02 11:00:00"}),
            (
                VALID,
                dict(
                    stamp="2026-12-02 11:10:00",
                    epoch=2,
                    acc=0.25,
                    codes=31,
                    bleu=6.0,
                    updates=280,
                ),
            ),
        ]
    )
    valid = ablations.validations(log)
    assert [(int(v["num_updates"]), v["bleu"]) for v in valid] == [
        (140, 2.0),
        (280, 6.0),
    ]
    assert valid[-1]["latent_acc"] == 0.25 and valid[-1]["code_usage"] == 31
    assert (
        ablations.train_wall(log) == 30 * 60
    )  # segments of 20 and 10 minutes, not the gap


def _row(variant, seed, bleu, budget=1000):
    return {
        "variant": variant,
        "data": "distill",
        "seed": seed,
        "max_update": budget,
        "flags": "--x 1",
        "valid_bleu_best": bleu,
        "test_bleu": bleu - 1,
        "test_length_ratio": 0.9,
        "oracle_test_bleu": bleu + 3,
        "latent_acc": 0.2,
        "codes_in_use": 40,
        "train_wall_s": 3600,
    }


def test_table_groups_seeds_with_mean_and_half_range_best_first():
    table = ablations.render_table(
        [_row("a", 2, 20.0), _row("a", 1, 22.0), _row("b", 1, 30.0)]
    )
    lines = table.splitlines()
    assert lines[2].startswith("| 1000 | b | distill | 1 | 30.00 | 29.00 |")
    assert lines[3].startswith(
        "| 1000 | a | distill | 1,2 | 21.00 ± 1.00 | 20.00 ± 1.00 |"
    )


@pytest.mark.parametrize(
    "curve, gain",
    [
        ([[140, 1.0], [560, 10.0], [840, 18.0], [1000, 19.5]], 9.5),  # still rising
        ([[1000, 20.0], [3000, 27.0], [3360, 26.5], [4000, 27.2]], 0.2),  # flat
        ([[1000, 20.0], [4000, 19.0]], -1.0),  # fell
        ([[140, 1.0]], None),  # one validation: no last fifth to compare
        ([], None),
    ],
)
def test_last_fifth_gain_says_whether_a_run_converged(curve, gain):
    result = ablations.last_fifth_gain(curve)
    assert result == (gain if gain is None else pytest.approx(gain))
    row = _row("a", 1, 20.0) | {"valid_bleu_curve": curve}
    cells = ablations.render_table([row]).splitlines()[2].split(" | ")
    assert cells[-3] == ("-" if gain is None else f"{gain:.2f}")
    assert cells[-2] == "-"  # no checkpoint average


def test_curves_draw_every_run_of_one_budget(tmp_path):
    curve = [[140, 1.0], [280, None], [4000, 20.0]]
    rows = [
        _row("a", 1, 20.0, budget=4000) | {"valid_bleu_curve": curve},
        _row("a", 2, 21.0, budget=4000) | {"valid_bleu_curve": curve},
        _row("b", 1, 19.0, budget=4000) | {"valid_bleu_curve": curve},
        _row("a", 1, 20.0) | {"valid_bleu_curve": curve},  # another budget
        _row("c", 1, 20.0, budget=4000),  # an older row without a curve
    ]
    out = tmp_path / "sub" / "curves.png"
    assert ablations.plot_curves(rows, 4000, out) == 3
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no row of 9 updates with a validation curve"):
        ablations.plot_curves(rows, 9, out)


def test_curves_of_one_claim_draw_only_its_variants(tmp_path):
    curve = [[140, 1.0], [1000, 20.0]]
    rows = [
        _row(v, seed, 20.0) | {"valid_bleu_curve": curve}
        for v in ("a", "b", "c")
        for seed in (1, 2)
    ]
    out = tmp_path / "claim.png"
    assert ablations.plot_curves(rows, 1000, out, [["a", "c"]], "a vs c") == 4
    assert ablations.plot_curves(rows, 1000, out, [["a", "b"], ["a", "c"]]) == 6
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="for typo: check the names"):
        ablations.plot_curves(rows, 1000, out, [["a"], ["typo"]])


def test_curves_cli_takes_variants(tmp_path, capsys):
    rows = tmp_path / "rows"
    rows.mkdir()
    curve = [[140, 1.0], [1000, 20.0]]
    for v in ("a", "b"):
        row = _row(v, 1, 20.0) | {"valid_bleu_curve": curve}
        (rows / f"{v}__seed1__u1000.json").write_text(json.dumps(row))
    out = tmp_path / "ab.png"
    argv = ["curves", str(tmp_path), "--budget", "1000", "--out", str(out)]
    assert ablations.main(argv + ["--variants", "b"]) == 0
    assert "1 runs of 1000 updates" in capsys.readouterr().out
    assert ablations.main(argv + ["--variants", "a,b", "--variants", "b"]) == 0
    assert "2 runs of 1000 updates" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ablations.main(argv + ["--variants", ","])
    assert "give one variant name or more" in capsys.readouterr().err


def test_table_is_written_between_its_markers_only(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "a__seed1__u1000.json").write_text(
        json.dumps(_row("a", 1, 20.0))
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{ablations.TABLE_BEGIN}\nold\n{ablations.TABLE_END}\noutro\n"
    )
    ablations.write_table(tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| 1000 | a | distill | 1 | 20.00 |" in text


def _script(name, *args, timeout=300, **env):
    # A dry run costs a few seconds on a quiet machine; the limit only catches a hang (under
    # load, beside trainings, one took over a minute). AUTOCAST=0 unless a test sets it: "auto"
    # asks torch about the CPU in every run (test_autocast_setting_decides_... tests it).
    env.setdefault("AUTOCAST", "0")
    return subprocess.run(
        ["bash", str(REPO / "examples/multi30k" / name), *args],
        env=dict(os.environ, PYTHON=sys.executable, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ablate(*args, **env):
    return _script("ablate.sh", *args, **env)


def test_unknown_variant_and_bad_budget_get_one_line_errors():
    result = _ablate("no_such_variant")
    assert result.returncode != 0
    assert (
        "ablate: error: unknown variant 'no_such_variant': one of old_recipe"
        in result.stderr
    )
    result = _ablate("old_recipe", MAX_UPDATE="0")
    assert (
        result.returncode != 0
        and "MAX_UPDATE must be a positive integer" in result.stderr
    )
    result = _ablate("old_recipe", AUTOCAST="on")
    assert (
        result.returncode != 0
        and "AUTOCAST must be auto, 1 or 0, got 'on'" in result.stderr
    )


@pytest.mark.parametrize(
    "variant, present, absent",
    [
        (
            "old_recipe",
            ["--lr 1e-3", "--warmup-updates 500", "--dropout 0.3 --glance-ratio 0"],
            ["--glance-ratio 0.5"],
        ),
        (
            "fast_schedule_glance",
            [
                "--warmup-updates 200",
                "--glance-ratio 0.5",
                "--bottleneck soft_em --compress-steps 3 --codebook-init uniform",
            ],
            ["--warmup-updates 500"],
        ),
    ],
)
def test_dry_run_trains_the_variant_with_the_common_recipe(
    tmp_path, variant, present, absent
):
    result = _ablate(variant, "3", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="7")
    assert result.returncode == 0, result.stderr
    train = next(line for line in result.stderr.splitlines() if "fairseq-train" in line)
    for flag in present + ["--max-update 7", "--seed 3", f"u7/{variant}/seed3"]:
        assert flag in train
    for flag in absent:
        assert flag not in train
    assert (
        "distill_shared/data-bin" in train
    )  # distilled variants train on the shared set


@pytest.mark.parametrize("setting", ["1", "0", "auto"])
def test_autocast_setting_decides_the_bf16_autocast_flag(tmp_path, setting):
    from fairseq_vqvae.precision import autocast_pays

    result = _ablate(
        "fsg_nc4",
        "1",
        DRY_RUN="1",
        WORK=str(tmp_path),
        MAX_UPDATE="7",
        AUTOCAST=setting,
    )
    assert result.returncode == 0, result.stderr
    train = next(line for line in result.stderr.splitlines() if "fairseq-train" in line)
    # auto: only where autocast is faster (a GPU, a CPU with native bfloat16)
    expected = {"1": True, "0": False, "auto": autocast_pays()}[setting]
    assert ("--bf16-autocast" in train) == expected


def test_keep_epochs_averages_the_last_epochs_and_measures_them_beside_the_best(
    tmp_path,
):
    result = _ablate(
        "fsg_hard_em",
        "2",
        DRY_RUN="1",
        WORK=str(tmp_path),
        MAX_UPDATE="7",
        KEEP_EPOCHS="5",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    train = next(line for line in lines if "fairseq-train" in line)
    assert "--keep-last-epochs 5" in train and "--no-epoch-checkpoints" not in train
    save = f"{tmp_path}/ablations/u7/fsg_hard_em/seed2"
    average = next(line for line in lines if "average_checkpoints.py" in line)
    assert average.endswith(
        f"{save} --num-epoch-checkpoints 5 --output {save}/checkpoint_avg5.pt"
    )
    valid, test = [line for line in lines if "benchmark.py" in line]
    name = f"fsg_hard_em, average of last 5 epochs=translation_vqvae:{save}/checkpoint_avg5.pt"
    assert "--subset valid" in valid and name in valid and "valid.de" in valid
    assert "--subset" not in test and name in test and "oracle latents" in test
    row = next(line for line in lines if "ablations.py row" in line)
    assert f"--benchmark-valid {save}/benchmark_valid.json --average-epochs 5" in row
    default = _ablate(
        "fsg_hard_em", "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="7"
    )
    assert "--no-epoch-checkpoints" in default.stderr
    assert "average_checkpoints.py" not in default.stderr
    bad = _ablate("fsg_hard_em", KEEP_EPOCHS="five")
    assert bad.returncode != 0
    assert (
        "KEEP_EPOCHS must be a non-negative integer (0: no average), got 'five'"
        in bad.stderr
    )


def test_row_records_the_average_beside_the_best_checkpoint(tmp_path):
    log = _log(
        [
            (START, {"stamp": "2026-12-02 10:00:00"}),
            (
                VALID,
                dict(
                    stamp="2026-12-02 10:10:00",
                    epoch=1,
                    acc=0.1,
                    codes=9,
                    bleu=2.0,
                    updates=140,
                ),
            ),
        ]
    )
    (tmp_path / "train.log").write_text(log)
    average = "v, average of last 5 epochs"

    def bench(path, models):
        path.write_text(
            json.dumps(
                {
                    "benchmark": {"hardware": "cpu"},
                    "models": [{"name": n, "bleu": b} for n, b in models.items()],
                }
            )
        )

    bench(tmp_path / "test.json", {"v": 20.0, "v, oracle latents": 30.0, average: 20.5})
    bench(tmp_path / "valid.json", {"v": 21.0, average: 22.0})
    common = [
        "row",
        "--variant",
        "v",
        "--data",
        "distill",
        "--seed",
        "1",
        "--max-update",
        "140",
    ]
    common += ["--train-dir", str(tmp_path), "--benchmark", str(tmp_path / "test.json")]
    out = tmp_path / "row.json"
    ablations.main(
        common
        + [
            "--benchmark-valid",
            str(tmp_path / "valid.json"),
            "--average-epochs",
            "5",
            "--out",
            str(out),
        ]
    )
    row = json.loads(out.read_text())
    assert (row["average_epochs"], row["test_bleu"], row["test_bleu_average"]) == (
        5,
        20.0,
        20.5,
    )
    assert (row["valid_sacrebleu_best_checkpoint"], row["valid_sacrebleu_average"]) == (
        21.0,
        22.0,
    )
    cells = ablations.render_table([row]).splitlines()[2].split(" | ")
    assert cells[-2] == "+1.00 / +0.50 (5 epochs)"
    ablations.main(common + ["--out", str(out)])
    assert "average_epochs" not in json.loads(out.read_text())
    with pytest.raises(SystemExit):
        ablations.main(common + ["--average-epochs", "5", "--out", str(out)])


def test_row_and_table_carry_the_latent_diagnostics(tmp_path):
    log = _log(
        [
            (START, {"stamp": "2026-12-02 10:00:00"}),
            (
                VALID,
                dict(
                    stamp="2026-12-02 10:10:00",
                    epoch=1,
                    acc=0.1,
                    codes=9,
                    bleu=2.0,
                    updates=140,
                ),
            ),
        ]
    )
    (tmp_path / "train.log").write_text(log)
    (tmp_path / "test.json").write_text(
        json.dumps(
            {"benchmark": {"hardware": "cpu"}, "models": [{"name": "v", "bleu": 20.0}]}
        )
    )
    diagnostics = {
        "teacher_forced": {"all": 0.5, "first": 0.6, "middle": 0.5, "last": 0.4},
        "free_running": {"all": 0.3, "first": 0.6, "middle": 0.2, "last": 0.1},
        "training_targets": {"inputs_equal_eval": 0.85},
    }
    (tmp_path / "diag.json").write_text(json.dumps(diagnostics))
    out = tmp_path / "row.json"
    common = ["row", "--variant", "v", "--data", "distill", "--seed", "1"]
    common += ["--max-update", "140", "--train-dir", str(tmp_path)]
    common += ["--benchmark", str(tmp_path / "test.json"), "--out", str(out)]
    ablations.main(common + ["--diagnostics", str(tmp_path / "diag.json")])
    row = json.loads(out.read_text())
    assert row["latent_diagnostics"] == diagnostics
    header, _, cells = ablations.render_table([row]).splitlines()
    cells = dict(zip(header.split(" | "), cells.split(" | ")))
    forced = "teacher-forced acc: all (first / middle / last)"
    assert cells[forced] == "0.50 (0.60 / 0.50 / 0.40)"
    assert cells["free-running acc: all (first / middle / last)"] == (
        "0.30 (0.60 / 0.20 / 0.10)"
    )
    assert cells["training targets = eval codes"] == "0.85"
    ablations.main(common)  # a row without diagnostics (older rows) shows none
    row = json.loads(out.read_text())
    header, _, cells = ablations.render_table([row]).splitlines()
    assert dict(zip(header.split(" | "), cells.split(" | ")))[forced] == "-"


def _shorter_run(tmp_path, variant, seed, budget, extra=(), without=(), moved_to=None):
    """A finished run of BUDGET updates: the command ablate.sh ran, %q-quoted as it writes it,
    with the flags (and values) in ``without`` left out (and --user-dir ``moved_to``)."""
    dry = _ablate(variant, seed, DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE=budget)
    train = next(line for line in dry.stderr.splitlines() if "fairseq-train" in line)
    command = train.removeprefix("+ ")
    for flag in without:
        assert f" {flag} " in command
        command = command.replace(f" {flag} ", " ")
    args = command.split() + list(extra)
    if moved_to:
        args[args.index("--user-dir") + 1] = moved_to
    run = tmp_path / f"ablations/u{budget}/{variant}/seed{seed}"
    run.mkdir(parents=True)
    quoted = subprocess.run(
        ["bash", "-c", 'printf "%q " "$@"', "_", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (run / "command.txt").write_text(quoted)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "train.log"):
        (run / name).write_text("")
    return run


def test_from_budget_starts_a_longer_run_from_the_shorter_runs_checkpoint(tmp_path):
    env = dict(DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="9", FROM_BUDGET="7")
    shorter = _shorter_run(tmp_path, "fsg_raw", "2", "7")
    result = _ablate("fsg_raw", "2", **env)
    assert result.returncode == 0, result.stderr
    save = tmp_path / "ablations/u9/fsg_raw/seed2"
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "train.log"):
        assert f"+ cp {shorter}/{name} {save}/{name}" in result.stderr
    assert "train_commits.txt" not in result.stderr  # only the files that are there
    # another seed has no shorter run: it trains from update 0
    result = _ablate("fsg_raw", "1", **env)
    assert result.returncode == 0, result.stderr
    assert "no 7-update run at" in result.stderr and "+ cp" not in result.stderr


def test_from_budget_takes_a_shorter_run_of_another_checkout(tmp_path):
    """The same code run from another checkout or worktree (--user-dir) is the same recipe."""
    shorter = _shorter_run(
        tmp_path, "fsg_raw", "2", "7", moved_to="/elsewhere/fairseq_vqvae"
    )
    assert "/elsewhere/fairseq_vqvae" in (shorter / "command.txt").read_text()
    result = _ablate(
        "fsg_raw", "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="9", FROM_BUDGET="7"
    )
    assert result.returncode == 0, result.stderr
    assert f"+ cp {shorter}/checkpoint_last.pt" in result.stderr


def test_from_budget_refuses_a_shorter_run_of_other_flags(tmp_path):
    _shorter_run(tmp_path, "fsg_raw", "2", "7", extra=["--dropout", "0.3"])
    result = _ablate(
        "fsg_raw", "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="9", FROM_BUDGET="7"
    )
    assert result.returncode != 0 and "+ cp" not in result.stderr
    assert "was not trained with this run's flags" in result.stderr.splitlines()[-1]


PRESET_BOTTLENECK_OF_THE_OLD_ROWS = (
    "--bottleneck soft_em",
    "--compress-steps 3",
    "--codebook-init uniform",
)


@pytest.mark.parametrize("variant", ["fast_schedule_glance", "fsg_nc4", "fsg_hard_em"])
def test_from_budget_takes_a_shorter_run_that_left_the_old_preset_bottleneck_implicit(
    tmp_path, variant
):
    """Rows trained before 2026-12-06 got soft EM, n_c = 3 and uniform codes from the preset
    without naming them; ablate.sh names them now (the preset's default changed): same recipe."""
    train = next(
        line
        for line in _ablate(
            variant, "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="9"
        ).stderr.splitlines()
        if "fairseq-train" in line
    )
    spelled_out = [flag for flag in PRESET_BOTTLENECK_OF_THE_OLD_ROWS if flag in train]
    assert spelled_out  # each variant names what it does not set itself
    shorter = _shorter_run(tmp_path, variant, "2", "7", without=spelled_out)
    result = _ablate(
        variant, "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="9", FROM_BUDGET="7"
    )
    assert result.returncode == 0, result.stderr
    assert f"+ cp {shorter}/checkpoint_last.pt" in result.stderr


def test_from_budget_refuses_a_shorter_run_of_another_bottleneck(tmp_path):
    """An old command without --bottleneck ran soft EM: not the VQ-VAE that fsg_vqvae names."""
    _shorter_run(tmp_path, "fsg_vqvae", "2", "7", without=["--bottleneck vqvae"])
    result = _ablate(
        "fsg_vqvae",
        "2",
        DRY_RUN="1",
        WORK=str(tmp_path),
        MAX_UPDATE="9",
        FROM_BUDGET="7",
    )
    assert result.returncode != 0 and "+ cp" not in result.stderr
    assert "was not trained with this run's flags" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("from_budget", ["0", "9", "12", "x"])
def test_from_budget_must_be_below_the_budget(from_budget):
    result = _ablate("fsg_raw", "1", MAX_UPDATE="9", FROM_BUDGET=from_budget)
    assert result.returncode != 0
    assert (
        f"FROM_BUDGET must be a positive integer below MAX_UPDATE (9), got '{from_budget}'"
        in result.stderr
    )


def test_teacher_variant_reads_the_teacher_checkpoint(tmp_path):
    result = _ablate("fsg_init_ar", "1", WORK=str(tmp_path), MAX_UPDATE="7")
    assert result.returncode != 0
    assert f"there is none at {tmp_path}/teacher/checkpoint_best.pt" in result.stderr
    teacher = tmp_path / "ar.pt"
    result = _ablate(
        "fsg_init_ar",
        "1",
        DRY_RUN="1",
        WORK=str(tmp_path),
        TEACHER=str(teacher),
        MAX_UPDATE="7",  # no committed row of that budget
    )
    assert result.returncode == 0, result.stderr
    train = next(line for line in result.stderr.splitlines() if "fairseq-train" in line)
    assert (
        f"--post-norm --init-from-ar {teacher} " in train and "{teacher}" not in train
    )


def test_second_stage_variant_continues_its_first_stage_of_the_same_seed(tmp_path):
    result = _ablate("fsg_hard_em_lp", "2", WORK=str(tmp_path), MAX_UPDATE="7")
    first = tmp_path / "ablations/u1000/fsg_hard_em/seed2/checkpoint_best.pt"
    assert result.returncode != 0
    assert f"its first is not there: {first} (run MAX_UPDATE=1000 bash" in result.stderr
    assert "ablate.sh fsg_hard_em 2)" in result.stderr
    result = _ablate(
        "fsg_hard_em_lp", "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="7"
    )
    assert result.returncode == 0, result.stderr
    train = next(line for line in result.stderr.splitlines() if "fairseq-train" in line)
    assert f"--latent-predictor-only --finetune-from-model {first} " in train
    assert "{best:" not in train


def test_fresh_predictor_stage_gives_its_first_stage_a_new_predictor(tmp_path):
    first = tmp_path / "ablations/u4000/fsg_hard_em/seed2/checkpoint_best.pt"
    result = _ablate("hem_lp_fresh1", "2", WORK=str(tmp_path), MAX_UPDATE="7")
    assert result.returncode != 0
    assert f"its first is not there: {first} (run MAX_UPDATE=4000 bash" in result.stderr
    result = _ablate(
        "hem_lp_fresh1", "2", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="7"
    )
    assert result.returncode == 0, result.stderr
    start = tmp_path / "ablations/u7/hem_lp_fresh1/seed2/fresh_predictor.pt"
    lines = result.stderr.splitlines()
    fresh = next(line for line in lines if "fresh_latent_predictor.py" in line)
    assert f"{first} --output {start} --seed 2 --latent-layers 1" in fresh
    train = next(line for line in lines if "fairseq-train" in line)
    assert f"--finetune-from-model {start} " in train and "{fresh-" not in train
    assert lines.index(fresh) < lines.index(train)
    # made once; again when the first stage's best checkpoint is newer; not once it trains
    first.parent.mkdir(parents=True)
    start.parent.mkdir(parents=True)
    env = dict(DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="7")
    for older, newer, made in ((first, start, False), (start, first, True)):
        older.write_bytes(b"")
        newer.write_bytes(b"")
        os.utime(older, (1, 1))
        again = _ablate("hem_lp_fresh1", "2", **env)
        assert again.returncode == 0, again.stderr
        assert ("fresh_latent_predictor.py" in again.stderr) == made
    (start.parent / "checkpoint_last.pt").write_bytes(b"")
    again = _ablate("hem_lp_fresh1", "2", **env)
    assert "fresh_latent_predictor.py" not in again.stderr


def test_every_variant_names_known_options():
    """Each variant's flags parse with fairseq's own parser (a typo would cost a training)."""
    from fairseq import options

    import fairseq_vqvae

    fairseq_vqvae.register()

    lines = (
        (REPO / "examples/multi30k/results/ablations/variants.tsv")
        .read_text()
        .splitlines()
    )
    variants = [
        line.split("\t") for line in lines if line.strip() and not line.startswith("#")
    ]
    assert len(variants) >= 3
    for variant in variants:
        argv = [
            "data",
            "--user-dir",
            str(REPO / "fairseq_vqvae"),
            "--task",
            "translation_vqvae",
            "--arch",
            "vqvae_nat_small",
            "--criterion",
            "vqvae_em",
            *variant[3].split(),
        ]
        parser = options.get_training_parser()
        args, unknown = options.parse_args_and_arch(parser, argv, parse_known=True)
        assert not unknown, (variant[0], unknown)


def _converged(*args, **env):
    return _script("converged.sh", *args, timeout=600, **env)


def test_converged_study_trains_each_row_then_benchmarks_all_with_the_teacher(tmp_path):
    result = _converged(
        DRY_RUN="1",
        WORK=str(tmp_path),
        MAX_UPDATE="9",
        ROWS="fsg_hard_em:2 fsg_nc4:1",
        TEACHER=str(tmp_path / "t.pt"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    train = [line for line in lines if "fairseq-train" in line]
    assert len(train) == 2
    assert "--bottleneck hard_em" in train[0] and "--seed 2" in train[0]
    assert "--compress-steps 4" in train[1] and "--seed 1" in train[1]
    assert all(
        "--max-update 9" in line and "--keep-last-epochs 5" in line for line in train
    )
    final = [line for line in lines if "benchmark.py" in line][-1]
    for model in (
        f"AR beam 4=translation:{tmp_path / 't.pt'}:beam=4",
        f"AR greedy=translation:{tmp_path / 't.pt'}:beam=1",
        f"fsg_hard_em=translation_vqvae:{tmp_path}/ablations/u9/fsg_hard_em/seed2/checkpoint_best.pt",
        f"fsg_nc4=translation_vqvae:{tmp_path}/ablations/u9/fsg_nc4/seed1/checkpoint_best.pt",
        f"fsg_nc4, average of last 5 epochs=translation_vqvae:{tmp_path}/ablations/u9/fsg_nc4/seed1/checkpoint_avg5.pt",
    ):
        assert model in final
    assert "--threads 1" in final and "examples/multi30k/results/converged" in final
    curves = [line for line in lines if "ablations.py curves" in line]
    assert len(curves) == 1 and "--budget 9" in curves[0]
    assert curves[0].endswith("examples/multi30k/results/converged/curves.png")


def test_converged_rows_in_parallel_prepare_the_data_once_then_log_each_row(tmp_path):
    result = _converged(
        "train",
        DRY_RUN="1",
        WORK=str(tmp_path),
        MAX_UPDATE="9",
        ROWS="fsg_hard_em:2 fsg_nc4:1 fsg_raw:1",
        PARALLEL="2",
    )
    assert result.returncode == 0, result.stderr
    # --prepare: one pass over the data (both kinds) before any row starts, in this output
    prepare = [
        line for line in result.stderr.splitlines() if "prepare_multi30k.sh" in line
    ]
    assert len(prepare) == 1
    logs = {
        row: (tmp_path / "logs" / f"converged_{row}.log").read_text()
        for row in ("fsg_hard_em_seed2", "fsg_nc4_seed1", "fsg_raw_seed1")
    }
    assert "--bottleneck hard_em" in logs["fsg_hard_em_seed2"]
    assert "--compress-steps 4" in logs["fsg_nc4_seed1"]
    assert "--num-samples 5" in logs["fsg_raw_seed1"]
    assert all("--max-update 9" in log for log in logs.values())


def test_converged_rows_in_parallel_start_from_shorter_runs_at_the_default_budget(
    tmp_path,
):
    # FROM_BUDGET=1000 is not below ablate.sh's own default budget: the data pass, which
    # trains nothing, must not check it (it once refused, and no row started)
    result = _converged(
        "train",
        DRY_RUN="1",
        WORK=str(tmp_path),
        ROWS="fsg_raw:9",  # a seed with no committed row, which would be skipped
        PARALLEL="2",
        FROM_BUDGET="1000",
    )
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "logs/converged_fsg_raw_seed9.log").read_text()
    assert "no 1000-update run at" in log and "--max-update 4000" in log


def test_converged_rows_of_another_budget_train_and_are_measured_with_it(tmp_path):
    env = dict(DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="9", TEACHER="t.pt")
    result = _converged(ROWS="fsg_hard_em:2 hem_lp_cont:2:7", **env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    train = [line for line in lines if "fairseq-train" in line]
    assert "--max-update 9" in train[0] and "--latent-predictor-only" not in train[0]
    assert "--max-update 7" in train[1] and "--latent-predictor-only" in train[1]
    assert (
        f"{tmp_path}/ablations/u4000/fsg_hard_em/seed2/checkpoint_best.pt" in train[1]
    )
    final = [line for line in lines if "benchmark.py" in line][-1]
    stage = f"{tmp_path}/ablations/u7/hem_lp_cont/seed2/checkpoint_best.pt"
    assert f"hem_lp_cont=translation_vqvae:{stage}" in final
    # in parallel, a row of another budget (a second stage) waits for the rows of MAX_UPDATE
    result = _converged(
        "train", ROWS="hem_lp_cont:2:7 fsg_hard_em:2", PARALLEL="2", **env
    )
    assert result.returncode == 0, result.stderr
    started = [line for line in result.stderr.splitlines() if "(log: " in line]
    assert "row fsg_hard_em seed 2, 9 updates" in started[0]
    assert "row hem_lp_cont seed 2, 7 updates" in started[1]
    assert (
        "--max-update 7"
        in (tmp_path / "logs/converged_hem_lp_cont_seed2.log").read_text()
    )


def test_converged_parallel_names_the_rows_that_failed(tmp_path):
    # A row whose variant is unknown fails inside its own run; the others still run. (Seed 9:
    # no committed result row, which would make the other row skip its training.)
    result = _converged(
        "train",
        DRY_RUN="1",
        WORK=str(tmp_path),
        ROWS="fsg_nc4:9 no_such_variant:1",
        PARALLEL="2",
    )
    assert result.returncode != 0
    assert "rows no_such_variant:1 failed" in result.stderr.strip().splitlines()[-1]
    assert (
        "fairseq-train"
        in (tmp_path / "logs" / "converged_fsg_nc4_seed9.log").read_text()
    )


def test_prepare_only_prepares_both_kinds_of_data(tmp_path):
    result = _ablate("--prepare", DRY_RUN="1", WORK=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "prepare_multi30k.sh" in result.stderr
    assert "fairseq-train" not in result.stderr


def test_rows_and_table_are_replaced_whole(tmp_path, monkeypatch):
    # Rows of parallel runs rewrite the table at once: each write is a rename, never a
    # truncate-then-write that another run could read half of.
    target = tmp_path / "row.json"
    target.write_text("old")
    replaced = []
    real = os.replace
    monkeypatch.setattr(
        ablations.os, "replace", lambda a, b: (replaced.append((a, b)), real(a, b))
    )
    ablations._write_atomically(target, "new")
    assert target.read_text() == "new" and replaced[0][1] == target
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["eval"], {}, "unknown stage 'eval': train, benchmark or all"),
        (
            [],
            {"PARALLEL": "0"},
            "PARALLEL must be a positive integer (rows at once), got '0'",
        ),
        ([], {"ROWS": "fsg_hard_em"}, "ROWS entry 'fsg_hard_em' is not VARIANT:SEED"),
        ([], {"ROWS": "fsg_hard_em:1:0"}, "'fsg_hard_em:1:0' is not VARIANT:SEED or"),
        ([], {"MAX_UPDATE": "0"}, "MAX_UPDATE must be a positive integer, got '0'"),
        (["benchmark"], {}, "no row of 4000 updates is trained yet"),
    ],
)
def test_converged_study_errors_say_what_to_fix(tmp_path, args, env, message):
    result = _converged(*args, WORK=str(tmp_path), **env)
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1]


INNER = "{stamp} | INFO | train_inner | epoch {epoch:03d}:     50 / 140 loss=9.1, num_updates={updates}, lr=0.001"
SAVED = (
    "{stamp} | INFO | fairseq.checkpoint_utils | Saved checkpoint {path}/checkpoint{epoch}.pt "
    "(epoch {epoch} @ {updates} updates, score 4.0) (writing took 0.3 seconds)"
)


def _epoch_end(stamp, run, epoch, bleu, updates):
    """A validation and the checkpoint saved after it."""
    fields = dict(stamp=stamp, epoch=epoch, updates=updates)
    return [
        (VALID, dict(fields, acc=0.1, codes=9, bleu=bleu)),
        (SAVED, dict(fields, path=run)),
    ]


def test_status_says_where_each_training_stands_and_its_time_left(tmp_path, capsys):
    run = tmp_path / "u1000/fsg_raw/seed2"
    run.mkdir(parents=True)
    first, resumed = "2026-12-05 10:{:02d}:00", "2026-12-05 12:{:02d}:00"
    (run / "train.log").write_text(
        _log(
            [
                (START, {"stamp": first.format(0)}),
                (INNER, dict(stamp=first.format(1), epoch=1, updates=50)),
                (INNER, dict(stamp=first.format(11), epoch=1, updates=100)),
                *_epoch_end(first.format(14), run, epoch=1, bleu=5.0, updates=140),
                # killed at 150 updates, resumed from 140 at another pace: the pace is the new
                # start's, over all its logged updates (a validation between them included)
                (INNER, dict(stamp=first.format(16), epoch=2, updates=150)),
                (START, {"stamp": resumed.format(0)}),
                (INNER, dict(stamp=resumed.format(20), epoch=2, updates=150)),
                (INNER, dict(stamp=resumed.format(30), epoch=2, updates=200)),
                *_epoch_end(resumed.format(50), run, epoch=2, bleu=4.0, updates=280),
                (INNER, dict(stamp=resumed.format(56), epoch=3, updates=300)),
            ]
        )
    )
    stopped = tmp_path / "u1000/fsg_nc4/seed1"
    stopped.mkdir(parents=True)
    (stopped / "train.log").write_text(
        _log(
            [
                (START, {"stamp": first.format(0)}),
                (INNER, dict(stamp=first.format(1), epoch=1, updates=50)),
                (INNER, dict(stamp=first.format(2), epoch=1, updates=100)),
                (
                    "{stamp} | INFO | fairseq_cli.train | done training in 60.0 seconds",
                    {"stamp": first.format(3)},
                ),
            ]
        )
    )
    done = tmp_path / "u420/hem_dec_gold/seed1"
    done.mkdir(parents=True)
    (done / "train.log").write_text(
        _log(
            [
                (
                    VALID,
                    dict(
                        stamp=first.format(0),
                        epoch=3,
                        acc=0.1,
                        codes=9,
                        bleu=27.3,
                        updates=420,
                    ),
                )
            ]
        )
    )
    (tmp_path / "u1960/fsg_hard_em/seed1").mkdir(
        parents=True
    )  # a copied checkpoint, no log
    assert ablations.main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 150 updates in 36 minutes: 14.4 s each; 700 updates left: 2 h 48 min
    assert lines[2:] == [
        "| hem_dec_gold seed1 | 420 / 420 | 0 | 27.30 / 27.30 |  | done |",
        "| fsg_nc4 seed1 | 100 / 1000 | 0 |  |  | stopped |",
        "| fsg_raw seed2 | 300 / 1000 | 280 | 5.00 / 4.00 | 14.40 | 2 h 48 |",
    ]
    with pytest.raises(SystemExit, match="no training logs under"):
        ablations.main(["status", str(tmp_path / "nothing")])


SCALING_VALID = (
    "{stamp} | INFO | valid | epoch {epoch:03d} | valid on 'valid' subset | loss 9.1 "
    "| latent_loss {loss} | latent_acc {acc} | bleu {bleu} | wps 634 | num_updates {updates}"
)
TRAIN_SUMMARY = (
    "{stamp} | INFO | train | epoch {epoch:03d} | loss 4.5 | latent_loss 3.1 "
    "| latent_acc {acc} | wps 402.1 | num_updates {updates}"
)


def test_scaling_reads_each_runs_best_validation_and_its_fit(tmp_path, capsys):
    small, full = tmp_path / "frac250", tmp_path / "full"
    stamp = "2026-12-05 10:00:00"
    for run, points, train in (
        # (updates, BLEU, latent accuracy, latent loss): the best BLEU comes after the lowest
        # loss; a tie keeps the last (fairseq saves checkpoint_best.pt again on a tie)
        (
            small,
            [(140, 20.0, 0.05, 9.0), (280, 24.5, 0.07, 9.5), (420, 24.5, 0.065, 9.9)],
            0.6,
        ),
        (full, [(140, 21.0, 0.06, 8.9), (280, 26.0, 0.11, 8.8)], 0.4),
    ):
        run.mkdir()
        entries = []
        for epoch, (updates, bleu, acc, loss) in enumerate(points, start=1):
            fields = dict(stamp=stamp, epoch=epoch, updates=updates)
            entries.append((TRAIN_SUMMARY, dict(fields, acc=train - 0.1)))
            entries.append((SCALING_VALID, dict(fields, bleu=bleu, acc=acc, loss=loss)))
        entries.append(
            (TRAIN_SUMMARY, dict(stamp=stamp, epoch=9, updates=999, acc=train))
        )
        (run / "train.log").write_text(_log(entries))
    out = tmp_path / "out"
    assert (
        ablations.main(
            [
                "scaling",
                "--run",
                f"1={full}",
                "--run",
                f"0.25={small}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    points = json.loads((out / "scaling.json").read_text())
    first = points[1]
    assert (first["fraction"], first["best_valid_bleu"], first["best_at"]) == (
        0.25,
        24.5,
        420,
    )
    assert (first["valid_latent_acc_at_best"], first["valid_latent_acc_max"]) == (
        0.065,
        0.07,
    )
    assert (first["valid_latent_loss_min"], first["valid_latent_loss_min_at"]) == (
        9.0,
        140,
    )
    assert first["train_latent_acc_last"] == 0.6 and first["updates"] == 420
    assert first["curve"][1] == [280, 24.5, 0.07, 9.5]
    table = (out / "scaling.md").read_text().splitlines()
    assert table[2] == "| 25% | 420 | 24.50 (420) | 6.5% / 7.0% | 9.00 (140) | 60.0% |"
    assert (
        table[3] == "| 100% | 280 | 26.00 (280) | 11.0% / 11.0% | 8.80 (280) | 40.0% |"
    )
    assert capsys.readouterr().out.splitlines()[2:] == table[2:]


@pytest.mark.parametrize("run", ["0=x", "1.5=x", "half=x", "x"])
def test_scaling_refuses_a_fraction_outside_zero_to_one(run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablations.main(["scaling", "--run", run, "--out", str(tmp_path)])
    assert "FRACTION=TRAIN_DIR with FRACTION in (0, 1]" in capsys.readouterr().err


def test_scaling_of_a_run_without_validation_says_so(tmp_path):
    (tmp_path / "train.log").write_text("")
    with pytest.raises(SystemExit, match="no validation with BLEU yet"):
        ablations.main(
            ["scaling", "--run", f"0.5={tmp_path}", "--out", str(tmp_path / "o")]
        )


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["tune"], {}, "usage:"),
        (
            ["train"],
            {"PARENT": "/nonexistent/best.pt"},
            "no parent checkpoint /nonexistent/best.pt",
        ),
        (["table"], {}, "no scaling runs under"),
    ],
)
def test_predictor_scaling_errors_say_what_to_fix(tmp_path, args, env, message):
    done = _script(
        "predictor_scaling.sh",
        *args,
        WORK=str(tmp_path),
        OUT=str(tmp_path / "out"),
        **env,
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_scaling_of_a_folder_without_a_log_or_latent_fields(tmp_path):
    with pytest.raises(
        SystemExit, match="no .*train.log: give a fairseq-train --save-dir"
    ):
        ablations.main(
            ["scaling", "--run", f"0.5={tmp_path}", "--out", str(tmp_path / "o")]
        )
    (tmp_path / "train.log").write_text(
        _log(
            [
                (
                    VALID.replace("| latent_acc {acc} ", ""),
                    dict(
                        stamp="2026-12-05 10:00:00",
                        epoch=1,
                        codes=9,
                        bleu=3.0,
                        updates=140,
                    ),
                )
            ]
        )
    )
    point = ablations.scaling_point(0.5, tmp_path)
    assert (
        point["valid_latent_acc_max"] is None
        and point["valid_latent_loss_min_at"] is None
    )
    assert (
        ablations.scaling_table([point]).splitlines()[2]
        == "| 50% | 140 | 3.00 (140) |  /  |  |  |"
    )


def test_every_row_measures_the_latent_diagnostics_of_its_best_checkpoint(tmp_path):
    result = _ablate("lp_combo", "3", DRY_RUN="1", WORK=str(tmp_path), MAX_UPDATE="7")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    save = f"{tmp_path}/ablations/u7/lp_combo/seed3"
    diagnostics = next(line for line in lines if "latent_diagnostics.py" in line)
    assert f"{save}/checkpoint_best.pt" in diagnostics
    assert f"--json {save}/latent_diagnostics.json" in diagnostics
    row = next(line for line in lines if "ablations.py row" in line)
    assert f"--diagnostics {save}/latent_diagnostics.json" in row
    train = next(line for line in lines if "fairseq-train" in line)
    assert "--latent-clean-targets --latent-length-condition" in train


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "usage"),
        (["s.pt", "out"], {"DEVICE": "tpu"}, "DEVICE must be cpu or cuda, got 'tpu'"),
        (["s.pt", "out", "0"], {}, "THREADS must be a positive integer, got '0'"),
        (["/nonexistent/s.pt", "out"], {}, "no checkpoint at /nonexistent/s.pt"),
    ],
)
def test_engines_errors_say_what_to_fix(tmp_path, args, env, message):
    done = _script("engines.sh", *args, WORK=str(tmp_path), **env)
    assert done.returncode != 0
    assert message in done.stderr
