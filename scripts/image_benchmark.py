"""Benchmark vqvae / hard_em / soft_em bottlenecks on CIFAR-10 at equal budget, over seeds.

Tests the claim of Roy et al. 2018 (https://arxiv.org/abs/1805.11063, arXiv v1) that EM
training of the bottleneck improves image modelling, and of its later version that soft EM
is more stable across runs. For every bottleneck and seed it trains a VQ-VAE
(``fairseq_vqvae.image.train``), then fits a latent prior and samples
(``fairseq_vqvae.image.evaluate``). It writes to ``--out-dir``:

* ``results.json``: settings, hardware, wall and CPU time, every run's metrics, the summary;
* ``results.md``: mean +- sample std over seeds of test bits/dim and codebook usage, and
  a per-run table;
* ``summary.png``: the same as bars with the individual seeds, and the training curves.

Finished runs (their ``metrics.json`` has ``prior_bits_per_dim``) are skipped, so an
interrupted benchmark continues where it stopped.

    python scripts/image_benchmark.py --data ../shared/data/cifar10-subset --threads 1
"""

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from fairseq_vqvae.bottleneck import BOTTLENECKS, INITS
from fairseq_vqvae.image.checkpoint import LAST_CHECKPOINT
from fairseq_vqvae.image.config import EvaluateConfig, ImageVQVAEConfig, TrainConfig
from fairseq_vqvae.image.evaluate import evaluate
from fairseq_vqvae.image.train import train

logger = logging.getLogger("image_benchmark")

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = (
    "bits_per_dim",
    "prior_bits_per_dim",
    "reconstruction_bits_per_dim",
    "reconstruction_mse",
    "normalized_mse",
    "code_perplexity",
    "codes_in_use",
    "prior_nats_per_code",
    "train_seconds",
    "prior_seconds",
)
COLORS = {"vqvae": "tab:gray", "hard_em": "tab:blue", "soft_em": "tab:orange"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "cifar10-subset"),
        help="CIFAR-10 folder (cifar-10-batches-py or its parent)",
    )
    parser.add_argument("--out-dir", default=str(REPO / "runs" / "image_benchmark"))
    parser.add_argument(
        "--bottlenecks", nargs="+", default=list(BOTTLENECKS), choices=BOTTLENECKS
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--max-updates", type=int, default=1000, help="VQ-VAE updates per run"
    )
    parser.add_argument(
        "--prior-updates", type=int, default=600, help="prior updates per run"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--decay", type=float, default=0.99, help="EMA decay (paper: 0.999)"
    )
    parser.add_argument(
        "--codebook-init",
        default="uniform",
        choices=tuple(INITS),
        help="where the codes start (uniform: the paper's; data: latents of the first "
        "update); runs with data go to <bottleneck>_seed<N>_data_init",
    )
    parser.add_argument("--max-train-images", type=int, default=0, help="0 = all")
    parser.add_argument("--max-eval-images", type=int, default=0, help="0 = all")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=False
    )
    return parser.parse_args(argv)


def _finished_metrics(path: Path, max_updates: int) -> dict | None:
    """A run's metrics if it was trained for ``max_updates`` and evaluated, else None."""
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    finished = (
        metrics.get("vqvae_step") == max_updates and "prior_bits_per_dim" in metrics
    )
    return metrics if finished else None


def run_one(args: argparse.Namespace, bottleneck: str, seed: int) -> dict:
    """Train and evaluate one (bottleneck, seed), or read its finished metrics."""
    suffix = "" if args.codebook_init == "uniform" else f"_{args.codebook_init}_init"
    run_dir = Path(args.out_dir) / f"{bottleneck}_seed{seed}{suffix}"
    done = _finished_metrics(run_dir / "metrics.json", args.max_updates)
    if done is not None:
        logger.info("%s seed %d: already done", bottleneck, seed)
        return done
    model_config = ImageVQVAEConfig(
        bottleneck=bottleneck, decay=args.decay, codebook_init=args.codebook_init
    )
    train(
        model_config,
        TrainConfig(
            data=args.data,
            save_dir=str(run_dir),
            max_updates=args.max_updates,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            threads=args.threads,
            max_train_images=args.max_train_images,
            max_eval_images=args.max_eval_images,
            progress=args.progress,
            save_interval=max(1, args.max_updates // 4),
        ),
    )
    return evaluate(
        EvaluateConfig(
            checkpoint=str(run_dir / LAST_CHECKPOINT),
            data=args.data,
            prior_updates=args.prior_updates,
            seed=seed,
            threads=args.threads,
            max_train_images=args.max_train_images,
            max_eval_images=args.max_eval_images,
            progress=args.progress,
        )
    )


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per bottleneck and key: mean, sample std (0 for one seed), min, max over seeds."""
    summary = {}
    for bottleneck, metrics in runs.items():
        summary[bottleneck] = {}
        for key in SUMMARY_KEYS:
            values = [m[key] for m in metrics if key in m]
            if values:
                summary[bottleneck][key] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
    return summary


def _cell(stats: dict, key: str, digits: int) -> str:
    return f"{stats[key]['mean']:.{digits}f} ± {stats[key]['std']:.{digits}f}"


def markdown_table(summary: dict, runs: dict[str, list[dict]], seeds: list[int]) -> str:
    """The summary table (mean ± std over seeds) and one row per run."""
    lines = [
        f"Mean ± sample std over seeds {', '.join(map(str, seeds))}; test set.",
        "",
        (
            "| bottleneck | bits/dim (uniform prior) | bits/dim (learned prior) | recon. MSE "
            "| normalised MSE | code perplexity | codes in use |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for b, s in summary.items():
        lines.append(
            f"| {b} | {_cell(s, 'bits_per_dim', 3)} | {_cell(s, 'prior_bits_per_dim', 3)} | "
            f"{_cell(s, 'reconstruction_mse', 4)} | {_cell(s, 'normalized_mse', 3)} | "
            f"{_cell(s, 'code_perplexity', 1)} | {_cell(s, 'codes_in_use', 1)} |"
        )
    header = "| run | bits/dim (uniform) | bits/dim (prior) | MSE | perplexity | codes in use |"
    lines += ["", header + " train wall s |", "|---|---|---|---|---|---|---|"]
    for b, metrics in runs.items():
        for seed, m in zip(seeds, metrics):
            lines.append(
                f"| {b} seed {seed} | {m['bits_per_dim']:.3f} | {m['prior_bits_per_dim']:.3f} | "
                f"{m['reconstruction_mse']:.4f} | {m['code_perplexity']:.1f} | "
                f"{m['codes_in_use']:.0f} | {m['train_seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _bars(ax, summary: dict, key: str, title: str) -> None:
    names = list(summary)
    for i, name in enumerate(names):
        stats = summary[name][key]
        ax.bar(
            i,
            stats["mean"],
            yerr=stats["std"],
            color=COLORS.get(name),
            alpha=0.6,
            capsize=4,
        )
        ax.scatter(
            [i] * len(stats["values"]), stats["values"], color="black", s=12, zorder=3
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_title(title)
    if key.endswith("bits_per_dim"):
        low = min(min(summary[n][key]["values"]) for n in names)
        high = max(max(summary[n][key]["values"]) for n in names)
        ax.set_ylim(low - 0.1 * (high - low + 0.1), high + 0.1 * (high - low + 0.1))


def plot_summary(path: Path, summary: dict, runs: dict[str, list[dict]]) -> None:
    """Bars (mean ± std, dots = seeds) of bits/dim and usage, and training curves."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    _bars(axes[0, 0], summary, "prior_bits_per_dim", "test bits/dim, learned prior")
    _bars(axes[0, 1], summary, "bits_per_dim", "test bits/dim, uniform prior")
    _bars(axes[1, 0], summary, "codes_in_use", "codes in use on test (of 512)")
    ax = axes[1, 1]
    for name, metrics in runs.items():
        for i, m in enumerate(metrics):
            steps = [h["step"] for h in m["history"]]
            curve = [h["recon_loss"] / 0.6931471805599453 for h in m["history"]]
            ax.plot(
                steps,
                curve,
                color=COLORS.get(name),
                alpha=0.8,
                label=name if i == 0 else None,
            )
    ax.set_xlabel("update")
    ax.set_ylabel("train reconstruction bits/dim")
    ax.set_title("training curves (one line per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        level=logging.INFO,
    )
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    runs = {
        b: [run_one(args, b, seed) for seed in args.seeds] for b in args.bottlenecks
    }
    summary = summarize(runs)
    results = {
        "settings": vars(args),
        "hardware": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "wall_seconds_this_invocation": time.perf_counter() - start,
        "cpu_seconds_this_invocation": time.process_time() - start_cpu,
        "summary": summary,
        "runs": runs,
    }
    # paths relative to the project root, never the machine's (a committed result); bench/
    # sits beside this script, on the path when it runs
    from bench.paths import relative_paths

    results = relative_paths(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown_table(summary, runs, args.seeds))
    plot_summary(out_dir / "summary.png", summary, runs)
    logger.info("wrote %s\n%s", out_dir, (out_dir / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
