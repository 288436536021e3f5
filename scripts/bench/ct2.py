"""CTranslate2 rows of the benchmark: a fairseq ``transformer`` checkpoint converted once with
``ctranslate2.converters.FairseqConverter`` (cached beside it) and decoded by CTranslate2's C++
engine, the AR engine a user deploys, measured as every fairseq row is (``measure.evaluate``):
the same test set, references, BLEU, batch-1 latency and large-batch throughput.

A spec ``NAME=ctranslate2:CHECKPOINT[:compute_type=int8,beam=4,max_len_b=200]``: compute_type
is CTranslate2's (int8, float32, int8_float32, ...; default int8: it quantizes the float32
conversion when it loads it), beam its beam size (default 4, as fairseq's translation rows;
1 = greedy), max_len_b the longest translation, max_len_a x source length + max_len_b tokens
(fairseq-generate's defaults, 0 and 200), and data=DIR the data-bin (default ``--data``).
"""

from pathlib import Path

from .engines import (  # STAMP: read from here by tests/test_ct2.py
    STAMP,  # noqa: F401
    cached_conversion,
    checkpoint_stamp,
    measure_engine,
    open_row,
)

CT2_TASK = "ctranslate2"
OPTIONS = {"compute_type": "int8", "beam": 4, "max_len_a": 0.0, "max_len_b": 200}


def _stamp(checkpoint: Path) -> dict:
    import ctranslate2

    return {**checkpoint_stamp(checkpoint), "ctranslate2": ctranslate2.__version__}


def converted(checkpoint: Path, data: str, source_lang: str, target_lang: str) -> Path:
    """The CTranslate2 model of ``checkpoint`` (float32 weights): ``CHECKPOINT.ct2/`` beside it,
    converted on first use and again when the checkpoint changes. A folder there that this
    function did not write is refused, never replaced."""
    from ctranslate2.converters import FairseqConverter

    return cached_conversion(
        checkpoint.with_name(checkpoint.name + ".ct2"),
        _stamp(checkpoint),
        lambda tmp: FairseqConverter(
            str(checkpoint), data, source_lang=source_lang, target_lang=target_lang
        ).convert(str(tmp)),
        "a CTranslate2 conversion",
    )


def _options(args: dict) -> dict:
    """A spec's CTranslate2 options (its arguments but data=) over the defaults."""
    unknown = sorted(set(args) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown CTranslate2 option(s) {', '.join(unknown)}: use "
            f"{', '.join(f'{k}=' for k in OPTIONS)} or data="
        )
    options = {**OPTIONS, **args}
    if not (isinstance(options["beam"], int) and options["beam"] >= 1):
        raise ValueError(f"beam must be an integer >= 1, got {options['beam']!r}")
    return options


def evaluate_ctranslate2(spec: dict, args, context: dict) -> dict:
    """Convert (once), translate at batch 1 and at large batches, score."""
    import ctranslate2
    from fairseq.data import data_utils

    from .measure import test_references

    row = open_row(
        spec,
        args,
        _options,
        "translation",
        "CTranslate2 converts fairseq's autoregressive translation models",
    )
    if row.task is None:
        return row.record
    task, options = row.task, row.options
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    model_dir = converted(row.checkpoint, row.data, src, tgt)
    translator = ctranslate2.Translator(
        str(model_dir),
        device="cpu" if context["device"] == "cpu" else "cuda",
        compute_type=options["compute_type"],
        intra_threads=args.threads,
        inter_threads=1,
    )
    dataset, refs = test_references(args, task, row.data, context)
    src_dict = task.source_dictionary
    sources = [
        [src_dict[i] for i in dataset[n]["source"].tolist() if i != src_dict.eos()]
        for n in range(len(dataset))
    ]
    decode = dict(beam_size=options["beam"], max_input_length=0, num_hypotheses=1)

    def run(batch, **extra):
        longest = max(len(s) for s in batch)
        limit = int(options["max_len_a"] * longest + options["max_len_b"])
        results = translator.translate_batch(
            batch, max_decoding_length=limit, **decode, **extra
        )
        return [
            data_utils.post_process(" ".join(r.hypotheses[0]), args.bpe_symbol)
            for r in results
        ]

    return measure_engine(
        row,
        args,
        context,
        model_dir=model_dir,
        generation={"engine": f"ctranslate2 {ctranslate2.__version__}", **options},
        sources=sources,
        refs=refs,
        translate=run,
        translate_all=lambda: run(
            sources, max_batch_size=args.throughput_max_tokens, batch_type="tokens"
        ),
    )
