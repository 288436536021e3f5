"""CTranslate2 rows of scripts/benchmark.py: a fairseq transformer converted once (cached beside
its checkpoint) and decoded by CTranslate2, measured beside fairseq's own rows."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import transformer_flags

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
import benchmark  # noqa: E402
from bench import ct2  # noqa: E402
from bench.engines import open_row  # noqa: E402
from bench.measure import row_dtype  # noqa: E402
from bench.specs import parse_model_spec  # noqa: E402


@pytest.fixture(scope="module")
def teacher(tiny_databin, tmp_path_factory):
    """A 1-layer fairseq transformer trained for 60 updates on the letter data."""
    save = tmp_path_factory.mktemp("ct2_teacher")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "fairseq-train"),
            str(tiny_databin),
            "--task",
            "translation",
            "--arch",
            "transformer",
            *transformer_flags(dim=32, ffn=32),
            "--share-all-embeddings",
            "--optimizer",
            "adam",
            "--lr",
            "3e-3",
            "--max-tokens",
            "1000",
            "--max-update",
            "60",
            "--disable-validation",
            "--no-epoch-checkpoints",
            "--cpu",
            "--num-workers",
            "0",
            "--no-progress-bar",
            "--save-dir",
            str(save),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return save / "checkpoint_last.pt"


def _bench(tiny_databin, out, *models, hyps=None):
    argv = ["--data", str(tiny_databin), "--detok", "none", "--bpe-symbol", "none"]
    argv += ["--throughput-max-tokens", "200", "--throughput-passes", "1"]
    argv += ["--json", str(out)]
    for model in models:
        argv += ["--model", model]
    if hyps:
        argv += ["--save-hyps", str(hyps)]
    return benchmark.main(argv)


def test_ctranslate2_float32_translates_as_fairseq_and_int8_is_measured(
    teacher, tiny_databin, tmp_path
):
    out, hyps = tmp_path / "bench.json", tmp_path / "hyps"
    status = _bench(
        tiny_databin,
        out,
        f"AR greedy=translation:{teacher}:beam=1",
        f"CT2 float32 greedy=ctranslate2:{teacher}:beam=1,compute_type=float32",
        f"AR beam 4=translation:{teacher}",
        f"CT2 float32 beam 4=ctranslate2:{teacher}:compute_type=float32",
        f"CT2 int8 greedy=ctranslate2:{teacher}:beam=1",
        hyps=hyps,
    )
    assert status == 0
    report = json.loads(out.read_text())
    models = {m["name"]: m for m in report["models"]}
    assert all(m["status"] == "ok" for m in models.values())
    for search in ("greedy", "beam_4"):
        name = f"{search}__{teacher.parent.name}.detok.txt"
        fairseq_out = (hyps / f"AR_{name}").read_text().splitlines()
        ct2_out = (hyps / f"CT2_float32_{name}").read_text().splitlines()
        # The same model in another engine's float32 arithmetic: an undertrained model's
        # near-ties may flip a token or two, nothing more.
        same = sum(a == b for a, b in zip(fairseq_out, ct2_out))
        assert len(ct2_out) == len(fairseq_out) == 13 and same >= 11, (search, same)
    int8 = models["CT2 int8 greedy"]
    assert int8["generation"]["compute_type"] == "int8"
    assert int8["latency_ms"]["sentences"] == int8["sentences_translated"] == 13
    assert int8["throughput"]["sentences"] == 13
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["CT2 int8 greedy"]["speedup_vs_ar_greedy"] > 0


def test_the_conversion_is_cached_and_made_again_when_the_checkpoint_changes(
    teacher, tiny_databin, tmp_path
):
    copy = tmp_path / "teacher.pt"
    copy.write_bytes(teacher.read_bytes())
    model = ct2.converted(copy, str(tiny_databin), "src", "tgt")
    assert model == tmp_path / "teacher.pt.ct2" and (model / "model.bin").is_file()
    written = (model / "model.bin").stat().st_mtime_ns
    assert ct2.converted(copy, str(tiny_databin), "src", "tgt") == model
    assert (model / "model.bin").stat().st_mtime_ns == written  # not converted again
    copy.write_bytes(teacher.read_bytes())  # a new checkpoint under the same name
    ct2.converted(copy, str(tiny_databin), "src", "tgt")
    assert json.loads((model / ct2.STAMP).read_text())["mtime_ns"] == (
        copy.stat().st_mtime_ns
    )


def test_a_folder_it_did_not_write_is_never_replaced(teacher, tiny_databin, tmp_path):
    copy = tmp_path / "teacher.pt"
    copy.write_bytes(teacher.read_bytes())
    foreign = tmp_path / "teacher.pt.ct2"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="is not a CTranslate2 conversion this"):
        ct2.converted(copy, str(tiny_databin), "src", "tgt")
    assert (foreign / "mine.txt").read_text() == "a user's file"


def test_unknown_ctranslate2_options_and_non_translation_checkpoints_are_refused():
    spec = parse_model_spec("x=ctranslate2:t.pt:beam=4,compute_typ=int8")
    with pytest.raises(ValueError, match="unknown CTranslate2 option.*compute_typ"):
        ct2._options(spec["args"])
    with pytest.raises(ValueError, match="beam must be an integer >= 1"):
        ct2._options(parse_model_spec("x=ctranslate2:t.pt:beam=0")["args"])
    assert ct2._options({}) == ct2.OPTIONS
    spec = parse_model_spec("x=ctranslate2:missing.pt:data=bin,beam=0")
    row = open_row(spec, SimpleNamespace(data="other"), ct2._options, "translation", "")
    assert row.data == "bin" and row.task is None  # missing: reported, not parsed
    assert row.record["status"] == "missing"


def test_a_fairseq_row_in_half_precision_translates_as_float32(
    teacher, tiny_databin, tmp_path
):
    """``dtype=float16`` / ``bfloat16``: fairseq-generate's --fp16 / --bf16 for a benchmark row
    (model.half() for a GPU; here the CPU runs the same path)."""
    out, hyps = tmp_path / "bench.json", tmp_path / "hyps"
    status = _bench(
        tiny_databin,
        out,
        f"AR greedy=translation:{teacher}:beam=1",
        f"AR greedy fp16=translation:{teacher}:beam=1,dtype=float16",
        f"AR greedy bf16=translation:{teacher}:beam=1,dtype=bfloat16",
        hyps=hyps,
    )
    assert status == 0
    models = {m["name"]: m for m in json.loads(out.read_text())["models"]}
    assert all(m["status"] == "ok" for m in models.values())
    name = f"__{teacher.parent.name}.detok.txt"
    full = (hyps / f"AR_greedy{name}").read_text().splitlines()
    for half in ("fp16", "bf16"):
        lowered = (hyps / f"AR_greedy_{half}{name}").read_text().splitlines()
        same = sum(a == b for a, b in zip(full, lowered))
        assert len(lowered) == 13 and same >= 10, (half, same)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            {"dtype": "float8"},
            "dtype='float8': expected one of float32, float16, bfloat16",
        ),
        ({"dtype": "float16", "gen_int8": True}, "int8 weights run in float32"),
    ],
)
def test_a_wrong_dtype_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        row_dtype(args.pop("dtype"), args)
    assert row_dtype("float32", {"gen_int8": True}) is torch.float32
