"""The ONNX Runtime deployment (fairseq_vqvae/deploy, scripts/export_onnx.py): the exported
graphs translate as the PyTorch generator's default path does, int8 included, without torch or
fairseq at run time; what it cannot export is refused in one line; the benchmark measures it."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_vqvae.deploy import runtime
from fairseq_vqvae.deploy.export import export_model
from fairseq_vqvae.deploy.exportable import check_exportable
from fairseq_vqvae.errors import OptionError

from conftest import (
    TINY_FLAGS,
    build,
    collate,
    exported_student,
    save_checkpoint,
    source_ids,
    train_a_little,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import benchmark  # noqa: E402
import export_onnx  # noqa: E402
from bench import onnx_student  # noqa: E402
from bench.engines import STAMP  # noqa: E402
from bench.specs import parse_model_spec  # noqa: E402

TEST_SENTENCES = 13  # conftest.SPLITS: lengths 1 to 17, so a batch of them is padded


def _trained(databin, *flags):
    torch.manual_seed(0)
    return train_a_little(build(databin, "--share-all-embeddings", *TINY_FLAGS, *flags))


def _pytorch(built, sample, **generation) -> list:
    """The generator's best hypothesis of every sentence of ``sample``, without EOS."""
    args = argparse.Namespace(**{**vars(built.args), **generation})
    generator = built.task.build_generator([built.model], args)
    hypos = generator.generate([built.model], sample)
    return [h[0]["tokens"][:-1].tolist() for h in hypos]


@pytest.fixture(scope="module")
def student(tiny_databin, tmp_path_factory):
    """A length-conditioned student (as the Multi30k lp_combo), its checkpoint, the test
    set's PyTorch translations and its fp32 export."""
    built = _trained(tiny_databin, "--latent-length-condition")
    exported = exported_student(
        built, tmp_path_factory.mktemp("onnx_student"), TEST_SENTENCES
    )
    return {**exported, "expected": _pytorch(built, exported["sample"])}


def test_fp32_gives_the_generators_tokens_at_batch_1_and_batched(student):
    translator = runtime.OnnxTranslator(student["fp32"], threads=1)
    sources, expected = student["sources"], student["expected"]
    assert len({len(s) for s in sources}) > 3  # padding and several latent counts
    assert translator.translate(sources) == expected
    assert [translator.translate([s])[0] for s in sources] == expected
    assert translator.translate([]) == []


def test_other_configurations_give_the_generators_tokens(tiny_databin, tmp_path):
    built = _trained(
        tiny_databin,
        "--post-norm",
        "--latent-length",
        "source",
        "--num-slices",
        "2",
        "--code-dim",
        "8",
    )
    sample = collate(built.task, "test", range(TEST_SENTENCES))
    d = built.task.target_dictionary
    translator = runtime.OnnxTranslator(export_model(built.model, built.task, tmp_path))
    sources = source_ids(sample, d)
    assert translator.translate(sources) == _pytorch(built, sample)
    # No length head: --gen-eos length is refused at export and at run time.
    with pytest.raises(OptionError, match="--gen-eos length needs"):
        check_exportable(built.model, {"gen_eos": "length"})
    with pytest.raises(ValueError, match="eos 'length' needs"):
        runtime.OnnxTranslator(tmp_path, eos="length")


def test_word_codes_give_the_generators_tokens(tiny_databin, tmp_path):
    """--compress-steps 0 (one code per target token) exports: the latent step runs once per
    target position."""
    built = _trained(tiny_databin, "--compress-steps", "0", "--latent-length-condition")
    sample = collate(built.task, "test", range(TEST_SENTENCES))
    translator = runtime.OnnxTranslator(export_model(built.model, built.task, tmp_path))
    sources = source_ids(sample, built.task.target_dictionary)
    assert translator.translate(sources) == _pytorch(built, sample)


@pytest.mark.parametrize(
    "eos, dedup", [("last-latent", True), ("length", False), ("first", True)]
)
def test_the_runtimes_eos_and_dedup_options_follow_the_generators(student, eos, dedup):
    translator = runtime.OnnxTranslator(student["fp32"], eos=eos, dedup=dedup)
    expected = _pytorch(
        student["built"], student["sample"], gen_eos=eos, gen_dedup=dedup
    )
    assert translator.translate(student["sources"]) == expected


def test_the_length_cap_and_empty_sources(student):
    translator = runtime.OnnxTranslator(student["fp32"], max_len_a=0, max_len_b=3)
    out = translator.translate(student["sources"] + [[]])
    assert out[-1] == [] and max(len(t) for t in out) <= 3
    assert out[:-1] == [t[:3] for t in student["expected"]]


def test_int8_from_the_command_line_gives_valid_sentences(student, tmp_path):
    out = tmp_path / "int8"
    data = student["built"].args.data
    assert export_onnx.main([str(student["checkpoint"]), data, str(out), "--int8"]) == 0
    config = json.loads((out / runtime.CONFIG).read_text())
    assert config["precision"] == "int8"
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "decoder.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    translator = runtime.OnnxTranslator(out)
    vocabulary = len(translator.target.symbols)
    d = student["built"].task.target_dictionary
    got = translator.translate(student["sources"])
    assert len(got) == TEST_SENTENCES and any(got)
    assert all(d.nspecial <= i < vocabulary for t in got for i in t)
    same = sum(a == b for a, b in zip(got, student["expected"]))
    assert same >= TEST_SENTENCES // 2, same  # int8 rounding flips a near tie, not more


def test_the_deployed_folder_runs_without_torch_or_fairseq(student):
    model_dir = student["fp32"]
    translator = runtime.OnnxTranslator(model_dir)
    lines = [translator.source.decode(s) for s in student["sources"][:4]]
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import runtime; "
        "runtime.main([sys.argv[1]]); "
        "assert not {'torch', 'fairseq'} & set(sys.modules), 'imported torch or fairseq'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = [translator.target.decode(t) for t in student["expected"][:4]]
    assert done.stdout.splitlines() == expected


def test_what_it_cannot_export_is_refused_in_one_line(student, tmp_path, capsys):
    model = student["built"].model
    for options, message in (
        ({"gen_latent_samples": 2}, "none sampled or given"),
        ({"gen_oracle_latents": True}, "none sampled or given"),
        ({"gen_latent_beam": 9}, "more than the 8 codes"),
        ({"gen_length_beam": 0}, "--gen-length-beam must be an integer >= 1"),
        ({"gen_rescore": "oracle"}, "--gen-rescore must be one of"),
        ({"gen_beam": 2}, "unknown option gen_beam"),
    ):
        with pytest.raises(OptionError, match=message) as error:
            check_exportable(model, options)
        assert "\n" not in str(error.value)
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(OptionError, match="holds no earlier export"):
        export_model(model, student["built"].task, tmp_path)
    tied = build(
        student["built"].args.data,
        "--share-all-embeddings",
        *TINY_FLAGS,
        "--latent-tied-codes",
    )
    checkpoint = tmp_path / "tied.pt"
    save_checkpoint(tied, checkpoint)
    with pytest.raises(SystemExit) as exit_:
        export_onnx.main([str(checkpoint), tied.args.data, str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: the ONNX export does not support --latent-tied-codes" in err


def test_the_benchmark_measures_an_onnx_row_beside_the_pytorch_row(
    student, tiny_databin, tmp_path
):
    checkpoint = student["checkpoint"]
    out, hyps = tmp_path / "bench.json", tmp_path / "hyps"
    argv = ["--data", str(tiny_databin), "--detok", "none", "--bpe-symbol", "none"]
    argv += ["--throughput-max-tokens", "200", "--throughput-passes", "1"]
    argv += ["--json", str(out), "--save-hyps", str(hyps), "--device", "cpu"]
    argv += ["--model", f"Student=translation_vqvae:{checkpoint}"]
    argv += ["--model", f"Student ONNX=onnx:{checkpoint}:gen_eos=first"]
    assert benchmark.main(argv) == 0
    models = {m["name"]: m for m in json.loads(out.read_text())["models"]}
    row = models["Student ONNX"]
    assert row["status"] == "ok" and row["generation"]["precision"] == "fp32"
    assert row["latency_ms"]["sentences"] == row["throughput"]["sentences"] == 13
    assert row["bleu"] == models["Student"]["bleu"]
    name = f"__{checkpoint.parent.name}.detok.txt"
    assert (hyps / f"Student_ONNX{name}").read_text() == (
        hyps / f"Student{name}"
    ).read_text()
    assert (checkpoint.parent / "student.pt.onnx" / STAMP).is_file()


def test_the_onnx_spec_parses():
    spec = parse_model_spec("x=onnx:s.pt:int8=True,gen_eos=last-latent")
    assert onnx_student._options(spec["args"])[:4] == (
        True,
        None,
        {"gen_eos": "last-latent"},
        {},
    )
    with pytest.raises(ValueError, match="int8 must be True or False"):
        onnx_student._options(parse_model_spec("x=onnx:s.pt:int8=1")["args"])
