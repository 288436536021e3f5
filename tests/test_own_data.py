"""examples/translate_your_data/run.sh end to end on a tiny synthetic corpus.

One run of every stage (prepare, teacher, distill, student, average, benchmark) with tiny
models and a few updates on 200 generated sentence pairs; then a rerun that skips every stage,
and the refusals: a stage folder holding a user's files, a stage asked for other settings.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "examples" / "translate_your_data" / "run.sh"
REFUSED = "no script of this project made"
STAGES = ("prepare", "teacher", "distill", "student", "average", "benchmark")
TINY = {
    "THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHON": sys.executable,
    "BPE_MERGES": "100",
    "TEACHER_LAYERS": "1",
    "TEACHER_DIM": "32",
    "TEACHER_FFN": "64",
    "TEACHER_HEADS": "2",
    "TEACHER_MAX_EPOCH": "1",
    "TEACHER_MAX_UPDATE": "3",
    "TEACHER_MAX_TOKENS": "2000",
    "TEACHER_WARMUP": "1",
    "TEACHER_EXTRA": "--num-workers 0",
    "TEACHER_DECODE": "max_len_b=20",
    "DISTILL_SHARDS": "1",
    "DISTILL_GENERATE_ARGS": "--max-len-b 20",
    "STUDENT_ARCH": "vqvae_nat_tiny",
    "STUDENT_MAX_UPDATE": "100",
    "STUDENT_MAX_TOKENS": "2000",
    "STUDENT_WARMUP": "1",
    "STUDENT_AUTOCAST": "0",
    "STUDENT_EXTRA": "--max-epoch 2 --num-workers 0 --encoder-embed-dim 16 "
    "--encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2 "
    "--encoder-layers 1 --decoder-layers 1",
    "AVERAGE": "2",
    "BENCH_EXTRA": "--warmup 1 --throughput-passes 1",
}


def run(work, *args, corpus=None, **env):
    result = subprocess.run(
        ["bash", str(RUN), "en", "de", str(corpus or work.parent / "corpus"), *args],
        env={**os.environ, **TINY, "WORK": str(work), **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    result.log = f"--- exit {result.returncode}\n--- stderr\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_synthetic_corpus.py"),
            "--out-dir",
            str(root / "corpus"),
            "--train",
            "200",
            "--valid",
            "20",
            "--test",
            "20",
        ],
        check=True,
        capture_output=True,
    )
    work = root / "work"
    first = run(work)
    assert first.returncode == 0, first.log
    return work


def test_every_stage_writes_its_output(own):
    data = own / "data"
    for stage in ("raw", "tok", "bpe"):
        for split in ("train", "valid", "test"):
            for lang in ("en", "de"):
                assert (data / stage / f"{split}.{lang}").is_file(), (stage, split)
    assert any("@@ " in line for line in (data / "bpe" / "train.de").open())
    assert (data / "data-bin" / "dict.en.txt").read_text() == (
        data / "data-bin" / "dict.de.txt"
    ).read_text()
    assert (own / "teacher" / "checkpoint_best.pt").is_file()
    distilled = own / "distill" / "text" / "train.de"
    assert len(distilled.read_text().splitlines()) == 200
    assert (own / "distill" / "data-bin" / "train.en-de.de.bin").is_file()
    student = own / "student"
    assert {p.name for p in student.glob("checkpoint*.pt")} >= {
        "checkpoint1.pt",
        "checkpoint2.pt",
        "checkpoint_best.pt",
        "checkpoint_last.pt",
    }
    assert (own / "average" / "checkpoint_avg2.pt").is_file()
    for stage in STAGES:
        assert (own / f".done.{stage}").is_file(), stage


def test_the_benchmark_has_the_teachers_and_the_students_rows(own):
    report = json.loads((own / "benchmark" / "benchmark.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {
        "AR beam 4",
        "AR greedy",
        "vqvae_nat_tiny student, best checkpoint",
        "the same, average of its last 2 epoch checkpoints",
    }
    for model in report["models"]:
        assert model["status"] == "ok" and model["sentences_translated"] == 20, model
        assert model["bleu"] is not None and model["latency_ms"]["median"] > 0
    assert (own / "benchmark" / "benchmark.md").is_file()


def test_a_rerun_skips_every_stage(own):
    outputs = [
        own / "teacher" / "checkpoint_best.pt",
        own / "distill" / "data-bin" / "train.en-de.de.bin",
        own / "student" / "checkpoint_best.pt",
        own / "average" / "checkpoint_avg2.pt",
        own / "benchmark" / "benchmark.json",
    ]
    before = [p.stat().st_mtime_ns for p in outputs]
    start = time.perf_counter()
    again = run(own)
    assert again.returncode == 0, again.log
    assert time.perf_counter() - start < 15, again.log
    # prepare_corpus.sh skips its 4 stages; the recipe skips the 5 after it
    assert again.stderr.count("skipping") == 4 + 5, again.log
    assert "fairseq-train" not in again.stderr, again.log
    assert [p.stat().st_mtime_ns for p in outputs] == before


def test_a_stage_folder_holding_a_users_files_is_refused(own, tmp_path):
    # the prepare stage, in a WORK whose data/ the user made
    mine = tmp_path / "a" / "data" / "data-bin" / "dict.en.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my dictionary\n")
    refused = run(tmp_path / "a", corpus=own.parent / "corpus")
    assert refused.returncode != 0 and REFUSED in refused.stderr
    assert mine.read_text() == "my dictionary\n"
    assert not (tmp_path / "a" / "data" / "raw").exists()
    # a later stage: the data prepared, the teacher's folder the user's
    work = tmp_path / "b"
    work.mkdir()
    shutil.copytree(own / "data", work / "data")
    shutil.copy(own / ".done.prepare", work)
    shutil.copy(own / ".made_by", work)
    mine = work / "teacher" / "checkpoint_best.pt"
    mine.parent.mkdir()
    mine.write_bytes(b"my teacher")
    refused = run(work, "--stages", "teacher", corpus=own.parent / "corpus")
    assert refused.returncode != 0 and REFUSED in refused.stderr
    assert mine.read_bytes() == b"my teacher"
    assert list(mine.parent.iterdir()) == [mine]


def test_a_stage_done_with_other_settings_is_refused_not_redone(own):
    marker = (own / ".done.teacher").read_text()
    other = run(own, "--stages", "teacher", TEACHER_DIM="64")
    assert other.returncode != 0, other.log
    assert "made with other settings" in other.stderr and "dim=32" in other.stderr
    assert (own / ".done.teacher").read_text() == marker


def test_input_errors_and_the_dry_run(own, tmp_path):
    missing = run(tmp_path / "w", corpus=tmp_path)
    assert missing.returncode != 0 and "train.en (or train.en.gz)" in missing.stderr
    stage = run(tmp_path / "w", "--stages", "teacher,train")
    assert stage.returncode != 0 and "unknown stage 'train'" in stage.stderr
    dry = run(tmp_path / "dry", "--dry-run", corpus=own.parent / "corpus")
    assert dry.returncode == 0, dry.log
    for script in ("prepare_corpus", "train_teacher", "distill.sh", "benchmark"):
        assert script in dry.stderr, script
    assert "fairseq-train" in dry.stderr and not (tmp_path / "dry").exists()
