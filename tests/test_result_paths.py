"""Result files record paths relative to the project root, never an absolute path of the
machine that wrote them (issue 43): the writers (scripts/benchmark.py, research/ablations.py)
make them relative, and no tracked result holds one."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(REPO / "research"))
from bench.paths import from_project, project_relative, relative_paths  # noqa: E402

# An absolute path of a machine: a home, work or temporary folder (the ones result files held).
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(work|home|tmp|root|mnt|Users)/[A-Za-z]")
RESULT_SUFFIXES = (".json", ".md", ".tsv", ".txt", ".log")


def test_relative_paths_rewrites_whole_paths_and_paths_inside_commands():
    result = {
        "checkpoint": str(REPO / "runs/multi30k/a.pt"),
        "command": [
            str(REPO / ".venv/bin/python"),
            f"NAME=translation_vqvae:{REPO}/runs/b.pt:beam=4",
            f"--data={REPO.parent}/runs/data-bin",
        ],
        "bleu_detail": "BLEU = 35.37 65.7/41.6/28.8/19.9 (ratio = 1.009)",
        "description": "n_c = 3/4, {best:u1000/fsg_hard_em}, ms/sent., http://x.org/a/b",
        "bleu": 30.1,
        "count": None,
    }
    assert relative_paths(result) == {
        "checkpoint": "runs/multi30k/a.pt",
        "command": [
            ".venv/bin/python",
            "NAME=translation_vqvae:runs/b.pt:beam=4",
            "--data=../runs/data-bin",
        ],
        "bleu_detail": result["bleu_detail"],
        "description": result["description"],
        "bleu": 30.1,
        "count": None,
    }


def test_project_relative_takes_a_relative_path_from_the_current_folder(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert project_relative("x.pt") == os.path.relpath(tmp_path / "x.pt", REPO)
    assert from_project(project_relative("x.pt")) == str(tmp_path / "x.pt")
    assert from_project(str(tmp_path / "x.pt")) == str(tmp_path / "x.pt")  # old files


@pytest.fixture
def bench(monkeypatch):
    """scripts/benchmark.py with a stand-in measurement that records the paths it was given."""
    import benchmark

    def evaluate(spec, args, context):
        context["test_set"] = {
            "data": str(args.data.absolute()),
            "raw_references": str(args.ref_raw.absolute()),
        }
        return {
            **spec,
            "data": str(args.data.absolute()),
            "status": "ok",
            "bleu": 30.0,
            "bleu_tok": 30.0,
            "latency_ms": {"median": 10.0, "mean": 11.0},
            "bleu_signature": "s",
            "bleu_tok_signature": "t",
            "run": context["run"],
        }

    monkeypatch.setattr(benchmark, "evaluate", evaluate)
    return SimpleNamespace(main=benchmark.main)


def test_the_benchmark_writes_checkpoint_data_and_reference_paths_relative(
    tmp_path, bench
):
    """benchmark.json and .md hold the checkpoint, data and reference paths relative to the
    project root, and a second run still recognises its earlier models by checkpoint."""
    (tmp_path / "data").mkdir()
    (tmp_path / "ref.de").write_text("a\n")
    out = tmp_path / "R"

    def run(name):
        return bench.main(
            [
                "--data",
                str(tmp_path / "data"),
                "--ref-raw",
                str(tmp_path / "ref.de"),
                "--model",
                f"{name}=translation:{tmp_path / 'ck.pt'}",
                "--out-dir",
                str(out),
            ]
        )

    assert run("A") == 0
    text = (out / "benchmark.json").read_text()
    report = json.loads(text)
    model = report["models"][0]
    assert model["checkpoint"] == os.path.relpath(tmp_path / "ck.pt", REPO)
    assert model["data"] == os.path.relpath(tmp_path / "data", REPO)
    test_set = report["benchmark"]["test_set"]
    assert test_set["raw_references"] == os.path.relpath(tmp_path / "ref.de", REPO)
    assert not MACHINE_PATH.search(text)
    assert not MACHINE_PATH.search((out / "benchmark.md").read_text())
    assert (
        f"A=translation:{os.path.relpath(tmp_path / 'ck.pt', REPO)}"
        in (report["benchmark"]["command"])
    )
    # measured again: replaces the earlier record of that checkpoint
    assert run("A") == 0
    assert [
        m["name"] for m in json.loads((out / "benchmark.json").read_text())["models"]
    ] == ["A"]


def test_an_ablation_row_records_its_command_and_paths_relative(tmp_path):
    import ablations

    save = tmp_path / "ablations/u7/v/seed1"
    save.mkdir(parents=True)
    (save / "train.log").write_text(
        "2026-12-01 10:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | "
        "loss 5 | bleu 12.5 | num_updates 7\n"
    )
    (save / "command.txt").write_text(
        f"{REPO}/.venv/bin/fairseq-train {REPO.parent}/runs/data-bin --user-dir "
        f"{REPO}/fairseq_vqvae --save-dir {save} "
    )
    benchmark = {
        "benchmark": {"hardware": {"cpu_model": "x"}},
        "models": [{"name": "v", "bleu": 20.0, "checkpoint": str(save / "c.pt")}],
    }
    (tmp_path / "test.json").write_text(json.dumps(benchmark))
    out = tmp_path / "row.json"
    ablations.main(
        ["row", "--variant", "v", "--data", "distill", "--seed", "1"]
        + ["--max-update", "7", "--train-dir", str(save)]
        + ["--benchmark", str(tmp_path / "test.json"), "--out", str(out)]
    )
    row = json.loads(out.read_text())
    assert row["command"] == (
        ".venv/bin/fairseq-train ../runs/data-bin --user-dir fairseq_vqvae "
        f"--save-dir {os.path.relpath(save, REPO)}"
    )
    assert not MACHINE_PATH.search(out.read_text())


def _tracked_results() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "examples", "docs", "README.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in listed.stdout.split("\n") if f.endswith(RESULT_SUFFIXES)]


def test_no_tracked_result_or_document_holds_an_absolute_machine_path():
    found = []
    for name in _tracked_results():
        path = REPO / name
        if not path.is_file():  # deleted in the working tree, not yet in the index
            continue
        for number, line in enumerate(path.read_text(errors="replace").split("\n"), 1):
            match = MACHINE_PATH.search(line)
            if match:
                found.append(f"{name}:{number}: {line[match.start() :][:80]}")
    assert not found, (
        "absolute machine paths (record them relative to the project root):\n"
        + "\n".join(found[:20])
    )


def test_every_tracked_result_json_is_valid():
    for name in _tracked_results():
        if name.endswith(".json") and (REPO / name).is_file():
            json.loads((REPO / name).read_text())
