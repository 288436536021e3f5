"""A fairseq data-bin whose training split is a random fraction of another's.

  python research/subset_data_bin.py DATA_BIN OUT --fraction 0.25 [--seed 1] [--split train]

The chosen sentence pairs (the same for every language of the pair, in their original order)
are written as a new binarized split with fairseq's own dataset builder; the dictionaries and
every other split are links to DATA_BIN's files, so that validation and test stay the same.
A smaller fraction with the same seed is a subset of a larger one (one random order, cut at
each fraction), so that a data-scaling curve adds data rather than swapping it. OUT/subset.json,
written last, records what was cut; a rerun replaces a folder this script wrote, and refuses any
other.

Why: fairseq-preprocess binarizes text, and fairseq-train has no option that trains on part of a
split; this measures how a model's held-out scores grow with its training pairs (README, "How
the latent predictor scales with its training pairs").
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

MARKER = "subset.json"  # written last: what was cut, from where


def fail(message: str):
    raise SystemExit(f"subset_data_bin.py: error: {message}")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got '{text}'")
    return value


def split_files(data_bin: Path, split: str) -> dict[str, Path]:
    """{language: prefix} of ``split``'s binarized files in ``data_bin`` (SPLIT.SRC-TGT.LANG)."""
    prefixes = {}
    for idx in sorted(data_bin.glob(f"{split}.*.idx")):
        parts = idx.name.split(".")  # split, pair, lang, idx
        if len(parts) == 4 and (idx.with_suffix(".bin")).is_file():
            prefixes[parts[2]] = idx.with_suffix("")
    return prefixes


def chosen(size: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction * size) pairs (at least 1): a prefix of one permutation
    per seed, so that smaller fractions are subsets of larger ones."""
    count = max(1, round(fraction * size))
    order = np.random.RandomState(seed).permutation(size)
    return np.sort(order[:count])


def _written_here(out: Path) -> bool:
    """Whether ``out`` was written by this script: its marker, or (before the marker) only
    links and binarized files."""
    return (out / MARKER).is_file() or all(
        p.is_symlink() or p.suffix in (".bin", ".idx") for p in out.iterdir()
    )


def subset(data_bin: Path, out: Path, fraction: float, seed: int, split: str) -> int:
    """Write OUT whole (built beside it, then renamed, so that an interrupted run leaves no
    half-written folder; MARKER last); return the number of pairs kept."""
    from fairseq.data import indexed_dataset

    prefixes = split_files(data_bin, split)
    if not prefixes:
        fail(
            f"no binarized '{split}' split in {data_bin} ({split}.SRC-TGT.LANG.bin/.idx): "
            "give a folder written by fairseq-preprocess"
        )
    shards = sorted(p.name for p in data_bin.glob(f"{split}[0-9]*.*.idx"))
    if shards:
        fail(
            f"{data_bin} has further shards of '{split}' ({', '.join(shards)}), which "
            "fairseq-train would read in full: cut a data-bin without them"
        )
    source, target = data_bin.resolve(), out.resolve()
    if target == source or source in target.parents:
        fail("OUT must be a folder outside DATA_BIN")
    if out.exists() and not (out.is_dir() and _written_here(out)):
        fail(
            f"{out} exists and was not written by subset_data_bin.py: give a new folder"
        )
    datasets = {
        lang: indexed_dataset.MMapIndexedDataset(str(prefix))
        for lang, prefix in prefixes.items()
    }
    sizes = {lang: len(ds) for lang, ds in datasets.items()}
    if len(set(sizes.values())) != 1:
        fail(f"the languages of '{split}' have different sizes: {sizes}")
    size = next(iter(sizes.values()))
    keep = chosen(size, fraction, seed)
    building = out.parent / f".{out.name}.partial"
    if building.exists():
        shutil.rmtree(
            building
        )  # an interrupted run's (links are removed, not followed)
    building.mkdir(parents=True)
    for path in data_bin.iterdir():  # everything else: links
        if not (path.name.startswith(f"{split}.") and path.suffix in (".bin", ".idx")):
            link = building / path.name  # relative to OUT, where it ends up
            link.symlink_to(os.path.relpath(path.resolve(), target))
    for lang, ds in datasets.items():
        prefix = str(building / prefixes[lang].name)
        builder = indexed_dataset.MMapIndexedDatasetBuilder(
            prefix + ".bin", dtype=ds._index.dtype
        )
        for i in keep.tolist():
            builder.add_item(ds[i])
        builder.finalize(prefix + ".idx")
    record = dict(
        data_bin=str(source),
        split=split,
        fraction=fraction,
        seed=seed,
        pairs=len(keep),
        of=size,
    )
    (building / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    building.rename(out)
    return len(keep)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_bin", type=Path, help="a fairseq-preprocess folder")
    parser.add_argument("out", type=Path, help="the new folder (created)")
    parser.add_argument(
        "--fraction", type=_fraction, required=True, help="share of pairs, in (0, 1]"
    )
    parser.add_argument("--seed", type=int, default=1, help="the random order's seed")
    parser.add_argument("--split", default="train", help="the split to cut (train)")
    args = parser.parse_args(argv)
    if not args.data_bin.is_dir():
        fail(f"{args.data_bin} is not a folder")
    kept = subset(args.data_bin, args.out, args.fraction, args.seed, args.split)
    print(f"{kept} sentence pairs of '{args.split}' -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
