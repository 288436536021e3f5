"""ONNX Runtime rows of the benchmark: a vqvae_nat checkpoint exported once with
``fairseq_vqvae.deploy.export`` (cached beside it) and decoded by ``deploy.runtime``'s
``OnnxTranslator`` (numpy + onnxruntime, no torch), measured as every fairseq row is
(``measure.evaluate``): the same test set, references, BLEU, batch-1 latency and large-batch
throughput, in batches of --throughput-max-tokens as fairseq forms them.

A spec ``NAME=onnx:CHECKPOINT[:int8=True,gen_eos=first,max_len_b=200]``: int8 (default False)
exports with int8 weights (ONNX Runtime's dynamic quantization; ``CHECKPOINT.onnx-int8/``,
fp32 in ``CHECKPOINT.onnx/``); gen_eos, gen_dedup, max_len_a and max_len_b are the runtime's
(default: the checkpoint's, and fairseq-generate's 0 and 200); latent_top_k the export's
--latent-top-k; data=DIR the data-bin (default ``--data``).

The search over latents (``OnnxTranslator``'s options; default one length, greedy codes):
``latent_beam=8,length_beam=2,rescore=model|latent|teacher``, and for ``rescore=teacher``
``teacher=TEACHER_CHECKPOINT[,teacher_compute_type=int8]``: the AR teacher converted once to
CTranslate2 (``ct2.converted``, ``TEACHER_CHECKPOINT.ct2/`` beside it) and run by CTranslate2
(compute type int8 by default), which scores every candidate::

    NAME=onnx:student.pt:int8=True,latent_beam=8,rescore=teacher,teacher=teacher.pt

Other generation options are refused as the export refuses them (sampled codes, oracle
latents), and the generator's names of the search's options with the name to use.
"""

from pathlib import Path
from typing import NamedTuple

from .engines import (
    cached_conversion,
    checkpoint_stamp,
    load_task,
    measure_engine,
    open_row,
)

ONNX_TASK = "onnx"


SEARCH = {"latent_beam": 1, "length_beam": 1, "rescore": None}  # None: the export's
TEACHER = ("teacher", "teacher_compute_type")


class OnnxOptions(NamedTuple):
    """An onnx spec's arguments: the export's (int8, --latent-top-k, generation options) and
    the runtime's (the search, the teacher checkpoint and its CTranslate2 compute type)."""

    int8: bool
    top_k: int | None
    export: dict
    search: dict
    teacher: str | None = None
    teacher_compute_type: str = "int8"


def exported(
    checkpoint: Path, data: str, int8: bool, options: dict, top_k=None
) -> Path:
    """The export of ``checkpoint``: ``CHECKPOINT.onnx/`` (``.onnx-int8/``) beside it, made on
    first use and again when the checkpoint, onnxruntime or ``options`` change. A folder there
    that this function did not write is refused, never replaced."""
    import onnxruntime

    from fairseq_vqvae.deploy import runtime
    from fairseq_vqvae.deploy.export import export

    stamp = {
        **checkpoint_stamp(checkpoint),
        "onnxruntime": onnxruntime.__version__,
        "format": runtime.FORMAT,
        "int8": int8,
        "options": options,
        "latent_top_k": top_k,
    }
    return cached_conversion(
        checkpoint.with_name(checkpoint.name + (".onnx-int8" if int8 else ".onnx")),
        stamp,
        lambda tmp: export(checkpoint, data, tmp, int8, options, top_k),
        "an ONNX export",
    )


def _options(args: dict) -> OnnxOptions:
    """The ``OnnxOptions`` of a spec's arguments but data=, checked in one line each."""
    args = dict(args)
    int8 = args.pop("int8", False)
    if not isinstance(int8, bool):
        raise ValueError(f"int8 must be True or False, got {int8!r}")
    for name in SEARCH:
        if f"gen_{name}" in args:
            raise ValueError(
                f"gen_{name}= is the PyTorch rows' name: onnx rows take {name}="
            )
    search = {k: args.pop(k) for k in SEARCH if k in args}
    teacher = {k: args.pop(k) for k in TEACHER if k in args}
    if "teacher_compute_type" in teacher and "teacher" not in teacher:
        raise ValueError("teacher_compute_type= needs teacher=TEACHER_CHECKPOINT")
    if "teacher" in teacher and search.get("rescore") != "teacher":
        raise ValueError("teacher= is read only with rescore=teacher")
    if search.get("rescore") == "teacher" and "teacher" not in teacher:
        raise ValueError(
            "rescore=teacher needs teacher=TEACHER_CHECKPOINT (fairseq, AR)"
        )
    return OnnxOptions(int8, args.pop("latent_top_k", None), args, search, **teacher)


def _teacher(options: OnnxOptions, row, args):
    """The ``ctranslate2.Translator`` of the spec's teacher= (None without one), converted
    once beside its checkpoint."""
    if options.teacher is None:
        return None
    import ctranslate2

    from .ct2 import converted

    checkpoint = Path(options.teacher)
    if not checkpoint.is_file():
        raise ValueError(f"teacher checkpoint not found: {checkpoint}")
    load_task(
        checkpoint, row.data, "translation", "the teacher is an AR translation model"
    )
    cfg = row.task.cfg
    model_dir = converted(checkpoint, row.data, cfg.source_lang, cfg.target_lang)
    return ctranslate2.Translator(
        str(model_dir),
        device="cpu",
        compute_type=options.teacher_compute_type,
        intra_threads=args.threads,
        inter_threads=1,
    )


def evaluate_onnx(spec: dict, args, context: dict) -> dict:
    """Export (once), translate at batch 1 and at large batches, score."""
    from fairseq_vqvae.deploy.runtime import OnnxTranslator

    from .measure import test_references

    if context["device"] != "cpu":
        raise ValueError("onnx rows run on the CPU: pass --device cpu")
    row = open_row(
        spec,
        args,
        _options,
        "translation_vqvae",
        "the ONNX export is for vqvae_nat students",
    )
    if row.task is None:
        return row.record
    options = row.options
    model_dir = exported(
        row.checkpoint, row.data, options.int8, options.export, options.top_k
    )
    translator = OnnxTranslator(
        model_dir,
        threads=args.threads,
        teacher=_teacher(options, row, args),
        **options.search,
    )
    dataset, refs = test_references(args, row.task, row.data, context)
    translate, translate_all, sources = _engine(translator, row.task, dataset, args)
    return measure_engine(
        row,
        args,
        context,
        model_dir=model_dir,
        generation=_generation(translator.config, options),
        sources=sources,
        refs=refs,
        translate=translate,
        translate_all=translate_all,
    )


def _generation(config: dict, options: OnnxOptions) -> dict:
    """What the row records of its engine and decoding settings."""
    import onnxruntime

    generation = {
        "engine": f"onnxruntime {onnxruntime.__version__}",
        "precision": config["precision"],
        **{k: config[k] for k in ("eos_policy", "dedup", "max_len_a", "max_len_b")},
        **{k: config[k] for k in ("latent_top_k", *SEARCH)},
    }
    if options.teacher is not None:
        generation["teacher"] = str(options.teacher)
        generation["teacher_compute_type"] = options.teacher_compute_type
    return generation


def _engine(translator, task, dataset, args):
    """(translate: sources -> texts, translate_all: () -> every text in the throughput
    pass's batches, which fairseq forms as for the PyTorch rows; the test set's sources)."""
    from .measure import batch_iterator

    eos, tgt_dict = task.source_dictionary.eos(), task.target_dictionary
    sources = [
        [i for i in dataset[n]["source"].tolist() if i != eos]
        for n in range(len(dataset))
    ]
    batches = []
    if args.throughput_max_tokens > 0:
        batches = [
            sample["id"].tolist()
            for sample in batch_iterator(
                task, [], dataset, None, args.throughput_max_tokens
            )
            if "net_input" in sample
        ]

    def translate(batch):
        return [
            tgt_dict.string(ids, args.bpe_symbol) for ids in translator.translate(batch)
        ]

    def translate_all():
        texts = [None] * len(sources)
        for ids in batches:
            for i, text in zip(ids, translate([sources[i] for i in ids])):
                texts[i] = text
        return texts

    return translate, translate_all, sources
