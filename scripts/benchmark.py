"""Benchmark trained fairseq translation models on one test set, in one process.

Every model is loaded with fairseq's own API (checkpoint_utils.load_model_ensemble_and_task,
``--user-dir fairseq_vqvae`` imported first), decoded with its task's generator through
``task.inference_step``, and measured the same way:

* BLEU: sacreBLEU on detokenized output (BPE removed, Moses-detokenized) against the RAW
  references (signature recorded), and tokenized BLEU (sacreBLEU ``tokenize='none'`` on the
  Moses-tokenized, BPE-removed text: what the paper and fairseq-generate's default scorer report);
* latency: milliseconds per sentence at batch size 1 over the whole test set, after a warm-up
  of a few sentences; every ``task.inference_step`` is timed with ``time.perf_counter``
  (``torch.cuda.synchronize`` around it on a GPU); median and mean; the same torch thread count
  for every model;
* throughput: sentences per second over the whole test set with large batches (``--max-tokens``);
* every test sentence must be translated exactly once in both passes (checked);
* speed-ups against the "AR beam 4" and "AR greedy" rows when present; several checkpoints
  under one row name (seeds) are reported as mean ± standard deviation.

Models (repeat ``--model``; a row name may be repeated for several seeds)::

    --model "NAME=TASK:CHECKPOINT[:KEY=VALUE,KEY=VALUE...]"

TASK is the fairseq task the checkpoint was trained with: ``translation`` (autoregressive;
default ``beam=4``), ``translation_lev`` (fairseq NAT; default ``iter_decode_max_iter=0``: one
parallel pass) or ``translation_vqvae`` (this plugin); or ``ctranslate2``: a ``translation``
checkpoint converted once to CTranslate2 (``CHECKPOINT.ct2/`` beside it) and decoded by its C++
engine, with ``compute_type=int8|float32|...`` and ``beam=N`` (default int8, beam 4; see
``bench/ct2.py``); or ``onnx``: a ``translation_vqvae`` checkpoint exported once for ONNX
Runtime (``CHECKPOINT.onnx/`` beside it, ``fairseq_vqvae/deploy``) and decoded by its runtime
(numpy + onnxruntime), with ``int8=True`` (int8 weights, ``CHECKPOINT.onnx-int8/``; default
False), the runtime's ``gen_eos``, ``gen_dedup``, ``max_len_a``, ``max_len_b`` and its search
``latent_beam=8,length_beam=1,rescore=model|latent|teacher``, with
``teacher=CHECKPOINT[,teacher_compute_type=int8]`` (the AR teacher run by CTranslate2) for
``rescore=teacher`` (see ``bench/onnx_student.py``). KEY=VALUE pairs are generation
options (``beam=1``, ``lenpen=0.6``, ``iter_decode_with_beam=3``, ...), task/model overrides
(``gen_latent_beam=4``), ``data=DIR`` (this model's data-bin; default ``--data``), or
``teacher=CHECKPOINT`` (an autoregressive model loaded beside it, for ``gen_rescore=teacher``).
Or a JSON file (``--models-json``): ``[{"name": ..., "task": ..., "checkpoint": ...,
"args": {...}}, ...]``. A checkpoint that does not exist is reported as missing, not an error.

Example::

    python scripts/benchmark.py --data runs/multi30k/data/data-bin \\
        --ref-raw runs/multi30k/data/raw/test.de --ref-tok runs/multi30k/data/tok/test.de \\
        --model "AR beam 4=translation:runs/multi30k/teacher/checkpoint_best.pt:beam=4" \\
        --model "AR greedy=translation:runs/multi30k/teacher/checkpoint_best.pt:beam=1" \\
        --model "Soft EM + distill=translation_vqvae:runs/multi30k/students/soft/checkpoint_best.pt" \\
        --threads 1 --out-dir results/

Writes OUT_DIR/benchmark.{md,json,png} (or --md/--json/--png). ``--merge-json`` adds per-model
results of earlier runs (their JSON files, or folders of them) for checkpoints not measured
now; their latency comes from another run and is marked as such. A run into an existing
results file adds to it: the file's models (NAME and CHECKPOINT) that this run did not
measure stay, marked the same way (``--replace-results``: this run's models only). An
existing output that is not the benchmark's own (a checkpoint given as --json, the
--models-json file) is refused before anything is measured.
"""

import argparse
import datetime
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from bench.ct2 import CT2_TASK, evaluate_ctranslate2
from bench.measure import evaluate, git_commit, hardware, log
from bench.onnx_student import ONNX_TASK, evaluate_onnx
from bench.outputs import foreign, read_results
from bench.paths import relative_paths
from bench.report import aggregate, keep_earlier, markdown, merge_earlier, plot
from bench.specs import (
    AR_BEAM_ROW,
    AR_GREEDY_ROW,
    USER_DIR,
    SpecError,
    literal_or_text,
    load_models_json,
    parse_model_spec,
)

# Rows decoded outside fairseq: their spec's TASK and how they are measured.
ENGINES = {CT2_TASK: evaluate_ctranslate2, ONNX_TASK: evaluate_onnx}

# ---------------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data-bin with the test set (and the dictionaries)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=TASK:CHECKPOINT[:K=V,...]",
        help="a model to evaluate (repeat; repeat a NAME for several seeds)",
    )
    parser.add_argument(
        "--models-json",
        type=Path,
        help='JSON list of {"name", "task", "checkpoint", "args"}',
    )
    parser.add_argument(
        "--subset", default="test", help="split to evaluate (default: test)"
    )
    parser.add_argument(
        "--ref-raw",
        type=Path,
        help="raw (untokenized) references, one per line: sacreBLEU's references",
    )
    parser.add_argument(
        "--ref-tok",
        type=Path,
        help="Moses-tokenized references for tokenized BLEU (default: binarized targets, BPE removed)",
    )
    parser.add_argument(
        "--bpe-symbol",
        default="subword_nmt",
        help="BPE to remove (fairseq post_process name; default: subword_nmt = '@@ ')",
    )
    parser.add_argument(
        "--detok",
        choices=["moses", "none"],
        default="moses",
        help="detokenizer for sacreBLEU (default: moses)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for every model (default: 1)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="default: cuda when available",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="untimed sentences before the batch-1 pass (default: 5)",
    )
    parser.add_argument(
        "--throughput-max-tokens",
        type=int,
        default=8000,
        help="tokens per batch of the throughput pass; 0 = skip (default: 8000)",
    )
    parser.add_argument(
        "--throughput-passes",
        type=int,
        default=3,
        help="whole passes of the throughput measurement; the median is reported, with min and max (default: 3)",
    )
    parser.add_argument(
        "--profile-sentences",
        type=int,
        default=0,
        help="profile this many test sentences at batch 1 with torch.profiler: ms per sentence by stage (vqvae_nat: encoder, length, latent predictor, decompressor, decoder, output, ranking; fairseq models: encoder, decoder); the profiler keeps every event, so keep N small (about 30) for autoregressive rows; 0 = skip (default)",
    )
    parser.add_argument(
        "--profile-max-tokens",
        type=int,
        default=0,
        help="profile in batches of this many tokens (whole batches until --profile-sentences are covered) instead of at batch size 1, e.g. the throughput pass's 8000; 0 = batch size 1 (default)",
    )
    parser.add_argument(
        "--ar-beam-row",
        default=AR_BEAM_ROW,
        help=f"row the speed-ups are relative to (default: {AR_BEAM_ROW!r})",
    )
    parser.add_argument(
        "--ar-greedy-row",
        default=AR_GREEDY_ROW,
        help=f"second reference row (default: {AR_GREEDY_ROW!r})",
    )
    parser.add_argument(
        "--merge-json",
        type=Path,
        action="append",
        default=[],
        help="earlier result JSON files or folders: their models join the table unless measured now",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="write benchmark.md, benchmark.json, benchmark.png here",
    )
    parser.add_argument("--md", type=Path, help="Markdown table path")
    parser.add_argument("--json", type=Path, help="JSON results path")
    parser.add_argument("--png", type=Path, help="BLEU-vs-latency plot path")
    parser.add_argument(
        "--replace-results",
        action="store_true",
        help="write this run's results only (and --merge-json's): drop the models of the existing --json/--out-dir results that this run did not measure, and write over them even when they hold more measured models than this run",
    )
    parser.add_argument(
        "--save-hyps", type=Path, help="folder for each model's detokenized hypotheses"
    )
    parser.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attach KEY=VALUE to every model record of this run (e.g. train_wall_s=1234)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="keep fairseq's INFO logging"
    )
    parser.add_argument(
        "--user-dir",
        type=Path,
        default=USER_DIR,
        help=f"fairseq plugin to import (default: {USER_DIR})",
    )
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        specs = [parse_model_spec(spec) for spec in args.model]
        if args.models_json:
            specs += load_models_json(args.models_json)
    except SpecError as err:
        parser.error(str(err))
    for (
        spec
    ) in specs:  # one name per file, so that --merge-json recognises it from any folder
        spec["checkpoint"] = str(Path(spec["checkpoint"]).absolute())
    if not specs and not args.merge_json:
        parser.error(
            "no models: pass --model NAME=TASK:CHECKPOINT (repeatable) or --models-json FILE"
        )
    meta = {}
    for item in args.meta:
        key, eq, value = item.partition("=")
        if not eq or not key:
            parser.error(f"--meta {item!r}: expected KEY=VALUE")
        meta[key] = literal_or_text(value)
    if args.out_dir:
        args.md = args.md or args.out_dir / "benchmark.md"
        args.json = args.json or args.out_dir / "benchmark.json"
        args.png = args.png or args.out_dir / "benchmark.png"
    if not (args.md or args.json or args.png):
        parser.error("nowhere to write: pass --out-dir DIR (or --md/--json/--png)")
    _check_outputs(args, parser)
    if args.throughput_passes < 1:
        parser.error("--throughput-passes must be >= 1")
    if (
        args.threads < 1
        or args.warmup < 0
        or args.throughput_max_tokens < 0
        or args.profile_sentences < 0
        or args.profile_max_tokens < 0
    ):
        parser.error(
            "--threads must be >= 1, --warmup, --throughput-max-tokens, "
            "--profile-sentences and --profile-max-tokens >= 0"
        )
    if not args.data.is_dir():
        parser.error(
            f"--data {args.data}: not a folder (the fairseq-preprocess output with the test set)"
        )
    for ref in (args.ref_raw, args.ref_tok):
        if ref is not None and not ref.is_file():
            parser.error(f"reference file {ref} not found")

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.command = (
        [sys.executable, *sys.argv] if argv is None else ["benchmark.py", *argv]
    )
    import fairseq  # noqa: F401  (configures logging on import: quieten it after)

    # fairseq's per-batch INFO lines and matplotlib's DEBUG font search drown the progress lines.
    quiet = {
        name: logging.getLogger(name)
        for name in ("fairseq", "fairseq_cli", "matplotlib")
    }
    saved_levels = {name: logger.level for name, logger in quiet.items()}
    if not args.verbose:
        for logger in quiet.values():
            logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            return _run(args, specs, meta, parser)
    finally:
        for name, logger in quiet.items():
            logger.setLevel(saved_levels[name])


def _run(args, specs, meta, parser) -> int:
    import torch
    from fairseq import tasks, utils

    torch.set_num_threads(args.threads)
    utils.import_user_module(argparse.Namespace(user_dir=str(args.user_dir.resolve())))
    plugin = sys.modules.get(args.user_dir.resolve().name)
    if hasattr(plugin, "register"):  # imported before fairseq: nothing registered yet
        plugin.register()
    for spec in specs:
        if spec["task"] not in tasks.TASK_REGISTRY and spec["task"] not in ENGINES:
            parser.error(
                f"--model {spec['name']!r}: unknown task {spec['task']!r} (e.g. translation, translation_lev, translation_vqvae, {CT2_TASK} for a translation checkpoint decoded by CTranslate2, or {ONNX_TASK} for a translation_vqvae checkpoint decoded by ONNX Runtime)"
            )
    device = (
        "cuda"
        if args.device == "cuda"
        or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU")

    started = time.perf_counter()
    run_info = {
        "hardware": hardware(device),
        "commit": git_commit(),
        "threads": args.threads,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    context = {"device": device, "run": run_info}
    records = []
    for spec in specs:
        try:
            measure = ENGINES.get(spec["task"], evaluate)
            records.append(measure(spec, args, context))
            if meta:
                records[-1]["meta"] = meta
        except Exception as err:  # noqa: BLE001  (one broken model must not lose the others' results)
            log(f"{spec['name']}: FAILED: {type(err).__name__}: {err}")
            records.append(
                {**spec, "status": "failed", "error": f"{type(err).__name__}: {err}"}
            )
    records, merged_test_set = merge_earlier(records, args.merge_json)
    earlier = _results_to_add_to(args)
    if earlier:
        records = keep_earlier(records, earlier, str(args.json))
        merged_test_set = merged_test_set or earlier["benchmark"].get("test_set", {})
    signatures = next(
        (
            (r["bleu_signature"], r["bleu_tok_signature"])
            for r in records
            if r.get("status") == "ok"
        ),
        ("?", "?"),
    )
    report = {
        "benchmark": {
            **run_info,
            "device": device,
            "warmup": args.warmup,
            "throughput_max_tokens": args.throughput_max_tokens,
            "test_set": context.get("test_set") or merged_test_set,
            "bleu_signature": signatures[0],
            "bleu_tok_signature": signatures[1],
            "ar_beam_row": args.ar_beam_row,
            "ar_greedy_row": args.ar_greedy_row,
            "command": args.command,
            "wall_s": round(time.perf_counter() - started, 2),
        },
        "rows": aggregate(records, args.ar_beam_row, args.ar_greedy_row),
        "models": records,
    }
    kept = _keep_richer_results(args, report)
    report = relative_paths(report)  # the files hold paths relative to the project root
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        log(f"wrote {args.json}")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(report), encoding="utf-8")
        log(f"wrote {args.md}")
    if args.png:
        plot(report, args.png)
        log(f"wrote {args.png}")
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        log(
            f"{len(failed)} model(s) failed: "
            + "; ".join(f"{r['name']}: {r['error']}" for r in failed)
        )
        return 1
    return 1 if kept else 0


def _measured(report: dict) -> int:
    """Models this report measured itself (not merged from earlier files, not missing)."""
    return sum(
        1
        for m in report.get("models", [])
        if m.get("status") == "ok" and "merged_from" not in m
    )


def _check_outputs(args, parser) -> None:
    """Before anything is measured: every output is a file of its own, none is an input, and
    one that exists (or its *.new.* sibling, see ``_keep_richer_results``) is the
    benchmark's own, which it writes over or adds to; it never replaces anything else."""
    inputs = {
        "--models-json": args.models_json,
        "--ref-raw": args.ref_raw,
        "--ref-tok": args.ref_tok,
    }
    seen = {}
    for name in ("json", "md", "png"):
        path = getattr(args, name)
        if path is None:
            continue
        where = path.resolve()
        for flag, source in inputs.items():
            if source is not None and where == source.resolve():
                parser.error(
                    f"--{name} {path} is the {flag} file: write the results elsewhere"
                )
        if where in seen:
            parser.error(
                f"--{seen[where]} and --{name} are both {path}: give each its own"
            )
        seen[where] = name
        for candidate in (path, path.with_name(f"{path.stem}.new{path.suffix}")):
            problem = foreign(name, candidate)
            if problem:
                parser.error(
                    f"--{name}: {candidate} exists and is {problem}; the benchmark writes "
                    f"over its own results only: give another path"
                )


def _results_to_add_to(args) -> dict | None:
    """The results file this run writes (--json), which it adds to; None without one, with
    --replace-results, or when it is no longer ours (``_keep_richer_results`` keeps it)."""
    if not args.json or args.replace_results:
        return None
    try:
        return read_results(args.json)
    except ValueError:
        return None


def _keep_richer_results(args, report: dict) -> bool:
    """A results file that holds measurements is never replaced by one with fewer (e.g. a rerun
    on a machine without the checkpoints), nor a file that is not the benchmark's (changed
    while it measured): the new files then go beside it as *.new.*.
    Returns True when it redirected them."""
    if not args.json or not args.json.exists():
        return False
    try:
        old = read_results(args.json)
    except ValueError as err:
        log(
            f"{args.json} is {err} (it changed while the benchmark ran): kept it, and "
            f"wrote the new results beside it as *.new.*"
        )
    else:
        if args.replace_results or _measured(report) >= _measured(old):
            return False
        log(
            f"{args.json} holds {_measured(old)} measured models, this run measured "
            f"{_measured(report)} (checkpoints missing?): kept it, and wrote the new results "
            f"(its models included) beside it as *.new.*; pass --replace-results to write "
            f"over it with this run's only"
        )
    for name in ("json", "md", "png"):
        path = getattr(args, name)
        if path:
            setattr(args, name, path.with_name(f"{path.stem}.new{path.suffix}"))
    return True


if __name__ == "__main__":
    sys.exit(main())
