"""Issue 42: no command writes over a run's checkpoints or another run's results.

fairseq-train with --task translation_vqvae refuses to start from scratch in a save directory
that holds checkpoints (fairseq_vqvae.checkpoints.refuse_fresh_start); scripts/benchmark.py
adds a second run to its results file and writes over nothing else.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fairseq_vqvae.errors import OptionError

from conftest import CPU_TRAINING

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def _save_dir(tmp_path, *names) -> Path:
    save = tmp_path / "ck"
    save.mkdir(parents=True)
    for name in names:
        (save / name).write_bytes(f"a good {name}".encode())
    return save


def test_a_fresh_start_over_a_save_dirs_checkpoints_is_refused(tmp_path, build_vqvae):
    """checkpoint_last.pt deleted: fairseq would train from scratch and replace the best."""
    save = _save_dir(tmp_path, "checkpoint_best.pt", "checkpoint3.pt")
    with pytest.raises(
        OptionError,
        match=r"no checkpoint_last.pt to resume from, but it holds checkpoint3.pt, "
        r"checkpoint_best.pt, .*--restore-file PATH .*--finetune-from-model PATH .*"
        r"another --save-dir",
    ):
        build_vqvae("--save-dir", str(save))
    missing = tmp_path / "gone.pt"
    with pytest.raises(OptionError, match=f"--restore-file {missing} does not exist"):
        build_vqvae("--save-dir", str(save), "--restore-file", str(missing))
    assert (save / "checkpoint_best.pt").read_bytes() == b"a good checkpoint_best.pt"


def test_the_normal_starts_are_not_refused(tmp_path, build_vqvae):
    save = _save_dir(tmp_path, "checkpoint_best.pt")
    other = _save_dir(tmp_path / "o", "checkpoint_best.pt")
    for flags in (
        ("--save-dir", str(tmp_path / "new")),  # a new directory
        ("--save-dir", str(_save_dir(tmp_path / "e", "train.log"))),  # no checkpoints
        ("--save-dir", str(save), "--restore-file", str(other / "checkpoint_best.pt")),
        ("--save-dir", str(save), "--finetune-from-model", str(other / "x.pt")),
        ("--save-dir", str(save), "--continue-once", str(other / "x.pt")),
        ("--save-dir", str(save), "--no-save"),
    ):
        build_vqvae(*flags)
    built = build_vqvae("--save-dir", str(tmp_path / "new"))
    built.task.build_model(built.args, from_checkpoint=True)  # generate, interactive
    args = build_vqvae("--save-dir", str(tmp_path / "new")).args
    args.save_dir = str(save)
    built.task.build_model(args, from_checkpoint=True)
    (save / "checkpoint_last.pt").write_bytes(b"the resume point")
    build_vqvae("--save-dir", str(save))  # a resume


def test_fairseq_train_stops_before_replacing_the_best_checkpoint(
    tmp_path, tiny_databin
):
    """The command line: a one-line error (status 2), the checkpoint untouched."""
    save = _save_dir(tmp_path, "checkpoint_best.pt")
    train = Path(sys.executable).parent / "fairseq-train"
    result = subprocess.run(
        [
            str(train),
            str(tiny_databin),
            "--user-dir",
            str(REPO / "fairseq_vqvae"),
            "--task",
            "translation_vqvae",
            "--arch",
            "vqvae_nat_tiny",
            "--criterion",
            "vqvae_em",
            *CPU_TRAINING,
            "--max-update",
            "1",
            "--save-dir",
            str(save),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "fairseq-train: error: --save-dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert (save / "checkpoint_best.pt").read_bytes() == b"a good checkpoint_best.pt"
    assert sorted(p.name for p in save.iterdir()) == ["checkpoint_best.pt"]


@pytest.fixture
def bench(monkeypatch):
    """scripts/benchmark.py with a stand-in measurement (records every model it measures)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))
    measured = []

    def evaluate(spec, args, context):
        measured.append(spec["name"])
        context["test_set"] = {"sentences": 3}
        bleu = 30.0 + len(measured)
        return {
            **spec,
            "status": "ok",
            "bleu": bleu,
            "bleu_tok": bleu,
            "latency_ms": {"median": 10.0, "mean": 11.0},
            "bleu_signature": "s",
            "bleu_tok_signature": "t",
            "run": context["run"],
        }

    monkeypatch.setattr(benchmark, "evaluate", evaluate)
    return SimpleNamespace(main=benchmark.main, measured=measured)


def _models(path):
    """(name, BLEU, the absolute file it was merged from) of each model in ``path``."""
    return [
        (
            m["name"],
            m["bleu"],
            m.get("merged_from") and os.path.normpath(REPO / m["merged_from"]),
        )
        for m in json.loads(path.read_text())["models"]
    ]


def test_a_second_benchmark_run_into_the_same_results_keeps_the_first_runs_models(
    tmp_path, bench
):
    """Issue 42: model A into --out-dir R, then model B into R: R held B only."""
    (tmp_path / "data").mkdir()
    out = tmp_path / "R"
    results = out / "benchmark.json"

    def run(name, *flags):
        spec = f"{name}=translation:{tmp_path / name.lower()}.pt"
        argv = [
            "--data",
            str(tmp_path / "data"),
            "--model",
            spec,
            "--out-dir",
            str(out),
        ]
        return bench.main([*argv, *flags])

    assert run("A") == 0 and run("B") == 0
    assert _models(results) == [("B", 32.0, None), ("A", 31.0, str(results))]
    report = json.loads(results.read_text())
    assert [row["name"] for row in report["rows"]] == ["B", "A"]
    assert report["models"][1]["run"]["date"]  # the run that measured it
    assert "| A † |" in (out / "benchmark.md").read_text()
    assert run("A") == 0  # measured again: the newest measurement replaces the first
    assert _models(results) == [("A", 33.0, None), ("B", 32.0, str(results))]
    assert run("C", "--replace-results") == 0  # this run's models only
    assert _models(results) == [("C", 34.0, None)]


def test_the_benchmark_writes_over_no_file_of_another_kind(tmp_path, bench, capsys):
    """Issue 42: --json ck/checkpoint_best.pt turned the checkpoint into JSON, and
    --models-json F --json F lost a finished measurement."""
    (tmp_path / "data").mkdir()
    checkpoint = tmp_path / "ck" / "checkpoint_best.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"PK\x03\x04 a zipped checkpoint")
    models = tmp_path / "models.json"
    models.write_text('[{"name": "A", "task": "translation", "checkpoint": "a.pt"}]')
    (tmp_path / "notes.md").write_text("# Notes\n")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n a photo")
    (tmp_path / "other.json").write_text('{"models": []}')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    r = str(tmp_path / "r.json")
    for flags, message in (
        (["--json", str(checkpoint)], "exists and is not a benchmark results file"),
        (["--models-json", str(models), "--json", str(models)], "is the --models-json"),
        (["--json", str(tmp_path / "other.json")], "not a benchmark results file"),
        (["--md", str(tmp_path / "notes.md")], "not the benchmark's Markdown table"),
        (["--png", str(tmp_path / "photo.png")], "not a plot the benchmark drew"),
        (["--json", r, "--md", r], "--json and --md are both"),
    ):
        with pytest.raises(SystemExit):
            bench.main(
                [
                    "--data",
                    str(tmp_path / "data"),
                    "--model",
                    "A=translation:a.pt",
                    *flags,
                ]
            )
        assert message in capsys.readouterr().err, flags
    assert bench.measured == []  # refused before measuring anything
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
