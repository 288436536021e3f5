"""The ONNX runtime's search over latents (OnnxTranslator(latent_beam=, length_beam=,
rescore=, teacher=)): the PyTorch generator's candidates and ranking with the same flags, a
CTranslate2 teacher ranking as the fairseq one does, the refusals, and a benchmark row."""

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from fairseq_vqvae.deploy import runtime, runtime_options, runtime_search
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
    transformer_flags,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import benchmark  # noqa: E402
from bench import ct2, onnx_student  # noqa: E402
from bench.specs import parse_model_spec  # noqa: E402

TEST_SENTENCES = 13  # conftest.SPLITS: lengths 1 to 17, so a batch of them is padded


def _hypotheses(built, sample, models, **generation) -> list:
    """Every sentence's hypotheses from the generator built with ``generation``, best first."""
    args = argparse.Namespace(**{**vars(built.args), **generation})
    generator = built.task.build_generator(models, args)
    return generator.generate(models, sample)


def _best(hypos) -> list:
    return [h[0]["tokens"][:-1].tolist() for h in hypos]


@pytest.fixture(scope="module")
def student(tiny_databin, tmp_path_factory):
    """A length-conditioned student with a length classifier, its checkpoint, the test set
    and its fp32 export (the latent step keeps min(16, 8) = 8 codes). 10 updates: 30 leave
    a latent predictor so sure that every beam's best is the greedy codes."""
    torch.manual_seed(0)
    flags = ("--share-all-embeddings", *TINY_FLAGS, "--latent-length-condition")
    built = train_a_little(build(tiny_databin, *flags), steps=10)
    return exported_student(
        built, tmp_path_factory.mktemp("onnx_search"), TEST_SENTENCES
    )


@pytest.fixture(scope="module")
def teacher(tiny_databin, tmp_path_factory):
    """A 1-layer fairseq transformer after 40 updates on the letters, its checkpoint (as
    CTranslate2's converter reads it) and its float32 CTranslate2 conversion."""
    torch.manual_seed(0)
    built = build(
        tiny_databin,
        *transformer_flags(dim=16, ffn=16),
        "--share-all-embeddings",
        arch="transformer",
        task="translation",
        criterion="cross_entropy",
    )
    train_a_little(built, steps=40)
    checkpoint = tmp_path_factory.mktemp("onnx_search_teacher") / "teacher.pt"
    save_checkpoint(built, checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    state["args"] = None  # CTranslate2's FairseqConverter reads this key
    torch.save(state, checkpoint)
    return {
        "model": built.model.eval(),
        "checkpoint": checkpoint,
        "ct2": ct2.converted(checkpoint, str(tiny_databin), "src", "tgt"),
    }


SEARCHES = [  # (latent_beam, length_beam, rescore, eos, dedup)
    (2, 1, "latent", "first", False),
    (3, 1, "model", "first", False),
    (4, 1, "model", "last-latent", True),
    (4, 1, "latent", "length", False),
    (2, 2, "model", "first", True),
    (1, 3, "model", "first", False),
    (3, 2, "latent", "last-latent", False),
]


@pytest.mark.parametrize("beam, lengths, rescore, eos, dedup", SEARCHES)
def test_the_search_gives_the_generators_tokens_at_batch_1_and_batched(
    student, beam, lengths, rescore, eos, dedup
):
    options = dict(latent_beam=beam, length_beam=lengths, rescore=rescore)
    translator = runtime.OnnxTranslator(
        student["fp32"], eos=eos, dedup=dedup, **options
    )
    built = student["built"]
    expected = _best(
        _hypotheses(
            built,
            student["sample"],
            [built.model],
            gen_latent_beam=beam,
            gen_length_beam=lengths,
            gen_rescore=rescore,
            gen_eos=eos,
            gen_dedup=dedup,
        )
    )
    sources = student["sources"]
    assert translator.translate(sources) == expected
    assert [translator.translate([s])[0] for s in sources] == expected


@pytest.mark.parametrize("rescore", ["latent", "model"])
def test_a_latent_beam_alone_changes_translations(student, rescore):
    """The tests above compare searches, not the greedy path again."""
    sources = student["sources"]
    greedy = runtime.OnnxTranslator(student["fp32"]).translate(sources)
    beam = runtime.OnnxTranslator(student["fp32"], latent_beam=4, rescore=rescore)
    assert sum(a != b for a, b in zip(beam.translate(sources), greedy)) >= 2


def test_every_candidate_and_its_log_prior_are_the_generators(student):
    """Each sentence's length_beam x latent_beam code sequences and log p(T | x) +
    log p(z | x, T) (the latent ranking's score), against the generator's candidates."""
    built, sources = student["built"], student["sources"]
    hypos = _hypotheses(
        built,
        student["sample"],
        [built.model],
        gen_latent_beam=4,
        gen_length_beam=2,
        gen_rescore="latent",
        nbest=8,
    )
    translator = runtime.OnnxTranslator(student["fp32"], latent_beam=4, length_beam=2)
    tokens = translator._batch(sources)
    padding = tokens == translator.config["source"]["pad"]
    _, lengths, _, length_logp, *memory = translator._run("encoder", src_tokens=tokens)
    cand = runtime_search.candidates(
        translator, lengths, length_logp, (~padding).sum(1), memory, padding
    )
    for sentence, candidates in enumerate(hypos):
        mine = sorted(
            (cand.codes[i, : cand.counts[i], 0].tolist(), float(cand.prior[i]))
            for i in (cand.sentence == sentence).nonzero()[0]
        )
        theirs = sorted(
            (h["latent_codes"][:, 0].tolist(), h["rank_score"]) for h in candidates
        )
        assert [codes for codes, _ in mine] == [codes for codes, _ in theirs]
        assert [p for _, p in mine] == pytest.approx([p for _, p in theirs], abs=1e-5)


def test_a_beam_without_a_length_classifier_gives_the_generators_tokens(
    tiny_databin, tmp_path
):
    torch.manual_seed(0)
    flags = ("--share-all-embeddings", *TINY_FLAGS, "--post-norm")
    built = train_a_little(build(tiny_databin, *flags, "--latent-length", "source"))
    sample = collate(built.task, "test", range(TEST_SENTENCES))
    d = built.task.target_dictionary
    model_dir = export_model(built.model, built.task, tmp_path, top_k=3)
    translator = runtime.OnnxTranslator(model_dir, latent_beam=3, rescore="model")
    expected = _best(
        _hypotheses(
            built, sample, [built.model], gen_latent_beam=3, gen_rescore="model"
        )
    )
    assert translator.translate(source_ids(sample, d)) == expected
    with pytest.raises(ValueError, match="export it again with --latent-top-k 4"):
        runtime.OnnxTranslator(model_dir, latent_beam=4)
    with pytest.raises(ValueError, match="length_beam above 1 needs a model trained"):
        runtime.OnnxTranslator(model_dir, length_beam=2)


def _recording(teacher, record: list):
    """``teacher`` (a runtime teacher callable) that appends ((source, candidate), score)
    of every pair it scores to ``record``."""

    def score(sources, targets):
        scores = teacher(sources, targets)
        record.extend(zip(zip(map(tuple, sources), map(tuple, targets)), scores))
        return scores

    return score


def test_a_ctranslate2_teacher_ranks_as_the_fairseq_teacher(student, teacher):
    """The same chosen candidate as the generator with the fairseq teacher
    (--path student.pt:teacher.pt), every sentence, at batch 1 and batched. The two
    engines' float32 scores differ in the last digits, so a candidate whose fairseq score
    ties the best one's exactly could be chosen instead; no other difference is allowed."""
    import ctranslate2

    built, sample = student["built"], student["sample"]
    search = dict(latent_beam=4, length_beam=2)
    hypos = _hypotheses(
        built,
        sample,
        [built.model, teacher["model"]],
        **{f"gen_{k}": v for k, v in search.items()},
        gen_rescore="teacher",
    )
    scored = []
    model = ctranslate2.Translator(str(teacher["ct2"]), compute_type="float32")
    translator = runtime.OnnxTranslator(
        student["fp32"],
        rescore="teacher",
        teacher=_recording(runtime_options.teacher_function(model), scored),
        **search,
    )
    sources = student["sources"]
    for got in (
        translator.translate(sources),
        [translator.translate([s])[0] for s in sources],
    ):
        for sentence, (tokens, candidates) in enumerate(zip(got, hypos)):
            best = candidates[0]
            if tokens != best["tokens"][:-1].tolist():
                chosen = [h for h in candidates if h["tokens"][:-1].tolist() == tokens]
                assert chosen and chosen[0]["rank_score"] == best["rank_score"], (
                    sentence
                )
    # Each pair CTranslate2 scored has the fairseq teacher's score (the mean with EOS).
    src, tgt = built.task.source_dictionary, built.task.target_dictionary
    fairseq_scores = {
        (
            tuple(src[i] for i in sources[s]),
            tuple(tgt[i] for i in h["tokens"][:-1].tolist()),
        ): h["rank_score"]
        for s, candidates in enumerate(hypos)
        for h in candidates
    }
    assert len(scored) >= TEST_SENTENCES
    assert all(abs(fairseq_scores[pair] - score) < 1e-4 for pair, score in scored)
    # The ranking chose among different translations.
    assert any(len({repr(h["tokens"].tolist()) for h in c}) > 1 for c in hypos)


def _refused(error_type, message, call):
    with pytest.raises(error_type, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_what_the_search_cannot_run_is_refused_in_one_line(student, tmp_path, capsys):
    model_dir = student["fp32"]

    def translator(**options):
        return lambda: runtime.OnnxTranslator(model_dir, **options)

    for options, message in (
        ({"latent_beam": 0}, "latent_beam must be an integer >= 1, got 0"),
        ({"length_beam": 1.5}, "length_beam must be an integer >= 1"),
        ({"latent_beam": 9}, "latent_beam 9 is more than the 8 codes per slice"),
        ({"length_beam": 257}, "more than the model's 256 length classes"),
        ({"rescore": "oracle"}, "rescore must be one of latent, model, teacher"),
        ({"rescore": "teacher"}, "rescore 'teacher' needs teacher="),
        ({"teacher": lambda s, t: [0.0] * len(t)}, "read only with rescore='teacher'"),
        (
            {"rescore": "teacher", "teacher": 42},
            "a ctranslate2.Translator or a callable",
        ),
    ):
        _refused(ValueError, message, translator(**options))
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    config = json.loads((old / runtime.CONFIG).read_text())
    (old / runtime.CONFIG).write_text(json.dumps({**config, "format": 1}))
    _refused(
        ValueError,
        "format 1, this runtime reads format 2: export it again",
        lambda: runtime.OnnxTranslator(old),
    )
    (old / runtime.CONFIG).write_text(json.dumps({**config, "num_slices": 2}))
    _refused(
        ValueError,
        "latent_beam above 1 needs a model with --num-slices 1",
        lambda: runtime.OnnxTranslator(old, latent_beam=2),
    )
    with pytest.raises(SystemExit):
        runtime.main([str(model_dir), "--teacher-compute-type", "int8"])
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("error: --teacher-compute-type needs --teacher")
    )
    with pytest.raises(
        SystemExit
    ):  # no CTranslate2 model there: one line, no traceback
        runtime.main([str(model_dir), "--teacher", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert f"error: --teacher {tmp_path / 'none'}: Unable to open" in err[-1], err
    model, task = student["built"].model, student["built"].task
    for top_k, message in ((0, "got 0"), (9, r"in \[1, 8\] \(the codebook\), got 9")):
        _refused(
            OptionError,
            message,
            lambda k=top_k: export_model(model, task, tmp_path / "k", top_k=k),
        )
    _refused(
        OptionError,
        "export with --latent-top-k 4",
        lambda: check_exportable(model, {"gen_latent_beam": 4}, top_k=2),
    )


def test_the_onnx_search_spec_and_its_refusals():
    def options(args):
        return onnx_student._options(parse_model_spec(f"x=onnx:s.pt:{args}")["args"])

    parsed = options(
        "latent_beam=8,rescore=teacher,teacher=t.pt,teacher_compute_type=float32"
    )
    assert parsed.search == {"latent_beam": 8, "rescore": "teacher"}
    assert (parsed.teacher, parsed.teacher_compute_type) == ("t.pt", "float32")
    assert options("int8=True,latent_beam=4,rescore=model,latent_top_k=4")[:4] == (
        True,
        4,
        {},
        {"latent_beam": 4, "rescore": "model"},
    )
    for args, message in (
        ("latent_beam=8,teacher=t.pt", "teacher= is read only with rescore=teacher"),
        ("rescore=teacher", "rescore=teacher needs teacher=TEACHER_CHECKPOINT"),
        ("teacher_compute_type=int8", "teacher_compute_type= needs teacher="),
        ("gen_latent_beam=8", "onnx rows take latent_beam="),
        ("gen_rescore=model", "onnx rows take rescore="),
    ):
        _refused(ValueError, message, lambda a=args: options(a))


def test_the_benchmark_measures_onnx_search_rows(
    student, teacher, tiny_databin, tmp_path
):
    checkpoint, teacher_checkpoint = student["checkpoint"], teacher["checkpoint"]
    out, hyps = tmp_path / "bench.json", tmp_path / "hyps"
    argv = ["--data", str(tiny_databin), "--detok", "none", "--bpe-symbol", "none"]
    argv += ["--throughput-max-tokens", "200", "--throughput-passes", "1"]
    argv += ["--json", str(out), "--save-hyps", str(hyps), "--device", "cpu"]
    beam = "latent_beam=3,rescore=model"
    argv += [
        "--model",
        f"Beam=translation_vqvae:{checkpoint}:gen_{beam.replace(',', ',gen_')}",
    ]
    argv += ["--model", f"Beam ONNX=onnx:{checkpoint}:{beam}"]
    argv += [
        "--model",
        f"Teacher ONNX=onnx:{checkpoint}:latent_beam=2,rescore=teacher,"
        f"teacher={teacher_checkpoint},teacher_compute_type=float32",
    ]
    assert benchmark.main(argv) == 0
    models = {m["name"]: m for m in json.loads(out.read_text())["models"]}
    assert all(m["status"] == "ok" for m in models.values())
    name = f"__{checkpoint.parent.name}.detok.txt"
    assert (hyps / f"Beam_ONNX{name}").read_text() == (hyps / f"Beam{name}").read_text()
    generation = models["Teacher ONNX"]["generation"]
    assert (generation["latent_beam"], generation["rescore"]) == (2, "teacher")
    assert generation["teacher_compute_type"] == "float32"
    assert models["Teacher ONNX"]["throughput"]["sentences"] == TEST_SENTENCES
    assert (teacher_checkpoint.parent / "teacher.pt.ct2" / ct2.STAMP).is_file()
