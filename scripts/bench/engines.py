"""The measurements of a row decoded outside fairseq (CTranslate2, ONNX Runtime), made as
``measure.evaluate`` makes fairseq's: the same test set and references, BLEU from the same
detokenization, batch-1 latency after the warm-up and large-batch throughput."""

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .measure import (
    bleu_scores,
    detokenize,
    latency_summary,
    log,
    rate_summary,
    save_hypotheses,
)

STAMP = "fairseq_source.json"  # in a conversion's folder: what it was made from


def checkpoint_stamp(checkpoint: Path) -> dict:
    """What identifies a checkpoint file's version: its name, size and modification time."""
    stat = checkpoint.stat()
    return {
        "checkpoint": checkpoint.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def cached_conversion(out: Path, stamp: dict, build, what: str) -> Path:
    """The folder ``out`` as ``build(folder)`` writes it, made on first use and again when
    ``stamp`` (a JSON-able dict: the checkpoint's version, the converter's, its options)
    changes; written beside and renamed into place. A folder there without our ``STAMP``
    (``what`` names the conversion in the error) is refused, never replaced."""
    if out.exists():
        try:
            ours = json.loads((out / STAMP).read_text())
        except (OSError, ValueError):
            raise ValueError(
                f"{out} exists and is not {what} this benchmark made (no {STAMP}): "
                f"move it away"
            ) from None
        if ours == stamp:
            return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    (tmp / STAMP).write_text(json.dumps(stamp) + "\n")
    if out.exists():  # an older conversion of ours (the stamp was read above)
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


@dataclass
class Row:
    """An engine's row while it is measured (``open_row``): ``record`` is what the results
    file gets; ``options`` the spec's arguments as ``parse`` returned them; ``task`` None
    when the checkpoint is missing (``record`` says so)."""

    record: dict
    started: float
    checkpoint: Path
    data: str
    options: object = None
    task: object = None


def open_row(spec: dict, args, parse, trained_with: str, engine: str) -> Row:
    """The row of ``spec``: its record, start time, checkpoint and data-bin (``data=`` or
    --data), its options ``parse(spec's arguments but data=)`` (which raises on bad ones), and
    the fairseq task the checkpoint was trained with (``load_task``)."""
    started = time.perf_counter()
    record = {k: spec[k] for k in ("name", "task", "checkpoint", "args")}
    checkpoint = Path(spec["checkpoint"])
    options = dict(spec["args"])
    data = str(options.pop("data", None) or args.data)
    row = Row(record, started, checkpoint, data)
    if not checkpoint.is_file():
        record.update(status="missing", error=f"checkpoint not found: {checkpoint}")
        log(f"{spec['name']}: MISSING ({checkpoint}): skipped")
        return row
    row.options = parse(options)
    row.task = load_task(checkpoint, data, trained_with, engine)
    record["data"] = data
    return row


def load_task(checkpoint: Path, data: str, trained_with: str, engine: str):
    """The fairseq task ``checkpoint`` was trained with, on the data-bin ``data`` (its test
    set and dictionaries); one other than ``trained_with`` is refused, naming ``engine``."""
    from fairseq import checkpoint_utils, tasks

    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))["cfg"]
    if cfg.task._name != trained_with:
        raise ValueError(
            f"{checkpoint} was trained with --task {cfg.task._name}: {engine} "
            f"(--task {trained_with})"
        )
    cfg.task.data = data
    return tasks.setup_task(cfg.task)


def measure_engine(
    row: Row,
    args,
    context,
    *,
    model_dir,
    generation,
    sources,
    refs,
    translate,
    translate_all,
) -> dict:
    """Fill ``row.record`` with an engine's latency, BLEU and throughput.

    Args:
        model_dir: the converted model the engine runs; generation: its settings (recorded).
        sources: the test set's source sentences, in the engine's form.
        refs: the run's ``measure.References``.
        translate: a list of sources -> their texts (BPE removed), one batch.
        translate_all: () -> the texts of all ``sources`` in large batches
            (--throughput-max-tokens), in order.
    """
    record, name = row.record, row.record["name"]
    lang = row.task.cfg.target_lang
    record["generation"] = generation
    log(f"{name}: {model_dir}")
    record["load_s"] = round(time.perf_counter() - row.started, 2)
    log(f"{name}: batch 1, {len(sources)} sentences after {args.warmup} warm-up")
    for sentence in sources[: args.warmup]:
        translate([sentence])
    texts, ms = [], []
    for sentence in sources:
        start = time.perf_counter()
        texts += translate([sentence])
        ms.append(1000.0 * (time.perf_counter() - start))
    record["latency_ms"] = latency_summary(ms, args.warmup)
    detok = [detokenize(t, args.detok, lang) for t in texts]
    record.update(bleu_scores(detok, texts, refs))
    record["sentences_translated"] = len(texts)
    save_hypotheses(args, record, record, detok)  # the record names the row as its spec
    if args.throughput_max_tokens > 0:
        record["throughput"] = _throughput(
            args, translate, translate_all, sources, refs, lang, name
        )
    record["wall_s"] = round(time.perf_counter() - row.started, 2)
    record["status"] = "ok"
    record["run"] = context["run"]
    log(
        f"{name}: sacreBLEU {record['bleu']:.2f}, tok BLEU {record['bleu_tok']:.2f}, "
        f"{record['latency_ms']['median']:.1f} ms/sentence (median), {record['wall_s']:.0f}s"
    )
    return record


def _throughput(args, translate, translate_all, sources, refs, lang, name) -> dict:
    """--throughput-passes passes of ``translate_all``, each after a one-sentence warm-up."""
    rates, batched = [], None
    for i in range(args.throughput_passes):
        log(
            f"{name}: throughput, --max-tokens {args.throughput_max_tokens}, "
            f"pass {i + 1}/{args.throughput_passes}"
        )
        translate(sources[:1])
        start = time.perf_counter()
        batched = translate_all()
        rates.append(len(sources) / (time.perf_counter() - start))
    return {
        **rate_summary(rates),
        "max_tokens": args.throughput_max_tokens,
        "sentences": len(batched),
        "bleu_tok": bleu_scores(
            [detokenize(t, args.detok, lang) for t in batched], batched, refs
        )["bleu_tok"],
    }
