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

import json
import os
import shutil
import statistics
import time
from pathlib import Path

CT2_TASK = "ctranslate2"
OPTIONS = {"compute_type": "int8", "beam": 4, "max_len_a": 0.0, "max_len_b": 200}
STAMP = "fairseq_source.json"


def _stamp(checkpoint: Path) -> dict:
    import ctranslate2

    stat = checkpoint.stat()
    return {
        "checkpoint": checkpoint.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctranslate2": ctranslate2.__version__,
    }


def converted(checkpoint: Path, data: str, source_lang: str, target_lang: str) -> Path:
    """The CTranslate2 model of ``checkpoint`` (float32 weights): ``CHECKPOINT.ct2/`` beside it,
    converted on first use and again when the checkpoint changes. A folder there that this
    function did not write is refused, never replaced."""
    from ctranslate2.converters import FairseqConverter

    out = checkpoint.with_name(checkpoint.name + ".ct2")
    stamp = _stamp(checkpoint)
    if out.exists():
        try:
            ours = json.loads((out / STAMP).read_text())
        except (OSError, ValueError):
            raise ValueError(
                f"{out} exists and is not a CTranslate2 conversion this benchmark made "
                f"(no {STAMP}): move it away"
            ) from None
        if ours == stamp:
            return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    FairseqConverter(
        str(checkpoint), data, source_lang=source_lang, target_lang=target_lang
    ).convert(str(tmp))
    (tmp / STAMP).write_text(json.dumps(stamp) + "\n")
    if out.exists():  # an older conversion of ours (the stamp was read above)
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _options(spec: dict) -> tuple[dict, str | None]:
    args = dict(spec["args"])
    data = args.pop("data", None)
    unknown = sorted(set(args) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown CTranslate2 option(s) {', '.join(unknown)}: use "
            f"{', '.join(f'{k}=' for k in OPTIONS)} or data="
        )
    options = {**OPTIONS, **args}
    if not (isinstance(options["beam"], int) and options["beam"] >= 1):
        raise ValueError(f"beam must be an integer >= 1, got {options['beam']!r}")
    return options, data


def evaluate_ctranslate2(spec: dict, args, context: dict) -> dict:
    """Convert (once), translate at batch 1 and at large batches, score."""
    import ctranslate2
    from fairseq import checkpoint_utils, tasks
    from fairseq.data import data_utils

    from .measure import bleu_scores, detokenize, log, save_hypotheses, test_references

    record = {k: spec[k] for k in ("name", "task", "checkpoint", "args")}
    checkpoint = Path(spec["checkpoint"])
    if not checkpoint.is_file():
        record.update(status="missing", error=f"checkpoint not found: {checkpoint}")
        log(f"{spec['name']}: MISSING ({checkpoint}): skipped")
        return record
    started = time.perf_counter()
    options, data = _options(spec)
    data = str(data or args.data)
    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))["cfg"]
    if cfg.task._name != "translation":
        raise ValueError(
            f"{checkpoint} was trained with --task {cfg.task._name}: CTranslate2 converts "
            f"fairseq's autoregressive translation models (--task translation)"
        )
    cfg.task.data = data
    task = tasks.setup_task(cfg.task)
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    model_dir = converted(checkpoint, data, src, tgt)
    translator = ctranslate2.Translator(
        str(model_dir),
        device="cpu" if context["device"] == "cpu" else "cuda",
        compute_type=options["compute_type"],
        intra_threads=args.threads,
        inter_threads=1,
    )
    dataset, refs = test_references(args, task, data, context)
    src_dict = task.source_dictionary
    sources = [
        [src_dict[i] for i in dataset[n]["source"].tolist() if i != src_dict.eos()]
        for n in range(len(dataset))
    ]
    decode = dict(
        beam_size=options["beam"],
        max_input_length=0,
        num_hypotheses=1,
    )

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

    record["generation"] = {
        "engine": f"ctranslate2 {ctranslate2.__version__}",
        **options,
    }
    record["data"] = data
    record["load_s"] = round(time.perf_counter() - started, 2)
    log(
        f"{spec['name']}: batch 1, {len(dataset)} sentences after {args.warmup} warm-up ({model_dir})"
    )
    for sentence in sources[: args.warmup]:
        run([sentence])
    texts, ms = [], []
    for sentence in sources:
        start = time.perf_counter()
        texts += run([sentence])
        ms.append(1000.0 * (time.perf_counter() - start))
    record["latency_ms"] = {
        "median": round(statistics.median(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
        "p90": round(sorted(ms)[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
        "total_s": round(sum(ms) / 1000, 3),
        "sentences": len(ms),
        "warmup_sentences": args.warmup,
        "batch_size": 1,
    }
    detok = [detokenize(t, args.detok, tgt) for t in texts]
    record.update(bleu_scores(detok, texts, refs))
    record["sentences_translated"] = len(texts)
    save_hypotheses(args, spec, record, detok)
    if args.throughput_max_tokens > 0:
        rates, batched = [], None
        for i in range(args.throughput_passes):
            log(
                f"{spec['name']}: throughput, --max-tokens {args.throughput_max_tokens}, "
                f"pass {i + 1}/{args.throughput_passes}"
            )
            run(sources[:1])
            start = time.perf_counter()
            batched = run(
                sources,
                max_batch_size=args.throughput_max_tokens,
                batch_type="tokens",
            )
            rates.append(len(sources) / (time.perf_counter() - start))
        record["throughput"] = {
            "sentences_per_s": round(statistics.median(rates), 2),
            "sentences_per_s_min": round(min(rates), 2),
            "sentences_per_s_max": round(max(rates), 2),
            "passes": len(rates),
            "max_tokens": args.throughput_max_tokens,
            "sentences": len(batched),
            "bleu_tok": bleu_scores(
                [detokenize(t, args.detok, tgt) for t in batched], batched, refs
            )["bleu_tok"],
        }
    record["wall_s"] = round(time.perf_counter() - started, 2)
    record["status"] = "ok"
    record["run"] = context["run"]
    log(
        f"{spec['name']}: sacreBLEU {record['bleu']:.2f}, tok BLEU {record['bleu_tok']:.2f}, "
        f"{record['latency_ms']['median']:.1f} ms/sentence (median), {record['wall_s']:.0f}s"
    )
    return record
