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
parallel pass) or ``translation_vqvae`` (this plugin). KEY=VALUE pairs are generation options
(``beam=1``, ``lenpen=0.6``, ``iter_decode_with_beam=3``, ...), task/model overrides
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
now; their latency comes from another run and is marked as such.
"""

import argparse
import ast
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_vqvae"
AR_BEAM_ROW = "AR beam 4"
AR_GREEDY_ROW = "AR greedy"
TASK_DEFAULTS = {
    "translation": {"beam": 4},
    "translation_lev": {
        "iter_decode_max_iter": 0,
        "iter_decode_eos_penalty": 0.0,
        "beam": 1,
    },
    "translation_vqvae": {},
}
SPEC_HELP = 'expected NAME=TASK:CHECKPOINT[:KEY=VALUE,...], e.g. "AR greedy=translation:teacher/checkpoint_best.pt:beam=1"'


class SpecError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Model specifications


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_model_spec(spec: str) -> dict:
    """``NAME=TASK:CHECKPOINT[:KEY=VALUE,...]`` -> {"name", "task", "checkpoint", "args"}.

    NAME may contain '=' (e.g. "Soft EM m=10"), but not ':'.

    Raises:
        SpecError: with a message saying what is wrong.
    """
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise SpecError(f"--model {spec!r}: no ':' before the checkpoint; {SPEC_HELP}")
    head, checkpoint = parts[0], parts[1]
    name, eq, task = head.rpartition("=")
    if not eq or not name.strip() or not task.strip():
        raise SpecError(
            f"--model {spec!r}: the part before the first ':' must be NAME=TASK; {SPEC_HELP}"
        )
    if not checkpoint.strip():
        raise SpecError(f"--model {spec!r}: empty checkpoint path; {SPEC_HELP}")
    args = {}
    if len(parts) == 3 and parts[2].strip():
        for item in parts[2].split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise SpecError(
                    f"--model {spec!r}: extra argument {item!r} is not KEY=VALUE; {SPEC_HELP}"
                )
            args[key.strip().replace("-", "_")] = _value(value.strip())
    return {
        "name": name.strip(),
        "task": task.strip(),
        "checkpoint": checkpoint.strip(),
        "args": args,
    }


def load_models_json(path: Path) -> list:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SpecError(f"--models-json {path}: {err}") from err
    if isinstance(entries, dict) and "models" in entries:
        entries = entries["models"]
    if not isinstance(entries, list):
        raise SpecError(
            f"--models-json {path}: expected a list of {{name, task, checkpoint, args}} objects"
        )
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry.get(k)
            for k in ("name", "task", "checkpoint")
        ):
            raise SpecError(
                f"--models-json {path}: entry {i} needs non-empty string fields name, task, checkpoint"
            )
        args = entry.get("args", {}) or {}
        if not isinstance(args, dict):
            raise SpecError(
                f"--models-json {path}: entry {i}: 'args' must be an object"
            )
        specs.append(
            {
                "name": entry["name"],
                "task": entry["task"],
                "checkpoint": entry["checkpoint"],
                "args": {k.replace("-", "_"): v for k, v in args.items()},
            }
        )
    return specs


# ---------------------------------------------------------------------------------------------
# Environment


def git_commit() -> dict:
    def run(*cmd):
        return subprocess.run(
            ["git", "-C", str(REPO), *cmd],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown (not a git checkout)", "dirty": None}
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (git not available)", "dirty": None}


def hardware(device: str) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import fairseq

        info["fairseq"] = fairseq.__version__
    except (ImportError, AttributeError):
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def log(message: str) -> None:
    print(
        f"[benchmark {time.strftime('%H:%M:%S')}] {message}",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# Evaluation


class References:
    """Raw and tokenized references of the test set (from files, or from the binarized targets)."""

    def __init__(self, args, task, dataset):
        from fairseq.data import data_utils

        self.count = len(dataset)
        tgt_dict = task.target_dictionary
        binarized = None
        if not (args.ref_raw and args.ref_tok):
            binarized = [
                data_utils.post_process(
                    tgt_dict.string(dataset[i]["target"], escape_unk=True),
                    args.bpe_symbol,
                )
                for i in range(self.count)
            ]
        if args.ref_tok:
            self.tok = self._read(args.ref_tok)
            self.tok_source = str(args.ref_tok)
        else:
            self.tok = binarized
            self.tok_source = (
                f"binarized {args.subset} targets, BPE removed (no --ref-tok)"
            )
        if args.ref_raw:
            self.raw = self._read(args.ref_raw)
            self.raw_source = str(args.ref_raw)
        else:
            self.raw = [
                detokenize(line, args.detok, task.cfg.target_lang) for line in binarized
            ]
            self.raw_source = f"binarized {args.subset} targets, detokenized (no --ref-raw: not the raw references)"
            log(
                "WARNING: no --ref-raw: sacreBLEU is computed against detokenized binarized references, not the raw text"
            )

    def _read(self, path: Path) -> list:
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except OSError as err:
            raise SystemExit(
                f"benchmark: cannot read references {path}: {err}"
            ) from err
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != self.count:
            raise SystemExit(
                f"benchmark: {path} has {len(lines)} lines but the test set has {self.count} sentences: "
                f"pass the references of the same split (--subset) as --data"
            )
        return lines


_DETOKENIZERS = {}


def detokenize(text: str, mode: str, lang: str) -> str:
    if mode == "none":
        return text
    if lang not in _DETOKENIZERS:
        from sacremoses import MosesDetokenizer

        _DETOKENIZERS[lang] = MosesDetokenizer(lang=lang)
    return _DETOKENIZERS[lang].detokenize(text.split(), unescape=False)


def bleu_scores(hyps_detok, hyps_tok, refs) -> dict:
    from sacrebleu.metrics import BLEU

    sacre = BLEU()
    detok_score = sacre.corpus_score(hyps_detok, [refs.raw])
    tok = BLEU(
        tokenize="none", force=True
    )  # tokenized on purpose (the paper's number): no warning
    tok_score = tok.corpus_score(hyps_tok, [refs.tok])
    return {
        "bleu": round(detok_score.score, 2),
        "bleu_detail": str(detok_score),
        "bleu_signature": str(sacre.get_signature()),
        "bleu_tok": round(tok_score.score, 2),
        "bleu_tok_detail": str(tok_score),
        "bleu_tok_signature": str(tok.get_signature()),
    }


def build_generation_config(task_name: str, args: dict):
    """(GenerationConfig with the task's defaults and the generation keys of ``args``, the rest)."""
    from fairseq.dataclass.configs import GenerationConfig

    gen = GenerationConfig()
    fields = set(GenerationConfig.__dataclass_fields__)
    settings = {
        **TASK_DEFAULTS.get(task_name, {}),
        **{k: v for k, v in args.items() if k in fields},
    }
    for key, value in settings.items():
        setattr(gen, key, value)
    others = {k: v for k, v in args.items() if k not in fields}
    return gen, settings, others


def translate(
    task,
    generator,
    models,
    dataset,
    *,
    max_sentences,
    max_tokens,
    device,
    bpe_symbol,
    warmup=0,
    timed=True,
):
    """Translate ``dataset``; returns ({id: text with BPE removed}, [seconds per batch], [batch sizes])."""
    import torch
    from fairseq import utils
    from fairseq_cli.generate import get_symbols_to_strip_from_output

    max_positions = utils.resolve_max_positions(
        task.max_positions(), *[m.max_positions() for m in models]
    )

    def batches():
        return task.get_batch_iterator(
            dataset=dataset,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            max_positions=max_positions,
            ignore_invalid_inputs=False,
            required_batch_size_multiple=1,
            seed=1,
            num_shards=1,
            shard_id=0,
            num_workers=0,
            disable_iterator_cache=True,
        ).next_epoch_itr(shuffle=False)

    cuda = device == "cuda"
    strip = get_symbols_to_strip_from_output(generator)
    tgt_dict = task.target_dictionary
    if warmup:
        for i, sample in enumerate(batches()):
            if i >= warmup:
                break
            if "net_input" in sample:
                task.inference_step(
                    generator, models, utils.move_to_cuda(sample) if cuda else sample
                )
    texts, seconds, sizes = {}, [], []
    for sample in batches():
        if "net_input" not in sample:
            continue
        if cuda:
            sample = utils.move_to_cuda(sample)
            torch.cuda.synchronize()
        start = time.perf_counter()
        hypos = task.inference_step(generator, models, sample)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        ids = sample["id"].tolist()
        sizes.append(len(ids))
        for i, sentence_id in enumerate(ids):
            if sentence_id in texts:
                raise RuntimeError(f"sentence {sentence_id} was translated twice")
            tokens = hypos[i][0]["tokens"].int().cpu()
            texts[sentence_id] = tgt_dict.string(
                tokens, bpe_symbol, extra_symbols_to_ignore=strip
            )
    missing = set(range(len(dataset))) - set(texts)
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(dataset)} test sentences were not translated (e.g. id {min(missing)}); "
            f"fairseq dropped or skipped batches"
        )
    return texts, seconds, sizes


def check_known_options(checkpoint: Path, task_name: str, overrides: dict) -> None:
    """Refuse an override that is not an option of the checkpoint's model or task, nor of the
    task's current configuration (an option added after the checkpoint was trained).

    NB: read the checkpoint's configuration before fairseq merges the overrides into it: its
    loader copies every override into a legacy (argparse) configuration, typos included.
    """
    from fairseq import checkpoint_utils
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))["cfg"]
    known = _option_names(cfg.model) | _option_names(cfg.task) | {"data", "eval_bleu"}
    task_dataclass = TASK_DATACLASS_REGISTRY.get(task_name)
    if task_dataclass is not None:
        known |= set(task_dataclass.__dataclass_fields__)
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(
                f"unknown option {key}={value!r}: not a generation, task or model option of this checkpoint"
            )


def _option_names(section) -> set:
    """Keys of a configuration section: an omegaconf node, or the argparse Namespace in which
    fairseq keeps a legacy model's options."""
    if section is None:
        return set()
    return (
        set(vars(section))
        if hasattr(section, "__dict__") and not hasattr(section, "keys")
        else set(section.keys())
    )


def apply_task_options(task, overrides: dict) -> None:
    """Set the spec's task options (e.g. ``gen_eos``) on the loaded task.

    NB: fairseq applies ``arg_overrides`` only to the keys a checkpoint saved, so an option the
    task gained after the checkpoint was written would be dropped without a word.
    """
    from omegaconf import open_dict

    for key, value in overrides.items():
        if key in task.cfg:
            with open_dict(task.cfg):
                task.cfg[key] = value


def _throughput_cell(row) -> str:
    """Median sentences/s, with the range of the passes when there were several."""
    if "throughput_sentences_per_s" not in row:
        return "—"
    cell = f"{row['throughput_sentences_per_s']:.1f}"
    low, high = row.get("throughput_range", (None, None))
    return cell if low is None or low == high else f"{cell} ({low:.0f}-{high:.0f})"


def measure_throughput(args, task, generator, models, dataset, refs, context, name):
    """Sentences per second with --throughput-max-tokens batches: --throughput-passes whole
    passes over the test set (after one warm-up batch each); their median, min and max."""
    rates, passes = [], None
    for i in range(args.throughput_passes):
        log(
            f"{name}: throughput, --max-tokens {args.throughput_max_tokens}, "
            f"pass {i + 1}/{args.throughput_passes}"
        )
        texts, seconds, sizes = translate(
            task,
            generator,
            models,
            dataset,
            max_sentences=None,
            max_tokens=args.throughput_max_tokens,
            device=context["device"],
            bpe_symbol=args.bpe_symbol,
            warmup=1,
        )
        rates.append(len(dataset) / sum(seconds))
        passes = (texts, sizes)
    texts, sizes = passes
    tok = [texts[i] for i in range(len(dataset))]
    return {
        "sentences_per_s": round(statistics.median(rates), 2),
        "sentences_per_s_min": round(min(rates), 2),
        "sentences_per_s_max": round(max(rates), 2),
        "passes": len(rates),
        "max_tokens": args.throughput_max_tokens,
        "batches": len(sizes),
        "sentences": sum(sizes),
        "bleu_tok": bleu_scores(
            [detokenize(t, args.detok, task.cfg.target_lang) for t in tok], tok, refs
        )["bleu_tok"],
    }


def evaluate(spec: dict, args, context: dict) -> dict:
    """Load, translate at batch 1 and at large batches, score. Returns the model's record."""
    import torch
    from fairseq import checkpoint_utils

    record = {
        "name": spec["name"],
        "task": spec["task"],
        "checkpoint": spec["checkpoint"],
        "args": spec["args"],
    }
    checkpoint = Path(spec["checkpoint"])
    if not checkpoint.is_file():
        record["status"] = "missing"
        record["error"] = f"checkpoint not found: {checkpoint}"
        log(f"{spec['name']}: MISSING ({checkpoint}): skipped")
        return record
    started = time.perf_counter()
    model_args = dict(spec["args"])
    data = str(model_args.pop("data", args.data))
    teacher = model_args.pop(
        "teacher", None
    )  # a second checkpoint: the --gen-rescore teacher
    gen_cfg, gen_settings, overrides = build_generation_config(spec["task"], model_args)
    record["generation"] = gen_settings
    record["data"] = data
    overrides = {"data": data, "eval_bleu": False, **overrides}
    check_known_options(checkpoint, spec["task"], overrides)
    models, saved_cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides=overrides
    )
    if teacher:  # the --gen-rescore teacher: its own configuration, the student's task
        teachers, _ = checkpoint_utils.load_model_ensemble(
            [str(teacher)], arg_overrides={"data": data}, task=task
        )
        models = models + teachers
    trained_task = saved_cfg.task._name
    if trained_task != spec["task"]:
        raise ValueError(
            f"{checkpoint} was trained with --task {trained_task}, but the spec says {spec['task']}: "
            f"use {spec['name']}={trained_task}:{checkpoint}"
        )
    apply_task_options(task, overrides)
    for model in models:
        model.eval()
        if context["device"] == "cuda":
            model.cuda()
    record["params"] = sum(p.numel() for p in models[0].parameters())
    record["arch"] = getattr(saved_cfg.model, "arch", None) or getattr(
        saved_cfg.model, "_name", None
    )
    task.load_dataset(args.subset)
    dataset = task.dataset(args.subset)
    refs = context.get("refs")
    if refs is None:
        refs = context["refs"] = References(args, task, dataset)
        context["test_set"] = {
            "data": data,
            "subset": args.subset,
            "sentences": len(dataset),
            "source_lang": task.cfg.source_lang,
            "target_lang": task.cfg.target_lang,
            "raw_references": refs.raw_source,
            "tokenized_references": refs.tok_source,
        }
    elif len(dataset) != refs.count:
        raise ValueError(
            f"{data} {args.subset} has {len(dataset)} sentences, the first model's test set had {refs.count}"
        )
    generator = task.build_generator(models, gen_cfg)
    record["load_s"] = round(time.perf_counter() - started, 2)

    log(
        f"{spec['name']}: batch 1, {len(dataset)} sentences after {args.warmup} warm-up ({checkpoint})"
    )
    texts, seconds, sizes = translate(
        task,
        generator,
        models,
        dataset,
        max_sentences=1,
        max_tokens=None,
        device=context["device"],
        bpe_symbol=args.bpe_symbol,
        warmup=args.warmup,
    )
    assert all(size == 1 for size in sizes) and len(seconds) == len(dataset)
    ms = [1000.0 * s for s in seconds]
    record["latency_ms"] = {
        "median": round(statistics.median(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
        "p90": round(sorted(ms)[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
        "total_s": round(sum(seconds), 3),
        "sentences": len(ms),
        "warmup_sentences": args.warmup,
        "batch_size": 1,
    }
    hyps_tok = [texts[i] for i in range(len(dataset))]
    hyps_detok = [
        detokenize(text, args.detok, task.cfg.target_lang) for text in hyps_tok
    ]
    record.update(bleu_scores(hyps_detok, hyps_tok, refs))
    record["sentences_translated"] = len(texts)
    if args.save_hyps:
        args.save_hyps.mkdir(parents=True, exist_ok=True)
        stem = "".join(
            c if c.isalnum() or c in "-_." else "_"
            for c in f"{spec['name']}__{checkpoint.parent.name}"
        )
        (args.save_hyps / f"{stem}.detok.txt").write_text(
            "\n".join(hyps_detok) + "\n", encoding="utf-8"
        )
        record["hypotheses"] = str(args.save_hyps / f"{stem}.detok.txt")

    if args.throughput_max_tokens > 0:
        record["throughput"] = measure_throughput(
            args, task, generator, models, dataset, refs, context, spec["name"]
        )
    record["wall_s"] = round(time.perf_counter() - started, 2)
    record["status"] = "ok"
    record["run"] = context["run"]
    log(
        f"{spec['name']}: sacreBLEU {record['bleu']:.2f}, tok BLEU {record['bleu_tok']:.2f}, "
        f"{record['latency_ms']['median']:.1f} ms/sentence (median), "
        + (
            f"{record['throughput']['sentences_per_s']:.1f} sentences/s, "
            if "throughput" in record
            else ""
        )
        + f"{record['wall_s']:.0f}s"
    )
    del models, generator, task
    gc.collect()
    if context["device"] == "cuda":
        torch.cuda.empty_cache()
    return record


# ---------------------------------------------------------------------------------------------
# Aggregation and reports


UNFINISHED = (
    ".unfinished"  # examples/multi30k/run.sh's name for a checkpoint still training
)


def _merge_key(record):
    checkpoint = record.get("checkpoint") or ""
    if checkpoint.endswith(UNFINISHED):
        checkpoint = checkpoint[: -len(UNFINISHED)]
    return (
        record.get("name"),
        checkpoint,
        json.dumps(record.get("args", {}), sort_keys=True),
    )


def merge_earlier(records: list, paths: list) -> tuple:
    """Add ok records of earlier result JSONs whose (name, checkpoint, args) was not measured now.

    An earlier result takes the place of this run's "missing" record of the same checkpoint
    (``CKPT.unfinished`` counts as ``CKPT``); the others join the last row of their name, or
    the end. The first file that has a (name, checkpoint, args) wins.

    Returns:
        (records, test_set): the merged records, and the first merged file's test-set
        description (for a report in which nothing was measured now), or {}.
    """
    measured = {_merge_key(r) for r in records if r.get("status") == "ok"}
    files = []
    for path in paths:
        if not path.exists():
            log(f"--merge-json {path}: not found, nothing merged from it")
            continue
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    extra, test_set = {}, {}
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"benchmark: --merge-json {file}: {err}") from err
        if not isinstance(data, dict):
            continue
        for record in data.get("models", []):
            key = _merge_key(record)
            if record.get("status") != "ok" or key in measured:
                continue
            measured.add(key)
            extra.setdefault(key, []).append({**record, "merged_from": str(file)})
            test_set = test_set or data.get("benchmark", {}).get("test_set", {})
    out = []
    for record in records:
        key = _merge_key(record)
        if record.get("status") != "ok" and key in extra:
            out += extra.pop(key)  # in the missing record's place
        else:
            out.append(record)
    names = [r["name"] for r in out]
    for record in (r for group in extra.values() for r in group):  # keep rows together
        positions = [i for i, n in enumerate(names) if n == record["name"]]
        index = positions[-1] + 1 if positions else len(out)
        out.insert(index, record)
        names.insert(index, record["name"])
    return out, test_set


def _mean_std(values):
    if not values:
        return None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def aggregate(records: list, ar_beam_row: str, ar_greedy_row: str) -> list:
    rows, order = {}, []
    for record in records:
        if record["name"] not in rows:
            rows[record["name"]] = []
            order.append(record["name"])
        rows[record["name"]].append(record)
    out = []
    for name in order:
        members = rows[name]
        ok = [r for r in members if r.get("status") == "ok"]
        row = {
            "name": name,
            "checkpoints": len(members),
            "measured": len(ok),
            "missing": [
                r["checkpoint"] for r in members if r.get("status") == "missing"
            ],
            "failed": [
                f"{r['checkpoint']}: {r.get('error')}"
                for r in members
                if r.get("status") == "failed"
            ],
            "merged_from_earlier_runs": sum(1 for r in ok if "merged_from" in r),
        }
        if ok:
            for key, values in (
                ("bleu", [r["bleu"] for r in ok]),
                ("bleu_tok", [r["bleu_tok"] for r in ok]),
                ("latency_ms_median", [r["latency_ms"]["median"] for r in ok]),
                ("latency_ms_mean", [r["latency_ms"]["mean"] for r in ok]),
            ):
                mean, std = _mean_std(values)
                row[key] = round(mean, 3)
                row[key + "_std"] = round(std, 3)
                row[key + "_values"] = values
            throughputs = [
                r["throughput"]["sentences_per_s"] for r in ok if "throughput" in r
            ]
            if throughputs:
                row["throughput_sentences_per_s"] = round(
                    statistics.fmean(throughputs), 2
                )
                spread = [
                    (t.get("sentences_per_s_min"), t.get("sentences_per_s_max"))
                    for t in (r["throughput"] for r in ok if "throughput" in r)
                ]
                if all(low is not None for low, _ in spread):
                    row["throughput_range"] = [
                        min(low for low, _ in spread),
                        max(high for _, high in spread),
                    ]
            row["params"] = ok[0].get("params")
            row["task"], row["args"] = ok[0].get("task"), ok[0].get("args", {})
        out.append(row)
    by_name = {row["name"]: row for row in out}
    for row in out:
        for label, ref_name in (
            ("speedup_vs_ar_beam", ar_beam_row),
            ("speedup_vs_ar_greedy", ar_greedy_row),
        ):
            ref = by_name.get(ref_name)
            if (
                ref
                and "latency_ms_median" in ref
                and "latency_ms_median" in row
                and row["latency_ms_median"] > 0
            ):
                row[label] = round(
                    ref["latency_ms_median"] / row["latency_ms_median"], 2
                )
    return out


def _fmt(row, key, digits=2):
    if key not in row:
        return "—"
    text = f"{row[key]:.{digits}f}"
    if row["measured"] > 1:
        text += f" ± {row[key + '_std']:.{digits}f}"
    return text


def markdown(report: dict) -> str:
    bench, rows = report["benchmark"], report["rows"]
    hw = bench["hardware"]
    test = bench.get("test_set", {})
    lines = [
        "# Benchmark",
        "",
        (
            f"Test set: `{test.get('data', '?')}` `{test.get('subset', '?')}`, {test.get('sentences', '?')} sentences, "
            f"{test.get('source_lang', '?')}→{test.get('target_lang', '?')}."
        ),
        "",
        f"| Model | n | sacreBLEU | tok BLEU | ms/sent. b=1 (median) | ms/sent. (mean) | × vs {bench['ar_beam_row']} | × vs {bench['ar_greedy_row']} | sent./s (max-tokens {bench['throughput_max_tokens']}) | params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["measured"] == 0:
            why = "missing" if row["missing"] else "failed"
            lines.append(
                f"| {row['name']} | 0/{row['checkpoints']} | {why} | — | — | — | — | — | — | — |"
            )
            continue
        n = f"{row['measured']}" + (
            f"/{row['checkpoints']}" if row["measured"] != row["checkpoints"] else ""
        )
        marker = " †" if row["merged_from_earlier_runs"] else ""
        cells = [
            f"{row['name']}{marker}",
            n,
            _fmt(row, "bleu"),
            _fmt(row, "bleu_tok"),
            _fmt(row, "latency_ms_median", 1),
            _fmt(row, "latency_ms_mean", 1),
            f"{row['speedup_vs_ar_beam']:.2f}" if "speedup_vs_ar_beam" in row else "—",
            f"{row['speedup_vs_ar_greedy']:.2f}"
            if "speedup_vs_ar_greedy" in row
            else "—",
            _throughput_cell(row),
            f"{row['params'] / 1e6:.2f}M" if row.get("params") else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "n = checkpoints (seeds) measured; several: mean ± standard deviation. Speed-ups use the median batch-1 latency.",
        f"sacreBLEU: detokenized output against the raw references ({test.get('raw_references', '?')}); signature `{bench.get('bleu_signature', '?')}`.",
        f"tok BLEU: Moses-tokenized, BPE-removed output against {test.get('tokenized_references', '?')}; signature `{bench.get('bleu_tok_signature', '?')}`.",
        (
            f"Latency: every sentence of the test set at batch size 1 after {bench['warmup']} warm-up sentences; "
            f"`task.inference_step` timed with `time.perf_counter`{' and `torch.cuda.synchronize`' if hw['device'] == 'cuda' else ''}."
        ),
        (
            f"Hardware: {hw.get('cpu_model', hw['processor'])} ({hw['cpu_count']} logical CPUs), {hw.get('gpu', 'no GPU')}, "
            f"device {hw['device']}, torch {hw['torch']} with {bench['threads']} thread(s), {hw['platform']}."
        ),
        (
            f"Commit: `{bench['commit']['commit']}`{' (uncommitted changes)' if bench['commit'].get('dirty') else ''}; "
            f"date {bench['date']}; wall time {bench['wall_s']:.0f}s."
        ),
    ]
    if any(row["merged_from_earlier_runs"] for row in rows):
        lines.append(
            "† measured in an earlier run (`--merge-json`): its latency was not measured alongside the other rows; see the JSON for that run's hardware."
        )
    missing = [(row["name"], path) for row in rows for path in row["missing"]]
    failed = [(row["name"], err) for row in rows for err in row["failed"]]
    if missing:
        lines += ["", "Missing checkpoints:"] + [
            f"- {name}: `{path}`" for name, path in missing
        ]
    if failed:
        lines += ["", "Failed:"] + [f"- {name}: {err}" for name, err in failed]
    lines += [
        "",
        "Per checkpoint:",
        "",
        "| Model | checkpoint | sacreBLEU | tok BLEU | ms median | ms mean | sent./s | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["models"]:
        if r.get("status") != "ok":
            lines.append(
                f"| {r['name']} | `{r['checkpoint']}` | {r.get('status')} | | | | | |"
            )
            continue
        tp = r.get("throughput", {}).get("sentences_per_s")
        lines.append(
            f"| {r['name']} | `{r['checkpoint']}` | {r['bleu']:.2f} | {r['bleu_tok']:.2f} | {r['latency_ms']['median']:.1f} | "
            f"{r['latency_ms']['mean']:.1f} | {tp if tp is not None else '—'} | {r.get('wall_s', '—')} |"
        )
    return "\n".join(lines) + "\n"


def _plot_style(row: dict, bench: dict) -> dict:
    """Marker of a row in the plot: the AR references, other baselines, this plugin's models,
    and diagnostics (oracle latents read the reference, so they are not translations)."""
    if row["name"] in (bench["ar_beam_row"], bench["ar_greedy_row"]):
        return {"fmt": "s", "color": "tab:red"}
    if row.get("task") != "translation_vqvae":
        return {"fmt": "^", "color": "tab:gray"}
    if row.get("args", {}).get("gen_oracle_latents"):
        return {"fmt": "o", "color": "tab:blue", "markerfacecolor": "none"}
    return {"fmt": "o", "color": "tab:blue"}


def plot(report: dict, path: Path) -> None:
    """BLEU against batch-1 latency. Points carry their row's number in the table; the legend
    beside the axes names them (names next to the points overlap once rows crowd together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = report["benchmark"]
    numbered = [
        (i, row)
        for i, row in enumerate(report["rows"], 1)
        if "bleu" in row and row.get("latency_ms_median", 0) > 0
    ]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for number, row in numbered:
        style = _plot_style(row, bench)
        ax.errorbar(
            row["latency_ms_median"],
            row["bleu"],
            yerr=row["bleu_std"] if row["measured"] > 1 else None,
            capsize=3,
            markersize=6,
            linestyle="none",
            label=f"{number}. {row['name']}",
            **style,
        )
        ax.annotate(
            str(number),
            (row["latency_ms_median"], row["bleu"]),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=7,
        )
    if numbered:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(
            LogLocator(base=10, subs=(1.0, 2.0, 5.0))
        )  # 10, 20, 50, 100, ...
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        latencies = [row["latency_ms_median"] for _, row in numbered]
        ax.set_xlim(min(latencies) / 1.2, max(latencies) * 1.3)
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=7,
            frameon=False,
            title="square: AR; triangle: other baselines;\nhollow: diagnostic, not a translation",
            title_fontsize=7,
            alignment="left",
        )
    hw = bench["hardware"]
    ax.set_xlabel(
        f"latency, ms per sentence at batch 1 (median; {hw['device']}, {bench['threads']} thread(s))"
    )
    ax.set_ylabel("sacreBLEU (detokenized)")
    test = bench.get("test_set", {})
    ax.set_title(
        f"BLEU vs latency, {test.get('sentences', '?')} test sentences (error bars: std over seeds)"
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
        help="overwrite --json/--out-dir results even when they hold more measured models than this run",
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
        meta[key] = _value(value)
    if args.out_dir:
        args.md = args.md or args.out_dir / "benchmark.md"
        args.json = args.json or args.out_dir / "benchmark.json"
        args.png = args.png or args.out_dir / "benchmark.png"
    if not (args.md or args.json or args.png):
        parser.error("nowhere to write: pass --out-dir DIR (or --md/--json/--png)")
    if args.throughput_passes < 1:
        parser.error("--throughput-passes must be >= 1")
    if args.threads < 1 or args.warmup < 0 or args.throughput_max_tokens < 0:
        parser.error(
            "--threads must be >= 1, --warmup and --throughput-max-tokens >= 0"
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
    for spec in specs:
        if spec["task"] not in tasks.TASK_REGISTRY:
            parser.error(
                f"--model {spec['name']!r}: unknown task {spec['task']!r} (e.g. translation, translation_lev, translation_vqvae)"
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
            records.append(evaluate(spec, args, context))
            if meta:
                records[-1]["meta"] = meta
        except Exception as err:  # noqa: BLE001  (one broken model must not lose the others' results)
            log(f"{spec['name']}: FAILED: {type(err).__name__}: {err}")
            records.append(
                {**spec, "status": "failed", "error": f"{type(err).__name__}: {err}"}
            )
    records, merged_test_set = merge_earlier(records, args.merge_json)
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


def _keep_richer_results(args, report: dict) -> bool:
    """A results file that holds measurements is never replaced by one with fewer (e.g. a rerun
    on a machine without the checkpoints): the new files then go beside it as *.new.*.
    Returns True when it redirected them."""
    if not args.json or not args.json.exists() or args.replace_results:
        return False
    try:
        old = json.loads(args.json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if _measured(report) >= _measured(old):
        return False
    log(
        f"{args.json} holds {_measured(old)} measured models, this run measured {_measured(report)} "
        f"(checkpoints missing?): kept it, and wrote the new results beside it as *.new.*; "
        f"pass --replace-results to overwrite"
    )
    for name in ("json", "md", "png"):
        path = getattr(args, name)
        if path:
            setattr(args, name, path.with_name(f"{path.stem}.new{path.suffix}"))
    return True


if __name__ == "__main__":
    sys.exit(main())
