"""The data/teacher/distillation/benchmark pipelines, end to end on tiny slices of real data.

scripts/prepare_multi30k.sh on 200/20/20 Multi30k lines (200 BPE merges), then in parallel:
train_teacher.sh (3 updates, tiny dims), a 2-update vqvae_nat_tiny and a 2-update fairseq NAT,
and prepare_wmt14_en_de.sh --local on 200 lines of ../shared/data/wmt14-en-de-sample; then
distill.sh with that teacher (2 shards) and benchmark.py over all of them. Each command runs
once (module fixtures started as early as their inputs exist); the tests check their outputs.
Skips with a reason when ../shared/data is absent.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import CPU_TRAINING, transformer_flags

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RESEARCH = REPO / "research"
SHARED = REPO.parent / "shared" / "data"
MULTI30K = SHARED / "multi30k"
WMT_SAMPLE = SHARED / "wmt14-en-de-sample"
SLICES = {"train": 200, "val": 20, "test_2016_flickr": 20}
HAVE_MULTI30K = all(
    (MULTI30K / f"{name}.{lang}.gz").is_file()
    for name in SLICES
    for lang in ("en", "de")
)
HAVE_WMT = all(
    (WMT_SAMPLE / f).is_file()
    for f in (
        "train10k.tok.en",
        "train10k.tok.de",
        "newstest2013.en",
        "newstest2013.de",
        "newstest2014.en",
        "newstest2014.de",
    )
)
needs_multi30k = pytest.mark.skipif(
    not HAVE_MULTI30K,
    reason=f"Multi30k raw files (train/val/test_2016_flickr.{{en,de}}.gz) not found in {MULTI30K}",
)
needs_wmt = pytest.mark.skipif(
    not HAVE_WMT,
    reason=f"WMT14 sample (train10k.tok.*, newstest2013/2014.*) not found in {WMT_SAMPLE}",
)

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHON": sys.executable,
}
ENV.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
BIN = Path(sys.executable).parent
TEACHER_ENV = {
    "MAX_UPDATE": "3",
    "MAX_EPOCH": "1",
    "ENCODER_LAYERS": "1",
    "DECODER_LAYERS": "1",
    "EMBED_DIM": "32",
    "FFN_DIM": "64",
    "HEADS": "2",
    "MAX_TOKENS": "1000",
    "THREADS": "1",
    "NUM_WORKERS": "0",
    "WARMUP_UPDATES": "1",
}
TINY_TRAIN = (
    *CPU_TRAINING,
    "--max-update",
    "2",
    "--no-progress-bar",
    "--disable-validation",
    "--no-epoch-checkpoints",
    "--user-dir",
    str(REPO / "fairseq_vqvae"),
)


def sh(*args, env=None, timeout=240, cwd=None):
    """Run a command; the CompletedProcess gets a ``log`` attribute for assertion messages."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(a) for a in args],
        check=False,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
    )
    result.elapsed = time.perf_counter() - start
    result.log = f"$ {' '.join(map(str, args))}\n--- exit {result.returncode} after {result.elapsed:.1f}s\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
    return result


def ok(result):
    assert result.returncode == 0, result.log
    return result


def lines(path: Path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Starts every command as soon as its input exists; values are futures of results."""
    if not HAVE_MULTI30K:
        pytest.skip(f"Multi30k raw files not found in {MULTI30K}")
    root = tmp_path_factory.mktemp("pipelines")
    src = root / "multi30k_slice"
    src.mkdir()
    for name, count in SLICES.items():
        for lang in ("en", "de"):
            with gzip.open(MULTI30K / f"{name}.{lang}.gz", "rt", encoding="utf-8") as f:
                head = [next(f) for _ in range(count)]
            with gzip.open(src / f"{name}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(head)
    d = SimpleNamespace(
        root=root,
        src=src,
        data=root / "data",
        teacher=root / "teacher",
        distill=root / "distill",
        vq=root / "vq",
        nat=root / "nat",
        warm=root / "warm",
        wmt=root / "wmt",
        bench=root / "bench",
    )
    pool = ThreadPoolExecutor(max_workers=4)
    jobs = {}
    started = time.perf_counter()
    jobs["prepare"] = ok(
        sh(
            "bash",
            SCRIPTS / "prepare_multi30k.sh",
            "--src-dir",
            src,
            "--out",
            d.data,
            "--bpe-merges",
            "200",
        )
    )
    databin = d.data / "data-bin"
    if HAVE_WMT:
        jobs["wmt"] = pool.submit(
            sh,
            "bash",
            SCRIPTS / "prepare_wmt14_en_de.sh",
            "--local",
            WMT_SAMPLE,
            "--limit",
            "200",
            "--bpe-merges",
            "200",
            "--workers",
            "1",
            "--out",
            d.wmt,
        )

    def teacher_then_distill():
        train = sh(
            "bash", SCRIPTS / "train_teacher.sh", databin, d.teacher, env=TEACHER_ENV
        )
        jobs["distill"] = pool.submit(
            sh,
            "bash",
            SCRIPTS / "distill.sh",
            "--data",
            databin,
            "--checkpoint",
            d.teacher / "checkpoint_last.pt",
            "--out",
            d.distill,
            "--num-shards",
            "2",
            "--devices",
            "cpu,cpu",
            "--threads",
            "1",
            "--max-tokens",
            "1000",
            "--generate-args",
            "--max-len-b 20",
        )
        jobs["warm"] = (
            pool.submit(  # a student warm-started from that teacher (--init-from-ar)
                sh,
                BIN / "fairseq-train",
                databin,
                "--task",
                "translation_vqvae",
                "--arch",
                "vqvae_nat_tiny",
                "--criterion",
                "vqvae_em",
                "--share-all-embeddings",
                "--encoder-embed-dim",
                "32",
                "--encoder-ffn-embed-dim",
                "64",
                "--decoder-ffn-embed-dim",
                "64",
                "--encoder-attention-heads",
                "2",
                "--encoder-layers",
                "1",
                "--decoder-layers",
                "1",
                "--post-norm",
                "--init-from-ar",
                d.teacher / "checkpoint_last.pt",
                "--save-dir",
                d.warm,
                *TINY_TRAIN,
            )
        )
        return train

    jobs["teacher"] = pool.submit(teacher_then_distill)
    jobs["vq"] = pool.submit(
        sh,
        BIN / "fairseq-train",
        databin,
        "--task",
        "translation_vqvae",
        "--arch",
        "vqvae_nat_tiny",
        "--criterion",
        "vqvae_em",
        "--bottleneck",
        "hard_em",
        "--share-all-embeddings",
        "--save-dir",
        d.vq,
        *TINY_TRAIN,
    )
    jobs["nat"] = pool.submit(
        sh,
        BIN / "fairseq-train",
        databin,
        "--task",
        "translation_lev",
        "--criterion",
        "nat_loss",
        "--arch",
        "nonautoregressive_transformer",
        "--noise",
        "full_mask",
        "--share-all-embeddings",
        *transformer_flags(dim=32, ffn=32),
        "--pred-length-offset",
        "--length-loss-factor",
        "0.1",
        "--save-dir",
        d.nat,
        *TINY_TRAIN,
    )

    def benchmark():
        for name in ("teacher", "vq", "nat"):
            jobs[name].result()
        return sh(
            sys.executable,
            SCRIPTS / "benchmark.py",
            "--data",
            databin,
            "--ref-raw",
            d.data / "raw" / "test.de",
            "--ref-tok",
            d.data / "tok" / "test.de",
            "--threads",
            "1",
            "--warmup",
            "2",
            "--throughput-max-tokens",
            "1000",
            "--throughput-passes",
            "2",
            "--profile-sentences",
            "3",
            "--model",
            f"AR beam 4=translation:{d.teacher / 'checkpoint_last.pt'}:beam=4,max_len_b=20",
            "--model",
            f"AR greedy=translation:{d.teacher / 'checkpoint_last.pt'}:beam=1,max_len_b=20",
            "--model",
            f"NAT one pass + distill=translation_lev:{d.nat / 'checkpoint_last.pt'}",
            "--model",
            f"Hard EM n_c=3=translation_vqvae:{d.vq / 'checkpoint_last.pt'}",
            "--model",
            f"Hard EM n_c=3=translation_vqvae:{d.vq / 'checkpoint_last.pt'}:gen_latent_beam=1",
            "--model",
            f"Hard EM, 4 candidates, teacher rescoring=translation_vqvae:{d.vq / 'checkpoint_last.pt'}:"
            f"gen_latent_beam=2,gen_latent_samples=2,gen_rescore=teacher,teacher={d.teacher / 'checkpoint_last.pt'}",
            "--model",
            f"Soft EM m=10 n_c=3 + distill=translation_vqvae:{root / 'never_trained' / 'checkpoint_best.pt'}",
            "--out-dir",
            d.bench,
            "--save-hyps",
            d.bench / "hyps",
            "--meta",
            "note=test",
            timeout=480,
        )

    jobs["benchmark"] = pool.submit(benchmark)
    yield SimpleNamespace(dirs=d, jobs=jobs, started=started)
    pool.shutdown(wait=True)


def result_of(pipeline, name):
    job = pipeline.jobs[name]
    if name in ("distill", "warm"):
        pipeline.jobs["teacher"].result()
        job = pipeline.jobs[name]
    return ok(job.result() if hasattr(job, "result") else job)


# ---- prepare_multi30k.sh ----------------------------------------------------------------------


@needs_multi30k
def test_prepare_multi30k_outputs(pipeline):
    d = pipeline.dirs.data
    for split, count in (("train", 200), ("valid", 20), ("test", 20)):
        for stage in ("raw", "tok", "bpe"):
            for lang in ("en", "de"):
                assert len(lines(d / stage / f"{split}.{lang}")) == count, (
                    stage,
                    split,
                    lang,
                )
    with gzip.open(MULTI30K / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        raw_refs = [next(f).rstrip("\n") for _ in range(20)]
    assert (
        lines(d / "raw" / "test.de") == raw_refs
    )  # the sacreBLEU references are the raw text
    tok = lines(d / "tok" / "test.de")
    assert "saftig @-@ grünes" in tok[1]  # aggressive dash splitting (-a)
    assert not any(
        "&quot;" in line or "&apos;" in line or "&amp;" in line
        for line in tok + lines(d / "tok" / "train.en")
    )
    assert any("@@ " in line for line in lines(d / "bpe" / "train.de"))
    bin_dir = d / "data-bin"
    assert (bin_dir / "dict.en.txt").read_text() == (
        bin_dir / "dict.de.txt"
    ).read_text()  # joined dictionary
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            assert (bin_dir / f"{split}.en-de.{lang}.bin").is_file()


@needs_multi30k
def test_prepare_multi30k_is_resumable_and_guards_settings(pipeline):
    args = (
        "bash",
        SCRIPTS / "prepare_multi30k.sh",
        "--src-dir",
        pipeline.dirs.src,
        "--out",
        pipeline.dirs.data,
    )
    again = ok(sh(*args, "--bpe-merges", "200"))
    assert again.stderr.count("skipping") == 4, again.log
    other = sh(*args, "--bpe-merges", "300")
    assert (
        other.returncode != 0
        and "merges=200" in other.stderr
        and "--force" in other.stderr
    ), other.log


def test_prepare_multi30k_input_errors(tmp_path):
    missing = sh(
        "bash",
        SCRIPTS / "prepare_multi30k.sh",
        "--src-dir",
        tmp_path / "nowhere",
        "--out",
        tmp_path / "o1",
    )
    assert (
        missing.returncode != 0
        and "not found" in missing.stderr
        and "--download" in missing.stderr
    ), missing.log
    (tmp_path / "partial").mkdir()
    partial = sh(
        "bash",
        SCRIPTS / "prepare_multi30k.sh",
        "--src-dir",
        tmp_path / "partial",
        "--out",
        tmp_path / "o2",
    )
    assert (
        partial.returncode != 0
        and "missing" in partial.stderr
        and "train.en.gz" in partial.stderr
    ), partial.log
    bad = sh("bash", SCRIPTS / "prepare_multi30k.sh", "--bpe-merges", "many")
    assert bad.returncode != 0 and "--bpe-merges" in bad.stderr, bad.log
    usage = ok(sh("bash", SCRIPTS / "prepare_multi30k.sh", "--help"))
    assert "Usage" in usage.stderr


# ---- prepare_wmt14_en_de.sh --local -----------------------------------------------------------


@needs_multi30k
@needs_wmt
def test_prepare_wmt14_local(pipeline):
    result_of(pipeline, "wmt")
    d = pipeline.dirs.wmt
    assert (
        len(lines(d / "raw" / "test.de")) == 200
        and len(lines(d / "bpe" / "test.de")) == 200
    )  # test not filtered
    assert lines(d / "raw" / "test.de") == lines(WMT_SAMPLE / "newstest2014.de")[:200]
    kept = len(lines(d / "bpe" / "train.clean.en"))
    assert 0 < kept <= 200 and kept == len(lines(d / "bpe" / "train.clean.de"))
    train_tok = lines(d / "tok" / "train.en")
    assert not any(
        "&apos;" in line or "&quot;" in line for line in train_tok
    )  # unescaped
    assert "Parliament 's legislative" in train_tok[0]  # not re-tokenized into "' s"
    assert any(" @-@ " in line for line in train_tok)  # -a dash splits added
    for src, ref in zip(
        lines(d / "bpe" / "train.clean.en"), lines(d / "bpe" / "train.clean.de")
    ):
        ns, nt = len(src.split()), len(ref.split())
        assert 1 <= ns <= 250 and 1 <= nt <= 250 and ns / nt <= 1.5 and nt / ns <= 1.5
    assert (d / "data-bin" / "train.en-de.en.bin").is_file() and (
        d / "data-bin" / "test.en-de.de.idx"
    ).is_file()


def test_prepare_wmt14_local_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = sh(
        "bash",
        SCRIPTS / "prepare_wmt14_en_de.sh",
        "--local",
        tmp_path / "empty",
        "--out",
        tmp_path / "o",
    )
    assert result.returncode != 0 and "train10k.tok" in result.stderr, result.log


# ---- train_teacher.sh ------------------------------------------------------------------------


@needs_multi30k
def test_train_teacher(pipeline):
    train = result_of(pipeline, "teacher")
    d = pipeline.dirs.teacher
    assert (d / "checkpoint_last.pt").is_file() and (d / "train.done").is_file(), (
        train.log
    )
    assert "num_updates 3" in (d / "train.log").read_text()
    assert "--encoder-embed-dim 32" in (d / "command.txt").read_text()
    again = ok(
        sh(
            "bash",
            SCRIPTS / "train_teacher.sh",
            pipeline.dirs.data / "data-bin",
            d,
            env=TEACHER_ENV,
        )
    )
    assert "already trained" in again.stderr, again.log


@needs_multi30k
def test_student_warm_started_from_the_teacher(pipeline):
    run = result_of(pipeline, "warm")
    assert (
        "--init-from-ar: copied" in run.stdout + run.stderr
        and "encoder with 1 layers" in run.stdout + run.stderr
    ), run.log
    assert (pipeline.dirs.warm / "checkpoint_last.pt").is_file(), run.log


def test_train_teacher_errors(tmp_path):
    result = sh(
        "bash", SCRIPTS / "train_teacher.sh", tmp_path / "no-data", tmp_path / "ckpt"
    )
    assert (
        result.returncode != 0
        and "not found" in result.stderr
        and "prepare_multi30k" in result.stderr
    ), result.log
    result = sh("bash", SCRIPTS / "train_teacher.sh", tmp_path)
    assert result.returncode != 0 and "Usage" in result.stderr, result.log


# ---- distill.sh ------------------------------------------------------------------------------


@needs_multi30k
def test_distill_counts_order_and_resume(pipeline):
    first = result_of(pipeline, "distill")
    d, data = pipeline.dirs.distill, pipeline.dirs.data
    shard_sizes = [len(lines(d / "shards" / f"shard-{i}-of-2.tsv")) for i in range(2)]
    assert sum(shard_sizes) == 200 and min(shard_sizes) > 0, (shard_sizes, first.log)
    assert lines(d / "text" / "train.en") == lines(
        data / "bpe" / "train.en"
    )  # original order, same BPE source
    hyps = lines(d / "text" / "train.de")
    assert len(hyps) == 200
    merged = [line.split("\t") for line in lines(d / "text" / "merged.tsv")]
    assert [int(row[0]) for row in merged] == list(range(200)) and [
        row[2] for row in merged
    ] == hyps
    assert (d / "data-bin" / "dict.de.txt").read_text() == (
        data / "data-bin" / "dict.de.txt"
    ).read_text()
    for name in ("valid.en-de.de.bin", "test.en-de.en.idx"):
        assert (d / "data-bin" / name).read_bytes() == (
            data / "data-bin" / name
        ).read_bytes()
    count = int.from_bytes(
        (d / "data-bin" / "train.en-de.de.idx").read_bytes()[18:26], "little"
    )
    assert count == 200

    args = (
        "bash",
        SCRIPTS / "distill.sh",
        "--data",
        data / "data-bin",
        "--checkpoint",
        pipeline.dirs.teacher / "checkpoint_last.pt",
        "--out",
        d,
        "--num-shards",
        "2",
        "--devices",
        "cpu",
        "--threads",
        "1",
        "--max-tokens",
        "1000",
        "--generate-args",
        "--max-len-b 20",
    )
    again = ok(sh(*args))
    assert "nothing to do" in again.stderr and "translating on" not in again.stderr, (
        again.log
    )

    # An interrupted run: shard 1 lost, the merge/binarization never happened.
    shutil.rmtree(d / "data-bin")
    for path in (
        d / ".done",
        d / "text" / "train.en",
        d / "text" / "train.de",
        d / "shards" / "shard-1-of-2.tsv",
    ):
        path.unlink()
    resumed = ok(sh(*args))
    assert (
        "shard 0/2: already translated" in resumed.stderr
        and "shard 1/2: translating" in resumed.stderr
    ), resumed.log
    assert (
        lines(d / "text" / "train.de") == hyps
    )  # deterministic beam search: the same result
    assert (d / ".done").is_file()

    changed = sh(*args[:-2], "--generate-args", "--max-len-b 30")
    assert changed.returncode != 0 and "different settings" in changed.stderr, (
        changed.log
    )


def test_distill_input_errors(tmp_path):
    result = sh(
        "bash",
        SCRIPTS / "distill.sh",
        "--data",
        tmp_path,
        "--checkpoint",
        tmp_path / "teacher.pt",
        "--out",
        tmp_path / "o",
    )
    assert (
        result.returncode != 0
        and "teacher checkpoint" in result.stderr
        and "train_teacher.sh" in result.stderr
    ), result.log
    result = sh("bash", SCRIPTS / "distill.sh", "--data", tmp_path)
    assert result.returncode != 0 and "required" in result.stderr, result.log


@needs_multi30k
def test_distill_detects_a_count_mismatch(pipeline, tmp_path):
    """A teacher data-bin whose train set is bigger than what was translated: a clear error."""
    result_of(pipeline, "distill")
    out = tmp_path / "distill"
    shutil.copytree(pipeline.dirs.distill, out, symlinks=True)
    shutil.rmtree(out / "data-bin")
    for path in (out / ".done", out / "text" / "train.en", out / "text" / "train.de"):
        path.unlink()
    tsv = out / "shards" / "shard-1-of-2.tsv"
    tsv.write_text(
        "\n".join(lines(tsv)[:-1]) + "\n", encoding="utf-8"
    )  # one sentence lost
    result = sh(
        "bash",
        SCRIPTS / "distill.sh",
        "--data",
        pipeline.dirs.data / "data-bin",
        "--checkpoint",
        pipeline.dirs.teacher / "checkpoint_last.pt",
        "--out",
        out,
        "--num-shards",
        "2",
        "--devices",
        "cpu",
        "--threads",
        "1",
        "--max-tokens",
        "1000",
        "--generate-args",
        "--max-len-b 20",
    )
    assert result.returncode != 0, result.log
    assert (
        "was not translated" in result.stderr
        and "does not match the original training set (200" in result.stderr
    ), result.log


# ---- benchmark.py ----------------------------------------------------------------------------


@needs_multi30k
def test_benchmark_outputs(pipeline):
    run = result_of(pipeline, "benchmark")
    bench = pipeline.dirs.bench
    report = json.loads((bench / "benchmark.json").read_text())
    md = (bench / "benchmark.md").read_text()
    assert (bench / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    models = report["models"]
    assert [m["status"] for m in models] == ["ok"] * 6 + ["missing"], run.log
    for m in models[:6]:
        assert m["sentences_translated"] == 20 and m["latency_ms"]["sentences"] == 20
        tp = m["throughput"]
        assert tp["passes"] == 2 and (
            tp["sentences_per_s_min"]
            <= tp["sentences_per_s"]
            <= tp["sentences_per_s_max"]
        )
        assert (
            m["throughput"]["sentences"] == 20
            and m["params"] > 0
            and m["meta"] == {"note": "test"}
        )
        assert 0 <= m["bleu"] <= 100 and 0 <= m["bleu_tok"] <= 100
        assert m["run"]["threads"] == 1 and m["run"]["hardware"]["torch_threads"] == 1
        assert len(lines(Path(m["hypotheses"]))) == 20
    from fairseq_vqvae.generator import STAGES

    for m in models[:6]:  # the batch-1 profile: fairseq's halves, or vqvae_nat's stages
        prof = m["profile"]
        expected = (
            {"encoder", "decoder"}
            if m["task"] != "translation_vqvae"
            else set(STAGES)  # every stage the generator declares is measured
        )
        assert prof["sentences"] == 3 and set(prof["stages_ms"]) == expected, prof
        assert all(ms > 0 for ms in prof["stages_ms"].values()), prof
        assert sum(prof["stages_ms"].values()) <= prof["profiled_ms_per_sentence"]
    assert "Batch-1 profile" in md and "| latent_predictor |" in md
    assert models[0]["generation"]["beam"] == 4 and models[1]["generation"]["beam"] == 1
    assert models[2]["generation"]["iter_decode_max_iter"] == 0
    bench_info = report["benchmark"]
    assert bench_info["test_set"]["sentences"] == 20 and bench_info["threads"] == 1
    assert bench_info["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert "tok:none" in bench_info["bleu_tok_signature"]
    assert bench_info["commit"]["commit"] and bench_info["hardware"]["platform"]
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == [
        "AR beam 4",
        "AR greedy",
        "NAT one pass + distill",
        "Hard EM n_c=3",
        "Hard EM, 4 candidates, teacher rescoring",
        "Soft EM m=10 n_c=3 + distill",
    ]
    rescored = models[5]
    assert (
        rescored["args"]["gen_rescore"] == "teacher"
        and rescored["args"]["gen_latent_samples"] == 2
    )
    assert (
        rescored["params"] == models[3]["params"]
    )  # the student's own parameters, not the teacher's
    assert (
        rows["Hard EM n_c=3"]["measured"] == 2
        and len(rows["Hard EM n_c=3"]["bleu_values"]) == 2
    )
    assert (
        rows["AR beam 4"]["speedup_vs_ar_beam"] == 1.0
        and "speedup_vs_ar_greedy" in rows["Hard EM n_c=3"]
    )
    assert (
        rows["Soft EM m=10 n_c=3 + distill"]["measured"] == 0
        and rows["Soft EM m=10 n_c=3 + distill"]["missing"]
    )
    assert (
        "| Hard EM n_c=3 | 2 |" in md
        and " ± " in md
        and "missing" in md
        and "nrefs:1" in md
    )


@needs_multi30k
def test_benchmark_merges_earlier_results(pipeline, tmp_path, capsys):
    result_of(pipeline, "benchmark")
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))
    earlier = pipeline.dirs.bench / "benchmark.json"
    status = benchmark.main(
        [
            "--data",
            str(pipeline.dirs.data / "data-bin"),
            "--model",
            f"AR greedy=translation:{tmp_path / 'gone.pt'}",
            "--merge-json",
            str(earlier),
            "--md",
            str(tmp_path / "t.md"),
            "--json",
            str(tmp_path / "t.json"),
        ]
    )
    assert status == 0
    report = json.loads((tmp_path / "t.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert (
        names.count("AR greedy") == 2
    )  # the missing one, and the earlier measurement of the other checkpoint
    merged = [m for m in report["models"] if "merged_from" in m]
    assert len(merged) == 6 and all(
        m["merged_from"] == os.path.relpath(earlier, REPO) for m in merged
    )  # relative to the project root, as every path a result file records
    assert "†" in (tmp_path / "t.md").read_text()


def test_benchmark_profiles_large_batches(pipeline, tmp_path):
    """--profile-max-tokens: the profile covers whole batches of that many tokens."""
    result_of(pipeline, "benchmark")
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))
    d = pipeline.dirs
    status = benchmark.main(
        [
            "--data",
            str(d.data / "data-bin"),
            "--throughput-max-tokens",
            "0",
            "--profile-sentences",
            "5",
            "--profile-max-tokens",
            "120",
            "--model",
            f"AR greedy=translation:{d.teacher / 'checkpoint_last.pt'}:beam=1,max_len_b=20",
            "--model",
            f"Hard EM=translation_vqvae:{d.vq / 'checkpoint_last.pt'}",
            "--json",
            str(tmp_path / "t.json"),
            "--md",
            str(tmp_path / "t.md"),
        ]
    )
    assert status == 0
    models = json.loads((tmp_path / "t.json").read_text())["models"]
    for m in models:
        prof = m["profile"]
        # whole batches of up to 120 tokens (several sentences each) until 5 are covered
        assert prof["batch"] == "max-tokens 120" and 5 <= prof["sentences"] < 20, prof
        assert all(ms > 0 for ms in prof["stages_ms"].values()), prof
    assert models[0]["profile"]["sentences"] == models[1]["profile"]["sentences"]
    assert (
        "Profile at max-tokens 120 (torch.profiler" in (tmp_path / "t.md").read_text()
    )


def test_benchmark_never_replaces_results_with_fewer_measurements(pipeline, tmp_path):
    """A rerun on a machine without the checkpoints used to rewrite the committed table with
    merged copies only (its commit, date and wall time lost)."""
    import shutil

    result_of(pipeline, "benchmark")
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))
    table = tmp_path / "benchmark.json"
    shutil.copy(pipeline.dirs.bench / "benchmark.json", table)
    before = table.read_text()
    argv = [
        "--data",
        str(pipeline.dirs.data / "data-bin"),
        "--model",
        f"AR greedy=translation:{tmp_path / 'gone.pt'}",
        "--merge-json",
        str(table),
        "--json",
        str(table),
    ]
    assert benchmark.main(argv) == 1
    assert table.read_text() == before
    redirected = json.loads((tmp_path / "benchmark.new.json").read_text())
    assert all(
        "merged_from" in m or m.get("status") == "missing" for m in redirected["models"]
    )
    assert benchmark.main([*argv, "--replace-results"]) == 0
    assert table.read_text() != before


def test_benchmark_merge_fills_missing_rows_in_place(tmp_path):
    """Earlier results replace this run's missing records where they stand (also for run.sh's
    CKPT.unfinished names); the first file with a checkpoint wins; the test set is kept."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))

    def ok(name, checkpoint, bleu):
        return {
            "name": name,
            "task": "t",
            "checkpoint": checkpoint,
            "args": {},
            "status": "ok",
            "bleu": bleu,
            "bleu_tok": bleu,
            "latency_ms": {"median": 10.0, "mean": 11.0},
        }

    first, later = tmp_path / "00_final.json", tmp_path / "row.json"
    first.write_text(
        json.dumps(
            {
                "benchmark": {"test_set": {"sentences": 1000}},
                "models": [ok("AR greedy", "t.pt", 33.6), ok("Soft EM", "s1.pt", 15.0)],
            }
        )
    )
    later.write_text(
        json.dumps(
            {
                "benchmark": {"test_set": {"sentences": 7}},
                "models": [
                    ok("AR greedy", "t.pt", 30.0),
                    ok("Hard EM", "h1.pt", 11.9),
                    {"name": "Hard EM", "checkpoint": "h2.pt", "status": "missing"},
                ],
            }
        )
    )
    now = [
        {"name": "AR greedy", "checkpoint": "t.pt", "args": {}, "status": "missing"},
        {
            "name": "Hard EM",
            "checkpoint": "h1.pt.unfinished",
            "args": {},
            "status": "missing",
        },
        ok("Soft EM", "s2.pt", 16.0),
        {
            "name": "VQ-VAE",
            "checkpoint": "v1.pt.unfinished",
            "args": {},
            "status": "missing",
        },
    ]
    records, test_set = benchmark.merge_earlier(now, [tmp_path])
    assert [(r["name"], r["checkpoint"], r.get("bleu")) for r in records] == [
        (
            "AR greedy",
            "t.pt",
            33.6,
        ),  # the first file wins, in the missing record's place
        ("Hard EM", "h1.pt", 11.9),  # h1.pt.unfinished is h1.pt
        ("Soft EM", "s2.pt", 16.0),
        ("Soft EM", "s1.pt", 15.0),  # joins its row
        ("VQ-VAE", "v1.pt.unfinished", None),  # still missing
    ]
    assert records[0]["merged_from"] == str(first) and test_set == {"sentences": 1000}
    rows = benchmark.aggregate(records, "AR beam 4", "AR greedy")
    assert [(r["name"], r["checkpoints"], r["measured"]) for r in rows] == [
        ("AR greedy", 1, 1),
        ("Hard EM", 1, 1),
        ("Soft EM", 2, 2),
        ("VQ-VAE", 1, 0),
    ]


def test_benchmark_plot_numbers_rows_and_marks_kinds(tmp_path):
    """The plot numbers each row as in the table (legend beside the axes) and tells AR rows,
    other baselines, this plugin's models and oracle diagnostics apart."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench import report
    finally:
        sys.path.remove(str(SCRIPTS))
    import matplotlib.pyplot as plt

    def ok(name, task, bleu, ms, args=None):
        return {
            "name": name,
            "task": task,
            "checkpoint": f"{name}.pt",
            "args": args or {},
            "status": "ok",
            "bleu": bleu,
            "bleu_tok": bleu,
            "latency_ms": {"median": ms, "mean": ms},
        }

    records = [
        ok("AR beam 4", "translation", 35.0, 100.0),
        ok("AR greedy", "translation", 33.0, 80.0),
        ok("NAT", "translation_lev", 8.0, 16.0),
        ok("Soft EM", "translation_vqvae", 19.0, 20.0),
        {
            "name": "Hard EM",
            "task": "translation_vqvae",
            "checkpoint": "h.pt",
            "args": {},
            "status": "missing",
        },
        ok(
            "Soft EM, oracle",
            "translation_vqvae",
            21.0,
            20.0,
            {"gen_oracle_latents": True},
        ),
    ]
    rows = report.aggregate(records, "AR beam 4", "AR greedy")
    bench = {
        "ar_beam_row": "AR beam 4",
        "ar_greedy_row": "AR greedy",
        "threads": 1,
        "hardware": {"device": "cpu"},
        "test_set": {"sentences": 3},
    }
    styles = [
        report.plot_style(row, bench) for row in rows if "bleu" in row
    ]  # the missing row is not drawn
    assert [s["fmt"] for s in styles] == ["s", "s", "^", "o", "o"]
    assert "markerfacecolor" not in styles[3] and styles[4]["markerfacecolor"] == "none"
    saved = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, path, **kwargs):
        saved["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        saved["numbers"] = sorted(t.get_text() for t in fig.axes[0].texts)
        return real_savefig(fig, path, **kwargs)

    plt.Figure.savefig = spy
    try:
        report.plot({"benchmark": bench, "rows": rows}, tmp_path / "p.png")
    finally:
        plt.Figure.savefig = real_savefig
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    # the missing row keeps its number (5) in the table, so it is skipped, not renumbered
    assert saved["labels"] == [
        "1. AR beam 4",
        "2. AR greedy",
        "3. NAT",
        "4. Soft EM",
        "6. Soft EM, oracle",
    ]
    assert saved["numbers"] == ["1", "2", "3", "4", "6"]


def test_benchmark_sets_task_options_the_checkpoint_never_saved():
    """fairseq drops arg_overrides for keys a checkpoint lacks (a task option added after it was
    trained): the benchmark sets them on the task itself, and refuses keys nobody knows."""
    from omegaconf import OmegaConf

    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench import specs
    finally:
        sys.path.remove(str(SCRIPTS))
    task = SimpleNamespace(
        cfg=OmegaConf.create({"gen_eos": "first", "gen_dedup": False})
    )
    OmegaConf.set_struct(task.cfg, True)
    specs.apply_task_options(
        task, {"gen_eos": "last-latent", "gen_dedup": True, "dropout": 0.3, "data": "d"}
    )
    assert task.cfg.gen_eos == "last-latent" and task.cfg.gen_dedup is True


def test_benchmark_refuses_a_misspelt_option_before_fairseq_saves_it(tmp_path):
    """fairseq copies every override into a legacy (argparse) checkpoint configuration, so a
    typo used to pass the check after loading and run with the default (status ok)."""
    import argparse

    import torch

    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench import specs
    finally:
        sys.path.remove(str(SCRIPTS))
    import fairseq_vqvae.model  # noqa: F401  (registers translation_vqvae)

    args = argparse.Namespace(
        _name="vqvae_nat",
        arch="vqvae_nat_tiny",
        task="translation_vqvae",
        data="d",
        dropout=0.1,
        criterion="vqvae_em",
        optimizer="adam",
        lr_scheduler="fixed",
        seed=1,
    )
    checkpoint = tmp_path / "checkpoint.pt"
    history = [
        {
            "criterion_name": "VQVAEEMLoss",
            "optimizer_name": "Adam",
            "num_updates": 0,
            "lr_scheduler_state": {"best": None},
        }
    ]
    extra = {"train_iterator": {"epoch": 1}, "val_loss": None}
    torch.save(
        {"args": args, "model": {}, "optimizer_history": history, "extra_state": extra},
        checkpoint,
    )
    specs.check_known_options(
        checkpoint,
        "translation_vqvae",
        {"gen_eos": "length", "dropout": 0.2, "data": "x"},
    )
    with pytest.raises(ValueError, match="unknown option gen_eoss='first'"):
        specs.check_known_options(
            checkpoint, "translation_vqvae", {"gen_eoss": "first"}
        )


def test_benchmark_spec_errors(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))
    spec = benchmark.parse_model_spec(
        "Soft EM m=10 n_c=3=translation_vqvae:ckpt/x.pt:gen_latent_beam=2,data=/d"
    )
    assert spec == {
        "name": "Soft EM m=10 n_c=3",
        "task": "translation_vqvae",
        "checkpoint": "ckpt/x.pt",
        "args": {"gen_latent_beam": 2, "data": "/d"},
    }
    for bad, message in (
        ("no-task-or-checkpoint", "no ':'"),
        ("=translation:x.pt", "NAME=TASK"),
        ("AR=translation:", "empty checkpoint"),
        ("AR=translation:x.pt:beam", "not KEY=VALUE"),
    ):
        with pytest.raises(benchmark.SpecError, match=message):
            benchmark.parse_model_spec(bad)
    with pytest.raises(SystemExit):
        benchmark.main(
            ["--data", str(tmp_path), "--model", "oops", "--out-dir", str(tmp_path)]
        )
    assert "NAME=TASK:CHECKPOINT" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert (
        benchmark.main(
            [
                "--data",
                str(tmp_path),
                "--model",
                "a=translation:runs/x.pt",
                "--json",
                "r.json",
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "r.json").read_text())["models"][0]
    assert record["status"] == "missing" and record["checkpoint"] == os.path.relpath(
        tmp_path / "runs" / "x.pt", REPO
    )  # taken from the current folder, recorded relative to the project root
    with pytest.raises(SystemExit):
        benchmark.main(
            [
                "--data",
                str(tmp_path / "missing"),
                "--model",
                "a=translation:x.pt",
                "--out-dir",
                str(tmp_path),
            ]
        )
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "models.json").write_text('[{"name": "x", "task": "translation"}]')
    with pytest.raises(SystemExit):
        benchmark.main(
            [
                "--data",
                str(tmp_path),
                "--models-json",
                str(tmp_path / "models.json"),
                "--out-dir",
                str(tmp_path),
            ]
        )
    assert "checkpoint" in capsys.readouterr().err


# ---- examples/multi30k/run.sh ----------------------------------------------------------------


def test_multi30k_study_plan(tmp_path):
    """--dry-run: every stage and every student run is planned, nothing is executed."""
    result = ok(
        sh(
            "bash",
            REPO / "examples" / "multi30k" / "run.sh",
            "--dry-run",
            env={
                "WORK": str(tmp_path / "work"),
                "RESULTS": str(tmp_path / "results"),
                "STUDENT_AUTOCAST": "1",
            },
        )
    )
    err = result.stderr
    for stage in (
        "stage 1/6 prepare",
        "stage 2/6 teacher",
        "stage 3/6 distill",
        "stage 4/6",
        "stage 6/6 benchmark",
    ):
        assert stage in err, result.log
    assert (
        err.count("stage 5/6 student") == 12
    )  # vqvae x1 x2 data, hard/soft EM x2 seeds x2 data, n_c=4, AR init
    assert "nonautoregressive_transformer" in err and "--src-embedding-copy" not in err
    assert (
        "--compress-steps 4" in err
        and "--num-samples 5" in err
        and "--num-samples 10" in err
    )
    assert err.count("--bf16-autocast") == 12
    # the study's codes start uniform, whatever vqvae_nat_small's default
    assert err.count("--codebook-init uniform") == 12
    assert (
        err.count("--post-norm --init-from-ar") == 1
        and "teacher/checkpoint_best.pt" in err
    )
    assert (
        "soft_em_distill/seed1/checkpoint_best.pt:gen_oracle_latents=True" in err
    )  # the diagnostic row
    assert (
        "soft_em_raw/seed1/checkpoint_best.pt:gen_dedup=True" in err
    )  # a decoding-variant row
    order = [
        line.split("student ")[1].split(":")[0]
        for line in err.splitlines()
        if "stage 5/6 student" in line
    ]
    assert order[:3] == [
        "soft_em_distill seed 1",
        "soft_em_distill_ar_init seed 1",
        "hard_em_distill seed 1",
    ], order
    assert order.index("soft_em_distill seed 2") > order.index(
        "soft_em_distill_nc4 seed 1"
    ), order
    assert not (tmp_path / "work" / "data").exists()
    bad = sh(
        "bash", REPO / "examples" / "multi30k" / "run.sh", "--stages", "teacher,bogus"
    )
    assert bad.returncode != 0 and "unknown stage" in bad.stderr, bad.log
    bad = sh(
        "bash",
        REPO / "examples" / "multi30k" / "run.sh",
        "--dry-run",
        env={"ROWS": "nope"},
    )
    assert bad.returncode != 0 and "unknown row id" in bad.stderr, bad.log
    bad = sh(
        "bash",
        REPO / "examples" / "multi30k" / "run.sh",
        "--dry-run",
        env={"STUDENT_AUTOCAST": "yes"},
    )
    assert "STUDENT_AUTOCAST must be auto, 1 or 0, got 'yes'" in bad.stderr, bad.log


def test_multi30k_train_wall_sums_resumed_segments(tmp_path):
    """A resumed training appends to train.log and fairseq's `wall` restarts: the study's training
    time sums each fairseq-train run's segment, not the hours the machine was down between them."""
    run_sh = (REPO / "examples" / "multi30k" / "run.sh").read_text()
    function = run_sh[run_sh.index("train_wall() {") :]
    function = function[: function.index("\n}\n") + 3]
    log = """2026-12-01 10:00:00 | INFO | fairseq.tasks.text_to_speech | Please install tensorboardX
2026-12-01 10:00:01 | INFO | fairseq_cli.train | {'_name': None, 'common': {}}
2026-12-01 10:05:00 | INFO | train | epoch 001 | loss 9.0 | wall 299
2026-12-01 10:10:01 | INFO | fairseq.checkpoint_utils | Saved checkpoint checkpoint_last.pt
/site-packages/hydra/compose.py:56: UserWarning: (an untimed line)
2026-12-01 13:00:00 | INFO | fairseq.tasks.text_to_speech | Please install tensorboardX
2026-12-01 13:00:02 | INFO | fairseq_cli.train | {'_name': None, 'common': {}}
2026-12-01 13:00:30 | INFO | fairseq.trainer | Loaded checkpoint checkpoint_last.pt (epoch 2 @ 256 updates)
2026-12-01 13:04:02 | INFO | train | epoch 002 | loss 8.0 | wall 0
"""
    (tmp_path / "train.log").write_text(log)
    env = {"PY": sys.executable, "ROOT": str(REPO)}
    result = ok(sh("bash", "-c", function + 'train_wall "$1"', "_", tmp_path, env=env))
    assert result.stdout.strip() == str(600 + 240), result.log
    result = ok(
        sh(
            "bash",
            "-c",
            function + 'train_wall "$1"',
            "_",
            tmp_path / "missing",
            env=env,
        )
    )
    assert result.stdout.strip() == "", result.log


def test_wmt14_recipe_plan(tmp_path):
    result = ok(
        sh(
            "bash",
            REPO / "examples" / "wmt14_en_de" / "run.sh",
            "--dry-run",
            env={"WORK": str(tmp_path / "w")},
        )
    )
    assert (
        "--distributed-world-size" in result.stderr and "legacy_ddp" in result.stderr
    ), result.log


def test_wmt14_and_cifar10_recipes_say_what_is_missing(tmp_path):
    wmt = REPO / "examples" / "wmt14_en_de" / "run.sh"
    env = {"WORK": str(tmp_path / "w"), "CUDA_VISIBLE_DEVICES": ""}
    no_data = sh("bash", wmt, "--stages", "vqvae", env=env)
    assert no_data.returncode != 0, no_data.log
    assert (
        "no training data at" in no_data.stderr and "--stages prepare" in no_data.stderr
    )
    (tmp_path / "w" / "distill" / "data-bin").mkdir(parents=True)
    no_gpu = sh("bash", wmt, "--stages", "vqvae", env=env)  # was: world size is 8 ...
    assert no_gpu.returncode != 0 and "has no CUDA device" in no_gpu.stderr, no_gpu.log
    cifar = REPO / "examples" / "cifar10" / "run.sh"
    flag = sh("bash", cifar, "--stages", "foo")  # was: argument --data: expected one
    assert flag.returncode != 0 and "no options; got '--stages foo'" in flag.stderr
    missing = sh("bash", cifar, tmp_path / "nowhere")
    assert missing.returncode != 0 and "no CIFAR-10 folder" in missing.stderr


def _train_step_speed(databin, *flags):
    """research/train_step_speed.py on vqvae_nat_tiny and the tiny data, 200-token batches."""
    return sh(
        sys.executable,
        RESEARCH / "train_step_speed.py",
        "--max-tokens",
        "200",
        *flags,
        "--",
        databin,
        "--user-dir",
        REPO / "fairseq_vqvae",
        "--task",
        "translation_vqvae",
        "--arch",
        "vqvae_nat_tiny",
        "--criterion",
        "vqvae_em",
        "--share-all-embeddings",
        "--cpu",
    )


def test_train_step_speed_compares_fp32_and_autocast(tiny_databin):
    result = ok(_train_step_speed(tiny_databin, "--batches", "1", "--rounds", "1"))
    records = [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")
    ]
    assert [r.get("bf16_autocast") for r in records[:2]] == [False, True], result.log
    summary = records[-1]
    assert (
        summary["summary"]
        and summary["fp32_s_per_update"] > 0
        and summary["speedup"] > 0
    ), result.log
    bad = sh(sys.executable, RESEARCH / "train_step_speed.py")
    assert bad.returncode != 0 and "give the fairseq-train flags" in bad.stderr, bad.log


def test_train_step_speed_compares_onednn_cache_capacities_in_child_processes(
    tiny_databin,
):
    result = ok(
        _train_step_speed(
            tiny_databin,
            "--batches",
            "2",
            "--rounds",
            "2",
            "--onednn-cache-capacities",
            "0,4096",
        )
    )
    records = [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")
    ]
    rounds = [(r["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], r["round"]) for r in records[:-1]]
    assert rounds == [(0, 0), (0, 1), (4096, 0), (4096, 1)], result.log
    assert all(r["bf16_autocast"] for r in records[:-1]), result.log
    runs = records[-1]["runs"]
    assert [r["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] for r in runs] == [0, 4096], result.log
    assert all(r["first_round_s_per_update"] > 0 for r in runs), result.log
    for flag, message in [
        (["--onednn-cache-capacities", "-1"], "non-negative integers"),
        (["--modes", "fp16"], "--modes: comma-separated fp32 and/or bf16, got 'fp16'"),
    ]:
        bad = _train_step_speed(tiny_databin, *flag)
        assert bad.returncode != 0 and message in bad.stderr, bad.log


def test_optimizer_step_speed_counts_fewer_operations_for_torch_adamw(tiny_databin):
    """fairseq's adam loops over the tensors; torch_adamw's fused step and foreach norm do not."""
    tiny = (
        "--arch",
        "vqvae_nat_tiny",
        "--criterion",
        "vqvae_em",
        "--share-all-embeddings",
    )
    result = ok(
        sh(
            sys.executable,
            RESEARCH / "optimizer_step_speed.py",
            "--repeats",
            "1",
            "--max-tokens",
            "200",
            "--",
            tiny_databin,
            "--user-dir",
            REPO / "fairseq_vqvae",
            "--task",
            "translation_vqvae",
            *tiny,
            "--clip-norm",
            "0.1",
        )  # fmt: skip
    )
    records = [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")
    ]
    model, adam, ours, summary = records
    assert model["parameter_tensors"] > 20 and model["forward_backward_operations"] > 0
    assert (adam["class"], ours["class"]) == ("FairseqAdam", "TorchAdamW"), result.log
    # Several operations per tensor against a handful in all (11 with clipping: 6 without).
    assert adam["operations_per_update"] > 4 * model["parameter_tensors"], result.log
    assert ours["operations_per_update"] <= 16, result.log
    assert summary["torch_adamw_operations"] == ours["operations_per_update"]
    bad = sh(
        sys.executable,
        RESEARCH / "optimizer_step_speed.py",
        "--device",
        "tpu",
        "--",
        "x",
    )
    assert bad.returncode != 0 and "--device is cpu or cuda" in bad.stderr, bad.log


def test_prepare_multi30k_names_a_non_utf8_line_and_redoes_stages_when_sources_change(
    tmp_path,
):
    import gzip

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    lines = {
        "en": [f"a man number {i} rides a red bike ." for i in range(12)],
        "de": [f"ein mann nummer {i} fährt ein rotes fahrrad ." for i in range(12)],
    }

    def write(name, lang, text_lines, extra=b""):
        data = ("\n".join(text_lines) + "\n").encode("utf-8") + extra
        with gzip.open(src / f"{name}.{lang}.gz", "wb") as f:
            f.write(data)

    for name in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            write(name, lang, lines[lang])
    write("train", "de", lines["de"][:-1], extra=b"kaputt \xe9 zeile\n")
    args = ("bash", SCRIPTS / "prepare_multi30k.sh", "--src-dir", src, "--out", out)
    bad = sh(*args, "--bpe-merges", "20")
    assert bad.returncode != 0, bad.log
    assert "train.de.gz: line 12 is not valid UTF-8" in bad.stderr, bad.log
    write("train", "de", lines["de"])  # fixed: the rerun works without --force
    ok(sh(*args, "--bpe-merges", "20"))
    again = ok(sh(*args, "--bpe-merges", "20"))
    assert again.stderr.count("skipping") == 4, again.log
    write("test_2016_flickr", "de", lines["de"][::-1])  # another source: stages redone
    changed = ok(sh(*args, "--bpe-merges", "20"))
    assert "changed since" in changed.stderr and "skipping" not in changed.stderr
    assert (out / "raw" / "test.de").read_text().splitlines() == lines["de"][::-1]


def test_benchmark_registers_a_plugin_imported_before_fairseq(tmp_path):
    """fairseq's import_user_module skips a package already imported; one imported before
    fairseq (``import fairseq_vqvae.generator``) had registered no task, and benchmark.py
    called translation_vqvae unknown."""
    script = (
        "import sys\n"
        "import fairseq_vqvae.generator\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "import benchmark\n"
        f"sys.exit(benchmark.main(['--data', {str(tmp_path)!r}, '--model',"
        f" 'a=translation_vqvae:nothing.pt', '--json', {str(tmp_path / 'r.json')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r.json").read_text())["models"][0]
    assert record["status"] == "missing"
