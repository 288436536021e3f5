"""Fit the three discrete bottlenecks to 4x4x3 CIFAR-10 patches and compare them (CPU demo).

The "encoder" is the identity: each 48-dim patch is quantized directly. ``hard_em`` and
``soft_em`` learn their codebook only through EMA M-steps (Roy et al. 2018, sections 2.2 and
3.2, https://arxiv.org/abs/1805.11063); ``vqvae`` learns it as a parameter with Adam on the
codebook loss ||sg(x) - e||^2 (section 2.1). Every variant sees the same batches.

Example::

    python scripts/bottleneck_demo.py --out runs/bottleneck_demo
"""

import argparse
import json
import logging
import pickle
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fairseq_vqvae.bottleneck import BottleneckConfig, VQBottleneck, em  # noqa: E402

logger = logging.getLogger("bottleneck_demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-subset"
PATCH = 4  # 4x4 pixels x 3 channels = 48 dims
# name -> (bottleneck, restart dead codes?, codebook_init)
VARIANTS = {
    "vqvae": ("vqvae", False, "uniform"),
    "hard_em": ("hard_em", False, "uniform"),
    "hard_em+restart": ("hard_em", True, "uniform"),
    "hard_em+data_init": ("hard_em", False, "data"),
    "soft_em": ("soft_em", False, "uniform"),
    "soft_em+data_init": ("soft_em", False, "data"),
}


# (flag, type, default, help); --data, --out and --variants are added in build_parser.
OPTIONS = [
    ("--updates", int, 400, "codebook updates per variant"),
    ("--batch-size", int, 512, "patches per update"),
    ("--codebook-size", int, 64, "K codes"),
    (
        "--decay",
        float,
        0.99,
        "EMA decay of hard_em/soft_em; demo default 0.99 (time "
        "constant 100 updates) because the paper's 0.999 needs thousands of updates",
    ),
    ("--epsilon", float, 1e-5, "Laplace smoothing (paper 1e-5)"),
    ("--num-samples", int, 10, "m samples of soft_em (paper 10)"),
    ("--temperature", float, 1.0, "soft_em temperature (paper 1)"),
    (
        "--dead-code-threshold",
        float,
        1.0,
        "hard_em+restart restarts codes whose EMA "
        "count (about: uses per update) is below this, from patches of the batch",
    ),
    ("--lr", float, 1e-2, "Adam learning rate of vqvae's codebook"),
    ("--train-images", int, 4000, "at most this many train images"),
    ("--test-images", int, 1000, "at most this many test images"),
    ("--eval-every", int, 20, "updates between points of the held-out curve"),
    (
        "--curve-patches",
        int,
        4096,
        "held-out patches for the curve (final numbers: all)",
    ),
    ("--threads", int, 2, "torch.set_num_threads"),
    ("--seed", int, 0, "seed of the batches, the initial codebook and the sampling"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="CIFAR-10 python-pickle folder (data_batch_*, test_batch); default: "
        "../shared/data/cifar10-subset relative to the repo root",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "runs" / "bottleneck_demo",
        help="output folder for results.json and bottleneck_demo.png (created)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="NAME",
        help=f"variants to fit, from {', '.join(VARIANTS)} (default: all)",
    )
    p.add_argument(
        "--normalize",
        choices=["standardize", "unit"],
        default="standardize",
        help="standardize: per-dim zero mean, unit variance (train statistics); "
        "unit: pixels / 255 in [0, 1]",
    )
    for flag, kind, default, text in OPTIONS:
        p.add_argument(
            flag, type=kind, default=default, help=f"{text} (default {default})"
        )
    return p


def load_cifar_images(data_dir: Path, split: str, limit: int) -> np.ndarray:
    """(N, 3072) uint8 rows of R, G, B 32x32 planes from data_batch_* ("train") or test_batch."""
    pattern = "data_batch_*" if split == "train" else "test_batch"
    files = sorted(data_dir.glob(pattern))
    if not data_dir.is_dir() or not files:
        raise FileNotFoundError(
            f"CIFAR-10 {split} data ({pattern}) not found in {data_dir}; pass --data pointing "
            "to a folder in the python pickle layout (e.g. cifar-10-batches-py)"
        )
    arrays = []
    for path in files:
        with open(path, "rb") as f:
            arrays.append(
                np.asarray(pickle.load(f, encoding="bytes")[b"data"], dtype=np.uint8)
            )
    return np.concatenate(arrays)[:limit]


def to_patches(images: np.ndarray) -> torch.Tensor:
    """(N, 3072) uint8 -> (N * 64, 48) float32 non-overlapping 4x4 patches, (row, col, RGB)."""
    n = images.shape[0]
    grid = 32 // PATCH
    x = images.reshape(n, 3, grid, PATCH, grid, PATCH)  # (N, C, gy, py, gx, px)
    x = x.transpose(0, 2, 4, 3, 5, 1)  # (N, gy, gx, py, px, C)
    return torch.from_numpy(x.reshape(-1, PATCH * PATCH * 3).astype(np.float32))


def load_patches(args) -> tuple[torch.Tensor, torch.Tensor]:
    train = to_patches(load_cifar_images(args.data, "train", args.train_images))
    test = to_patches(load_cifar_images(args.data, "test", args.test_images))
    if args.normalize == "unit":
        return train / 255.0, test / 255.0
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def make_vq(
    args, bottleneck: str, restart: bool, codebook_init: str = "uniform"
) -> VQBottleneck:
    torch.manual_seed(args.seed)  # the same initial codebook for every variant
    return VQBottleneck(
        BottleneckConfig(
            bottleneck=bottleneck,
            codebook_size=args.codebook_size,
            code_dim=PATCH * PATCH * 3,
            decay=args.decay,
            epsilon=args.epsilon,
            num_samples=args.num_samples,
            temperature=args.temperature,
            dead_code_threshold=args.dead_code_threshold if restart else 0.0,
            codebook_init=codebook_init,
        )
    )


@torch.no_grad()
def evaluate(vq: VQBottleneck, x: torch.Tensor) -> dict:
    """Held-out quantization error (eval mode: nearest code) and code usage."""
    vq.eval()
    out = vq(x)
    vq.train()
    usage = torch.bincount(out.codes.flatten(), minlength=vq.config.codebook_size)
    return {
        "mse": torch.mean((out.quantized - x) ** 2).item(),
        "codes_in_use": int((usage > 0).sum()),
        "code_perplexity": em.perplexity(usage.float()).item(),
        "usage": usage.tolist(),
    }


def train_step(vq: VQBottleneck, batch: torch.Tensor, optimizer) -> None:
    if optimizer is None:  # EM variants: the M-step is the whole of training
        with torch.no_grad():
            vq.step_(vq(batch).em_stats)
        return
    optimizer.zero_grad()
    vq(batch).codebook_loss.backward()
    optimizer.step()


def fit_variant(name: str, args, train, test, batches) -> dict:
    bottleneck, restart, codebook_init = VARIANTS[name]
    vq = make_vq(args, bottleneck, restart, codebook_init)
    optimizer = (
        torch.optim.Adam(vq.parameters(), lr=args.lr) if bottleneck == "vqvae" else None
    )
    curve_x = test[: args.curve_patches]
    curve = [(0, evaluate(vq, curve_x)["mse"])]
    torch.manual_seed(args.seed + 1)  # soft_em samples and restart candidates
    start = time.perf_counter()
    for update, index in enumerate(batches, 1):
        train_step(vq, train[index], optimizer)
        if update % args.eval_every == 0 or update == len(batches):
            curve.append((update, evaluate(vq, curve_x)["mse"]))
    wall = time.perf_counter() - start
    final = evaluate(vq, test)
    ema = vq.codebook.ema_perplexity().mean().item() if vq.codebook.ema else None
    logger.info(
        "%s: held-out MSE %.4f, %d codes in use, %.1fs",
        name,
        final["mse"],
        final["codes_in_use"],
        wall,
    )
    return {
        "variant": name,
        "bottleneck": bottleneck,
        "dead_code_threshold": vq.config.dead_code_threshold,
        "codebook_init": codebook_init,
        "heldout_mse": final["mse"],
        "heldout_relative_mse": final["mse"] / test.var(0).mean().item(),
        "codes_in_use": final["codes_in_use"],
        "code_perplexity": final["code_perplexity"],
        "ema_perplexity": ema,
        "wall_time_s": wall,
        "curve": curve,
        "usage": final["usage"],
    }


def markdown_table(results: list[dict], codebook_size: int) -> str:
    lines = [
        "| variant | held-out MSE | relative MSE | codes in use | code perplexity "
        "| EMA perplexity | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ema = "n/a" if r["ema_perplexity"] is None else f"{r['ema_perplexity']:.1f}"
        lines.append(
            f"| {r['variant']} | {r['heldout_mse']:.4f} | {r['heldout_relative_mse']:.3f} "
            f"| {r['codes_in_use']}/{codebook_size} | {r['code_perplexity']:.1f} | {ema} "
            f"| {r['wall_time_s']:.1f} |"
        )
    return "\n".join(lines)


def write_plot(results: list[dict], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        steps, mse = zip(*r["curve"])
        left.plot(steps, mse, label=r["variant"])
        usage = np.sort(np.asarray(r["usage"], dtype=float))[::-1]
        right.step(
            np.arange(1, len(usage) + 1),
            usage / max(usage.sum(), 1),
            where="mid",
            label=r["variant"],
        )
    left.set(
        xlabel="update",
        ylabel="held-out quantization MSE",
        yscale="log",
        title="quantization error",
    )
    right.set(
        xlabel="code rank",
        ylabel="fraction of held-out patches",
        yscale="log",
        title="code usage (sorted)",
    )
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _setup_logging() -> None:
    # NB: importing fairseq (through fairseq_vqvae) already configured the root logger at
    # DEBUG, which makes matplotlib chatty; keep its handlers, reset the level.
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        train, test = load_patches(args)
    except FileNotFoundError as error:
        parser.error(str(error))
    logger.info(
        "%d train / %d held-out patches of %d dims (%s); EMA decay %s (paper: 0.999)",
        len(train),
        len(test),
        train.shape[1],
        args.normalize,
        args.decay,
    )
    generator = torch.Generator().manual_seed(args.seed)
    batches = torch.randint(
        len(train), (args.updates, args.batch_size), generator=generator
    )
    results = [fit_variant(name, args, train, test, batches) for name in args.variants]
    return write_outputs(args, results, len(train), len(test))


def write_outputs(args, results: list[dict], num_train: int, num_test: int) -> dict:
    """results.json, the PNG, and the Markdown table on stdout."""
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary = {
        "config": config,
        "num_train_patches": num_train,
        "num_test_patches": num_test,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    write_plot(results, args.out / "bottleneck_demo.png")
    print(
        f"K={args.codebook_size}, {args.updates} updates of {args.batch_size} patches, "
        f"decay {args.decay} (paper 0.999), {args.normalize} patches"
    )
    print(markdown_table(results, args.codebook_size))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'bottleneck_demo.png'}")
    return summary


if __name__ == "__main__":
    main()
