"""Result rows and the table of the recipe ablations (examples/multi30k/ablate.sh).

  python research/ablations.py row --variant ID --seed N --train-dir DIR --benchmark JSON ... --out ROW
  python research/ablations.py table ABLATIONS_DIR      (rows/*.json -> README.md, between markers)
  python research/ablations.py curves ABLATIONS_DIR --budget N --out PNG   (validation BLEU curves)
  python research/ablations.py status [RUNS_DIR]   (where each training under RUNS_DIR stands;
                                                    default runs/multi30k/ablations)
  python research/ablations.py scaling --run FRACTION=TRAIN_DIR ... --out DIR
      (a data-scaling curve: each run's validations -> DIR/scaling.json and DIR/scaling.md;
      examples/multi30k/predictor_scaling.sh)

A row holds what a recipe decision needs: validation BLEU at every validation (decisions are
taken on it, never on the test set), test BLEU, length ratio and oracle-latent BLEU from the
benchmark, latent accuracy and codes in use at the last validation, training wall time, the
commit and the exact command (its paths relative to the project root, as every path a row
records).
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# Result paths are written as scripts/benchmark.py writes them: by its bench/ package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench.paths import relative_paths  # noqa: E402
from train_log import parse_fields, progress, train_wall, validations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE_BEGIN, TABLE_END = (
    "<!-- ablation table: begin -->",
    "<!-- ablation table: end -->",
)


def _length_ratio(detail: str) -> float | None:
    match = re.search(r"ratio = ([0-9.]+)", detail or "")
    return float(match.group(1)) if match else None


def _commit() -> dict:
    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def _average(args, test_models: dict) -> dict:
    """The checkpoint average's fields (ablate.sh's KEEP_EPOCHS): its sacreBLEU beside the best
    checkpoint's on validation (decisions) and on test; none without --average-epochs."""
    if not args.average_epochs:
        return {}
    name = f"{args.variant}, average of last {args.average_epochs} epochs"
    valid = {
        m["name"]: m
        for m in json.loads(Path(args.benchmark_valid).read_text())["models"]
    }
    return {
        "average_epochs": args.average_epochs,
        "valid_sacrebleu_best_checkpoint": valid[args.variant].get("bleu"),
        "valid_sacrebleu_average": valid[name].get("bleu"),
        "test_bleu_average": test_models[name].get("bleu"),
    }


def make_row(args) -> dict:
    train_dir = Path(args.train_dir)
    log_text = (train_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    valid = validations(log_text)
    if not valid:
        raise SystemExit(
            f"ablations.py: error: no validation in {train_dir / 'train.log'}"
        )
    bench = json.loads(Path(args.benchmark).read_text())
    models = {m["name"]: m for m in bench["models"]}
    model = models[args.variant]
    oracle = models.get(f"{args.variant}, oracle latents", {})
    last = valid[-1]
    command = train_dir / "command.txt"
    commits = train_dir / "train_commits.txt"
    return {
        "variant": args.variant,
        "data": args.data,
        "description": args.description,
        "flags": args.flags,
        "seed": args.seed,
        "max_update": args.max_update,
        "updates": int(last["num_updates"]),
        "valid_bleu_best": max(v.get("bleu", 0.0) for v in valid),
        "valid_bleu_last": last.get("bleu"),
        "valid_bleu_curve": [[int(v["num_updates"]), v.get("bleu")] for v in valid],
        "test_bleu": model.get("bleu"),
        "test_length_ratio": _length_ratio(model.get("bleu_detail", "")),
        "oracle_test_bleu": oracle.get("bleu"),
        "latency_ms_median": (model.get("latency_ms") or {}).get("median"),
        **_average(args, models),
        "latent_acc": last.get("latent_acc"),
        # research/latent_diagnostics.py on the best checkpoint (rows since issue 41)
        "latent_diagnostics": json.loads(Path(args.diagnostics).read_text())
        if args.diagnostics
        else None,
        "codes_in_use": last.get("codes_in_use", last.get("code_usage")),  # older logs
        "code_perplexity": last.get("code_perplexity"),
        "train_wall_s": train_wall(log_text),
        "hardware": bench["benchmark"]["hardware"],
        "commit": _commit(),  # of the measurement
        "train_commits": commits.read_text().split("\n")[:-1]
        if commits.exists()
        else None,
        "command": command.read_text().strip() if command.exists() else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# Converged (issue 13's rule): validation BLEU flat over the last fifth of training, i.e. the
# best validation after 80% of the updates gains at most this much on the best before.
FLAT_GAIN = 0.5


def last_fifth_gain(curve) -> float | None:
    """Best validation BLEU after 80% of the run's updates minus the best before (None when
    either part has no validation). ``curve``: [[updates, bleu], ...]."""
    points = [(u, b) for u, b in curve or [] if b is not None]
    if not points:
        return None
    split = 0.8 * max(u for u, _ in points)
    before = [b for u, b in points if u <= split]
    after = [b for u, b in points if u > split]
    if not before or not after:
        return None
    return max(after) - max(before)


def _mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"


def _gain(row: dict, average: str, best: str) -> float | None:
    if row.get(average) is None or row.get(best) is None:
        return None
    return row[average] - row[best]


def _average_gain(group: list[dict]) -> str:
    """'+0.40 / +0.25 (5 epochs)': the checkpoint average's sacreBLEU minus the best
    checkpoint's on validation and on test, mean over seeds; '-' without an average."""
    valid = [
        _gain(r, "valid_sacrebleu_average", "valid_sacrebleu_best_checkpoint")
        for r in group
    ]
    test = [_gain(r, "test_bleu_average", "test_bleu") for r in group]
    valid, test = (
        [v for v in valid if v is not None],
        [t for t in test if t is not None],
    )
    if not valid or not test:
        return "-"
    epochs = sorted({r["average_epochs"] for r in group if r.get("average_epochs")})
    return (
        f"{statistics.mean(valid):+.2f} / {statistics.mean(test):+.2f} "
        f"({','.join(map(str, epochs))} epochs)"
    )


def _diagnostic(group: list[dict], *keys: str) -> str:
    """Mean ± half-range over seeds of ``row["latent_diagnostics"][keys...]``; '-' without."""
    values = []
    for row in group:
        value = row.get("latent_diagnostics")
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return _mean_spread(values)


def _positions(group: list[dict], kind: str) -> str:
    """'all (first / middle / last)' accuracy of the predictor, mean over seeds."""
    if not any(r.get("latent_diagnostics") for r in group):
        return "-"
    parts = [
        _diagnostic(group, kind, p).split(" ")[0]
        for p in ("all", "first", "middle", "last")
    ]
    return f"{parts[0]} ({' / '.join(parts[1:])})"


def render_table(rows: list[dict]) -> str:
    groups = defaultdict(list)
    for row in rows:
        groups[(row["max_update"], row["variant"])].append(row)
    lines = [
        "| budget | variant | data | seeds | valid BLEU (best) | test BLEU | length ratio | oracle BLEU | latent acc | teacher-forced acc: all (first / middle / last) | free-running acc: all (first / middle / last) | training targets = eval codes | codes in use | train wall (min) | last-fifth gain | checkpoint average: valid / test gain | flags |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (budget, variant), group in sorted(
        groups.items(),
        key=lambda kv: (
            kv[0][0],
            -statistics.mean(r["valid_bleu_best"] for r in kv[1]),
        ),
    ):
        group.sort(key=lambda r: r["seed"])
        walls = [r["train_wall_s"] / 60 for r in group if r.get("train_wall_s")]
        lines.append(
            f"| {budget} | {variant} | {group[0]['data']} | {','.join(str(r['seed']) for r in group)} "
            f"| {_mean_spread([r['valid_bleu_best'] for r in group])} "
            f"| {_mean_spread([r['test_bleu'] for r in group])} "
            f"| {_mean_spread([r['test_length_ratio'] for r in group])} "
            f"| {_mean_spread([r['oracle_test_bleu'] for r in group])} "
            f"| {_mean_spread([r['latent_acc'] for r in group])} "
            f"| {_positions(group, 'teacher_forced')} "
            f"| {_positions(group, 'free_running')} "
            f"| {_diagnostic(group, 'training_targets', 'inputs_equal_eval')} "
            f"| {_mean_spread([r['codes_in_use'] for r in group])} "
            f"| {_mean_spread(walls)} "
            f"| {_mean_spread([last_fifth_gain(r.get('valid_bleu_curve')) for r in group])} "
            f"| {_average_gain(group)} "
            f"| `{group[0]['flags'] or '(none)'}` |"
        )
    return "\n".join(lines)


def write_table(ablations: Path) -> str:
    table = render_table(_rows(ablations))
    readme = ablations / "README.md"
    text = (
        readme.read_text()
        if readme.exists()
        else f"# Recipe ablations\n\n{TABLE_BEGIN}\n{TABLE_END}\n"
    )
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(
            f"ablations.py: error: {readme} lacks the table markers {TABLE_BEGIN} / {TABLE_END}"
        )
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    _write_atomically(readme, f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")
    return table


def _write_atomically(path: Path, text: str) -> None:
    """Rows of several runs finishing at once (converged.sh PARALLEL) each rewrite the table:
    a reader never sees a half-written row or table (the temporary name matches no *.json)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _rows(ablations: Path) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((ablations / "rows").glob("*.json"))
    ]


def plot_curves(
    rows: list[dict],
    budget: int,
    out: Path,
    panels: list[list[str]] | None = None,
    title: str | None = None,
) -> int:
    """Validation BLEU against updates of every row of one budget, one line per run (one
    colour per variant, one line style per seed) -> ``out``; the number of runs drawn.
    ``panels``: one plot per list of variants (one claim's comparison each, side by side)
    instead of every row in one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(
        (r for r in rows if r["max_update"] == budget and r.get("valid_bleu_curve")),
        key=lambda r: (r["variant"], r["seed"]),
    )
    missing = sorted(
        {v for panel in panels or () for v in panel} - {r["variant"] for r in runs}
    )
    if missing:
        raise SystemExit(
            f"ablations.py: error: no row of {budget} updates with a validation curve "
            f"for {', '.join(missing)}: check the names against rows/*.json or train it "
            "(examples/multi30k/ablate.sh)"
        )
    if not runs:
        raise SystemExit(
            f"ablations.py: error: no row of {budget} updates with a validation curve: "
            "train one first (examples/multi30k/ablate.sh or converged.sh train)"
        )
    groups = (
        [[r for r in runs if r["variant"] in p] for p in panels] if panels else [runs]
    )
    variants = sorted({r["variant"] for group in groups for r in group})
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    styles = ["-", "--", ":", "-."]
    columns = min(len(groups), 2)
    lines = -(-len(groups) // columns)
    fig, axes = plt.subplots(
        lines,
        columns,
        figsize=(7 if columns == 1 else 11, 4.5 if lines == 1 else 3.6 * lines),
        squeeze=False,
    )
    for ax, group in zip(axes.flat, groups):
        for r in group:
            points = [(u, b) for u, b in r["valid_bleu_curve"] if b is not None]
            ax.plot(
                [u for u, _ in points],
                [b for _, b in points],
                styles[(r["seed"] - 1) % len(styles)],
                color=colours[r["variant"]],
                marker=".",
                label=f"{r['variant']} seed {r['seed']} ({r['data']})",
            )
        ax.axvline(0.8 * budget, color="grey", linewidth=0.8)
        ax.set_xlabel("updates (grey line: start of the last fifth)")
        ax.set_ylabel("validation BLEU")
        if panels:
            ax.set_title(" vs ".join(dict.fromkeys(r["variant"] for r in group)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if panels else 8)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title or f"Multi30k, {budget} updates per run")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return len({id(r) for group in groups for r in group})


def _clock(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d}"


def status(runs: Path) -> str:
    """One line per training under ``runs`` (``uBUDGET/VARIANT/seedN/train.log``, the layout of
    ablate.sh): updates logged and saved (where a rerun resumes), validation BLEU, the pace of its
    last start and the time left at that pace; "done" at its budget, "stopped" when fairseq-train
    ended before it (a rerun resumes it)."""
    runs_found = sorted(
        (int(log.parents[2].name[1:]), log.parents[1].name, log.parent.name, log)
        for log in runs.glob("u*/*/seed*/train.log")
        if log.parents[2].name[1:].isdigit()
    )
    if not runs_found:
        raise SystemExit(
            f"no training logs under {runs} (uBUDGET/VARIANT/seedN/train.log)"
        )
    lines = [
        "| run | updates / budget | saved | valid BLEU best / last | s/update | left |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for budget, variant, seed, log in runs_found:
        p = progress(log.read_text(encoding="utf-8", errors="replace"))
        bleu = (
            f"{p['best_bleu']:.2f} / {p['last_bleu']:.2f}"
            if p["best_bleu"] is not None
            else ""
        )
        rate = p["sec_per_update"]
        if p["updates"] >= budget:
            left, rate = "done", None
        elif p["finished"]:
            left, rate = "stopped", None
        else:
            left = "" if rate is None else _clock((budget - p["updates"]) * rate)
        pace = f"{rate:.2f}" if rate is not None else ""
        lines.append(
            f"| {variant} {seed} | {p['updates']} / {budget} | {p['saved']} | {bleu} | {pace} | {left} |"
        )
    return "\n".join(lines)


_TRAIN_SUMMARY = re.compile(r"\| INFO \| train \| (.*)$")


def scaling_point(fraction: float, train_dir: Path) -> dict:
    """One point of a data-scaling curve: a run on ``fraction`` of the training pairs, from its
    train.log: the validation with the best BLEU (the checkpoint fairseq keeps), the best latent
    accuracy and loss seen on validation, and the latent accuracy of its last training epoch
    (how well it fits the pairs it trains on)."""
    if not (train_dir / "train.log").is_file():
        raise SystemExit(
            f"ablations.py: error: no {train_dir}/train.log: give a fairseq-train --save-dir"
        )
    text = (train_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    valid = [v for v in validations(text) if "bleu" in v]
    if not valid:
        raise SystemExit(
            f"ablations.py: error: {train_dir}/train.log has no validation with BLEU yet"
        )
    # the last of equals: fairseq saves checkpoint_best.pt again on a tie
    best = max(reversed(valid), key=lambda v: v["bleu"])
    summaries = [
        parse_fields(m.group(1))
        for m in map(_TRAIN_SUMMARY.search, text.splitlines())
        if m
    ]
    train_acc = next(
        (t["latent_acc"] for t in reversed(summaries) if "latent_acc" in t), None
    )
    losses = [v for v in valid if "latent_loss" in v]
    lowest = min(losses, key=lambda v: v["latent_loss"]) if losses else {}
    accuracies = [v["latent_acc"] for v in valid if "latent_acc" in v]
    return {
        "fraction": fraction,
        "train_dir": str(train_dir),
        "updates": int(valid[-1]["num_updates"]),
        "best_valid_bleu": best["bleu"],
        "best_at": int(best["num_updates"]),
        "valid_latent_acc_at_best": best.get("latent_acc"),
        "valid_latent_acc_max": max(accuracies, default=None),
        "valid_latent_loss_min": lowest.get("latent_loss"),
        "valid_latent_loss_min_at": int(lowest["num_updates"]) if lowest else None,
        "train_latent_acc_last": train_acc,
        "curve": [
            [
                int(v["num_updates"]),
                v["bleu"],
                v.get("latent_acc"),
                v.get("latent_loss"),
            ]
            for v in valid
        ],
    }


def scaling_table(points: list[dict]) -> str:
    """The markdown table of a data-scaling curve, smallest fraction first."""

    def pct(value):
        return "" if value is None else f"{100 * value:.1f}%"

    lines = [
        "| training pairs | updates | valid BLEU (best, at update) | valid latent acc. at best / max "
        "| valid latent loss (min, at update) | train latent acc. (last epoch) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sorted(points, key=lambda p: p["fraction"]):
        loss = p["valid_latent_loss_min"]
        loss = "" if loss is None else f"{loss:.2f} ({p['valid_latent_loss_min_at']})"
        lines.append(
            f"| {100 * p['fraction']:g}% | {p['updates']} | {p['best_valid_bleu']:.2f} ({p['best_at']}) "
            f"| {pct(p['valid_latent_acc_at_best'])} / {pct(p['valid_latent_acc_max'])} "
            f"| {loss} "
            f"| {pct(p['train_latent_acc_last'])} |"
        )
    return "\n".join(lines)


def _scaling_run(text: str) -> tuple[float, Path]:
    fraction, sep, path = text.partition("=")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if not sep or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"expected FRACTION=TRAIN_DIR with FRACTION in (0, 1], got '{text}'"
        )
    return value, Path(path)


def _variant_list(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    if not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one variant name or more, comma-separated"
        )
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    row = sub.add_parser("row", help="one run -> one row JSON")
    for name in (
        "variant",
        "data",
        "description",
        "flags",
        "train-dir",
        "benchmark",
        "out",
    ):
        row.add_argument(
            f"--{name}", required=name not in ("description", "flags"), default=""
        )
    row.add_argument("--seed", type=int, required=True)
    row.add_argument(
        "--average-epochs",
        type=int,
        default=0,
        help="the run's last N epoch checkpoints were averaged (ablate.sh's KEEP_EPOCHS)",
    )
    row.add_argument(
        "--benchmark-valid", help="validation benchmark of the best and the average"
    )
    row.add_argument("--max-update", type=int, required=True)
    row.add_argument(
        "--diagnostics",
        help="research/latent_diagnostics.py's JSON of the best checkpoint",
    )
    table = sub.add_parser("table", help="rows/*.json -> the table in README.md")
    table.add_argument("ablations", type=Path)
    curves = sub.add_parser("curves", help="validation BLEU against updates -> PNG")
    curves.add_argument("ablations", type=Path)
    curves.add_argument(
        "--budget", type=int, required=True, help="the rows' max_update"
    )
    curves.add_argument("--out", type=Path, required=True)
    curves.add_argument(
        "--variants",
        type=_variant_list,
        action="append",
        help="comma-separated variants to draw in one panel (one claim); repeat for "
        "panels side by side (default: every row of the budget in one)",
    )
    curves.add_argument("--title", help="the figure's title")
    where = sub.add_parser(
        "status", help="where each training stands, and its time left"
    )
    where.add_argument(
        "runs", type=Path, nargs="?", default=ROOT / "runs/multi30k/ablations"
    )
    scaling = sub.add_parser(
        "scaling",
        help="a data-scaling curve: each run's validations -> JSON and a table",
    )
    scaling.add_argument(
        "--run",
        type=_scaling_run,
        action="append",
        required=True,
        help="FRACTION=TRAIN_DIR: a run on that share of the training pairs (repeat)",
    )
    scaling.add_argument(
        "--out", type=Path, required=True, help="folder for the results"
    )
    args = parser.parse_args(argv)
    if args.command == "row" and args.average_epochs and not args.benchmark_valid:
        parser.error("--average-epochs needs --benchmark-valid")
    if args.command == "row":
        # paths relative to the project root: the command keeps its meaning run from there
        result = relative_paths(make_row(args))
        _write_atomically(Path(args.out), json.dumps(result, indent=1) + "\n")
        print(
            f"{args.variant} seed {args.seed}: valid BLEU {result['valid_bleu_best']}, test BLEU {result['test_bleu']}"
        )
    elif args.command == "status":
        print(status(args.runs))
    elif args.command == "scaling":
        points = relative_paths([scaling_point(f, d) for f, d in args.run])
        args.out.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            args.out / "scaling.json", json.dumps(points, indent=1) + "\n"
        )
        table = scaling_table(points)
        _write_atomically(args.out / "scaling.md", table + "\n")
        print(table)
    elif args.command == "curves":
        count = plot_curves(
            _rows(args.ablations), args.budget, args.out, args.variants, args.title
        )
        print(f"{count} runs of {args.budget} updates -> {args.out}")
    else:
        print(write_table(args.ablations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
