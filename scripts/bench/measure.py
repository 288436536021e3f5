"""The benchmark's measurements: hardware and commit, references, BLEU, batch-1 latency and
throughput of one model (``evaluate``)."""

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .specs import (
    REPO,
    apply_task_options,
    build_generation_config,
    check_known_options,
)

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


def batch_iterator(task, models, dataset, max_sentences, max_tokens):
    """The test set's batches in order, as fairseq-generate forms them."""
    from fairseq import utils

    max_positions = utils.resolve_max_positions(
        task.max_positions(), *[m.max_positions() for m in models]
    )
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

    def batches():
        return batch_iterator(task, models, dataset, max_sentences, max_tokens)

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


def test_references(args, task, data: str, context: dict):
    """(the test set of ``task``, its References): the first model's references, loaded once
    per run, and every later model's test set checked against them."""
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
    return dataset, refs


def save_hypotheses(args, spec: dict, record: dict, hyps_detok: list) -> None:
    """With --save-hyps: the detokenized hypotheses in NAME__CHECKPOINT-FOLDER.detok.txt."""
    if not args.save_hyps:
        return
    args.save_hyps.mkdir(parents=True, exist_ok=True)
    stem = "".join(
        c if c.isalnum() or c in "-_." else "_"
        for c in f"{spec['name']}__{Path(spec['checkpoint']).parent.name}"
    )
    (args.save_hyps / f"{stem}.detok.txt").write_text(
        "\n".join(hyps_detok) + "\n", encoding="utf-8"
    )
    record["hypotheses"] = str(args.save_hyps / f"{stem}.detok.txt")


class _Labelled:
    """Runs a module's ``forward`` under a torch.profiler label until ``remove()``. Wraps the
    method, not hooks: fairseq's search calls ``decoder.forward`` directly, past the hooks."""

    def __init__(self, module, label):
        from torch.profiler import record_function

        forward = module.forward

        def labelled(*args, **kwargs):
            with record_function(label):
                return forward(*args, **kwargs)

        self.module = module
        module.forward = labelled

    def remove(self):
        del self.module.forward  # the class's own method again


def profile_stages(
    task, generator, models, dataset, *, sentences, device, max_tokens=0
) -> dict:
    """Where the time goes: the first ``sentences`` test sentences under torch.profiler, in
    ms per sentence by stage, at batch size 1 or (``max_tokens`` > 0) in batches of that many
    tokens, whole batches until ``sentences`` are covered. vqvae_nat's generator labels its
    own stages (``fairseq_vqvae.generator.STAGES``); fairseq's models are split at their
    encoder's and decoder's forward (an AR model's decoder runs once per token; the rest is
    the search). The profiler adds its own cost per operator: compare shares, and take
    absolute times from the unprofiled measurements."""
    import itertools

    import torch
    from torch.profiler import ProfilerActivity, profile

    from fairseq_vqvae.generator import STAGES

    cuda = device == "cuda"
    if max_tokens > 0:
        samples, covered = [], 0
        for sample in batch_iterator(task, models, dataset, None, max_tokens):
            if covered >= sentences:
                break
            if "net_input" in sample:
                samples.append(sample)
                covered += sample["nsentences"]
    else:
        samples = [
            s
            for s in itertools.islice(
                batch_iterator(task, models, dataset, 1, None), sentences
            )
            if "net_input" in s
        ]
    if cuda:
        from fairseq import utils

        samples = [utils.move_to_cuda(s) for s in samples]
    model = models[0]
    hooks, labels = [], [f"vqvae_nat.{name}" for name in STAGES]
    if hasattr(model, "decoder"):  # a fairseq model: label its two halves
        hooks = [
            _Labelled(model.encoder, "fairseq.encoder"),
            _Labelled(model.decoder, "fairseq.decoder"),
        ]
        labels = ["fairseq.encoder", "fairseq.decoder"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for sample in samples:
                task.inference_step(generator, models, sample)
            if cuda:
                torch.cuda.synchronize()
            total = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    spent = {event.key: event.cpu_time_total for event in prof.key_averages()}
    n = sum(sample["nsentences"] for sample in samples)
    stages = {
        label.split(".", 1)[1]: round(spent[label] / 1000 / n, 3)
        for label in labels
        if label in spent
    }
    total_ms = 1000 * total / n
    return {
        "sentences": n,
        "batch": f"max-tokens {max_tokens}" if max_tokens > 0 else "1",
        "profiled_ms_per_sentence": round(total_ms, 3),
        "stages_ms": stages,
        "other_ms": round(total_ms - sum(stages.values()), 3),
    }


def latency_summary(ms: list, warmup: int) -> dict:
    """A row's ``latency_ms``: milliseconds per sentence at batch size 1, one per sentence."""
    return {
        "median": round(statistics.median(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
        "p90": round(sorted(ms)[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
        "total_s": round(sum(ms) / 1000, 3),
        "sentences": len(ms),
        "warmup_sentences": warmup,
        "batch_size": 1,
    }


def rate_summary(rates: list) -> dict:
    """The sentences-per-second part of a row's ``throughput``: one rate per pass."""
    return {
        "sentences_per_s": round(statistics.median(rates), 2),
        "sentences_per_s_min": round(min(rates), 2),
        "sentences_per_s_max": round(max(rates), 2),
        "passes": len(rates),
    }


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
        **rate_summary(rates),
        "max_tokens": args.throughput_max_tokens,
        "batches": len(sizes),
        "sentences": sum(sizes),
        "bleu_tok": bleu_scores(
            [detokenize(t, args.detok, task.cfg.target_lang) for t in tok], tok, refs
        )["bleu_tok"],
    }


DTYPES = ("float32", "float16", "bfloat16")


def row_dtype(name, model_args: dict):
    """The torch dtype of a fairseq row's ``dtype=`` key (fairseq-generate's --fp16 / --bf16)."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype={name!r}: expected one of {', '.join(DTYPES)}")
    if name != "float32" and model_args.get("gen_int8"):
        raise ValueError(
            f"dtype={name} with gen_int8=True: int8 weights run in float32, drop one"
        )
    return getattr(torch, name)


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
    dtype = row_dtype(model_args.pop("dtype", "float32"), model_args)
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
        # fairseq-generate's --fp16 / --bf16: model.half() / .bfloat16()
        model.to(dtype)
    record["params"] = sum(p.numel() for p in models[0].parameters())
    record["arch"] = getattr(saved_cfg.model, "arch", None) or getattr(
        saved_cfg.model, "_name", None
    )
    dataset, refs = test_references(args, task, data, context)
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
    record["latency_ms"] = latency_summary([1000.0 * s for s in seconds], args.warmup)
    hyps_tok = [texts[i] for i in range(len(dataset))]
    hyps_detok = [
        detokenize(text, args.detok, task.cfg.target_lang) for text in hyps_tok
    ]
    record.update(bleu_scores(hyps_detok, hyps_tok, refs))
    record["sentences_translated"] = len(texts)
    save_hypotheses(args, spec, record, hyps_detok)

    if args.profile_sentences > 0:
        batch = (
            f"batches of {args.profile_max_tokens} tokens"
            if args.profile_max_tokens > 0
            else "batch 1"
        )
        log(f"{spec['name']}: profile of {args.profile_sentences} sentences at {batch}")
        record["profile"] = profile_stages(
            task,
            generator,
            models,
            dataset,
            sentences=args.profile_sentences,
            device=context["device"],
            max_tokens=args.profile_max_tokens,
        )
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
