"""ONNX Runtime rows of the benchmark: a vqvae_nat checkpoint exported once with
``fairseq_vqvae.deploy.export`` (cached beside it) and decoded by ``deploy.runtime``'s
``OnnxTranslator`` (numpy + onnxruntime, no torch), measured as every fairseq row is
(``measure.evaluate``): the same test set, references, BLEU, batch-1 latency and large-batch
throughput, in batches of --throughput-max-tokens as fairseq forms them.

A spec ``NAME=onnx:CHECKPOINT[:int8=True,gen_eos=first,max_len_b=200]``: int8 (default False)
exports with int8 weights (ONNX Runtime's dynamic quantization; ``CHECKPOINT.onnx-int8/``,
fp32 in ``CHECKPOINT.onnx/``); gen_eos, gen_dedup, max_len_a and max_len_b are the runtime's
(default: the checkpoint's, and fairseq-generate's 0 and 200); data=DIR the data-bin (default
``--data``). Any other generation option is refused as the export refuses it: one length,
greedy codes.
"""

from pathlib import Path

from .engines import (
    cached_conversion,
    checkpoint_stamp,
    measure_engine,
    open_row,
)

ONNX_TASK = "onnx"


def exported(checkpoint: Path, data: str, int8: bool, options: dict) -> Path:
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
    }
    return cached_conversion(
        checkpoint.with_name(checkpoint.name + (".onnx-int8" if int8 else ".onnx")),
        stamp,
        lambda tmp: export(checkpoint, data, tmp, int8, options),
        "an ONNX export",
    )


def _options(args: dict) -> tuple[bool, dict]:
    """(int8, the export's options) of a spec's arguments but data=."""
    args = dict(args)
    int8 = args.pop("int8", False)
    if not isinstance(int8, bool):
        raise ValueError(f"int8 must be True or False, got {int8!r}")
    return int8, args


def evaluate_onnx(spec: dict, args, context: dict) -> dict:
    """Export (once), translate at batch 1 and at large batches, score."""
    import onnxruntime

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
    int8, options = row.options
    model_dir = exported(row.checkpoint, row.data, int8, options)
    translator = OnnxTranslator(model_dir, threads=args.threads)
    dataset, refs = test_references(args, row.task, row.data, context)
    translate, translate_all, sources = _engine(translator, row.task, dataset, args)
    config = translator.config
    generation = {
        "engine": f"onnxruntime {onnxruntime.__version__}",
        "precision": config["precision"],
        **{k: config[k] for k in ("eos_policy", "dedup", "max_len_a", "max_len_b")},
    }
    return measure_engine(
        row,
        args,
        context,
        model_dir=model_dir,
        generation=generation,
        sources=sources,
        refs=refs,
        translate=translate,
        translate_all=translate_all,
    )


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
