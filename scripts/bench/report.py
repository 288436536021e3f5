"""The benchmark's aggregation and reports: earlier results merged, rows (mean ± std over
seeds, speed-ups), Markdown and the plot."""

import json
import statistics
from pathlib import Path

from .measure import log
from .paths import from_project


def _throughput_cell(row) -> str:
    """Median sentences/s, with the range of the passes when there were several."""
    if "throughput_sentences_per_s" not in row:
        return "—"
    cell = f"{row['throughput_sentences_per_s']:.1f}"
    low, high = row.get("throughput_range", (None, None))
    return cell if low is None or low == high else f"{cell} ({low:.0f}-{high:.0f})"


# ---------------------------------------------------------------------------------------------
# Aggregation and reports


UNFINISHED = (
    ".unfinished"  # examples/multi30k/run.sh's name for a checkpoint still training
)


def _merge_key(record):
    checkpoint = record.get("checkpoint") or ""
    if checkpoint.endswith(UNFINISHED):
        checkpoint = checkpoint[: -len(UNFINISHED)]
    if checkpoint:  # recorded relative to the project root, or absolute in older files
        checkpoint = from_project(checkpoint)
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
    return _join(records, extra, _merge_key), test_set


def keep_earlier(records: list, earlier: dict, source: str) -> list:
    """Add the records of ``earlier`` (the results file this run writes over) of models this
    run did not measure: a second run into the same file adds to it.

    A model is its (name, checkpoint): this run's measurement of it replaces the earlier
    ones (with other args too); an earlier measurement takes the place of this run's missing
    or failed record; the others join the last row of their name, or the end. Kept
    measurements keep their "run" (date, commit, hardware) and get "merged_from": ``source``,
    or the file they were merged from before.
    """
    measured = {_model_key(r) for r in records if r.get("status") == "ok"}
    listed = {_model_key(r) for r in records}
    extra = {}
    for record in earlier.get("models", []):
        key = _model_key(record)
        if key in measured or (key in listed and record.get("status") != "ok"):
            continue
        if record.get("status") == "ok":
            record = {**record, "merged_from": record.get("merged_from", source)}
        extra.setdefault(key, []).append(record)
    return _join(records, extra, _model_key)


def _model_key(record):
    return _merge_key(record)[:2]


def _join(records: list, extra: dict, key) -> list:
    """``records`` with ``extra`` (key -> records) in the place of a record of the same key
    that is not "ok", or after the last record of their name (rows together), or at the end."""
    out = []
    for record in records:
        if record.get("status") != "ok" and key(record) in extra:
            out += extra.pop(key(record))  # in the missing record's place
        else:
            out.append(record)
    names = [r["name"] for r in out]
    for record in (r for group in extra.values() for r in group):  # keep rows together
        positions = [i for i, n in enumerate(names) if n == record["name"]]
        index = positions[-1] + 1 if positions else len(out)
        out.insert(index, record)
        names.insert(index, record["name"])
    return out


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


def profile_table(records: list) -> list:
    """Markdown lines: the profile of every model that has one (``--profile-sentences``), at
    batch size 1 or in batches of ``--profile-max-tokens``."""
    profiled = [r for r in records if r.get("status") == "ok" and "profile" in r]
    if not profiled:
        return []
    from fairseq_vqvae.generator import STAGES  # fairseq models: encoder and decoder

    seen = {s for r in profiled for s in r["profile"]["stages_ms"]}
    stages = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))
    first = profiled[0]["profile"]
    batch = first.get("batch", "1")
    title = "Batch-1 profile" if batch == "1" else f"Profile at {batch}"
    lines = [
        "",
        f"{title} (torch.profiler, ms per sentence over the first "
        f"{first['sentences']} test sentences; the profiler adds its own cost, "
        f"the unprofiled speed is in the first table):",
        "",
        "| Model | " + " | ".join(stages) + " | other | profiled total |",
        "|---|" + "---:|" * (len(stages) + 2),
    ]
    for r in profiled:
        prof = r["profile"]
        cells = [
            f"{prof['stages_ms'][s]:.2f}" if s in prof["stages_ms"] else "—"
            for s in stages
        ]
        cells += [f"{prof['other_ms']:.2f}", f"{prof['profiled_ms_per_sentence']:.2f}"]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


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
            "† measured in an earlier run (`--merge-json`, or kept from the results file this run added to): its latency was not measured alongside the other rows; see the JSON for that run's hardware."
        )
    missing = [(row["name"], path) for row in rows for path in row["missing"]]
    failed = [(row["name"], err) for row in rows for err in row["failed"]]
    if missing:
        lines += ["", "Missing checkpoints:"] + [
            f"- {name}: `{path}`" for name, path in missing
        ]
    if failed:
        lines += ["", "Failed:"] + [f"- {name}: {err}" for name, err in failed]
    lines += profile_table(report["models"])
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


def plot_style(row: dict, bench: dict) -> dict:
    """Marker of a row in the plot: the AR references, other baselines, this plugin's models,
    and diagnostics (oracle latents read the reference, so they are not translations)."""
    if row["name"] in (bench["ar_beam_row"], bench["ar_greedy_row"]):
        return {"fmt": "s", "color": "tab:red"}
    if row.get("task") not in (
        "translation_vqvae",
        "onnx",
    ):  # onnx: a student, exported
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
        style = plot_style(row, bench)
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
