"""Read (and, for tests and tools, write) CIFAR-10 in the official python pickle layout.

Layout (https://www.cs.toronto.edu/~kriz/cifar.html): a folder ``cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``. Each batch is a
pickled dict with ``b"data"``, a uint8 array (N, 3072) holding the red, then green, then
blue 32x32 plane of each image in row-major order, and ``b"labels"``, N ints in 0..9.
NB: pickle can run code; only read files from a source you trust.
"""

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CifarFormatError",
    "find_batch_dir",
    "load_cifar10",
    "read_batch",
    "write_batch",
]

logger = logging.getLogger(__name__)

IMAGE_SHAPE = (3, 32, 32)  # (C, H, W)
NUM_CLASSES = 10
_DOWNLOAD_HINT = (
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and pass the "
    "extracted cifar-10-batches-py folder (or its parent) as --data"
)


class CifarFormatError(ValueError):
    """A batch file exists but is not a readable CIFAR-10 python batch."""


def _has_batches(folder: Path) -> bool:
    return (folder / "test_batch").is_file() or any(folder.glob("data_batch_*"))


def find_batch_dir(root: str | Path) -> Path:
    """The folder holding the batch files: ``root`` itself or ``root/cifar-10-batches-py``.

    Raises:
        FileNotFoundError: neither folder has a ``data_batch_*`` or ``test_batch`` file.
    """
    root = Path(root)
    for folder in (root, root / "cifar-10-batches-py"):
        if folder.is_dir() and _has_batches(folder):
            return folder
    state = (
        "does not exist"
        if not root.exists()
        else "has no data_batch_* or test_batch files"
    )
    raise FileNotFoundError(f"CIFAR-10 folder {root} {state}; {_DOWNLOAD_HINT}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
    ) as error:
        raise CifarFormatError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}); "
            f"re-extract it from cifar-10-python.tar.gz"
        ) from error
    except ImportError as error:  # a pickle of objects from a module not installed here
        raise CifarFormatError(
            f"{path} is not a CIFAR-10 batch: it pickles objects of a module that is not "
            f"installed ({error}); a batch holds only arrays, lists and bytes"
        ) from error
    if not isinstance(batch, dict):
        raise CifarFormatError(
            f"{path} holds a {type(batch).__name__}, not a CIFAR-10 dict"
        )
    # Python-2 pickles give bytes keys, files written by Python 3 may give str keys.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_batch(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one batch file.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,).

    Raises:
        CifarFormatError: unreadable file, missing keys, wrong dtype or shape, bad labels.
    """
    path = Path(path)
    batch = _unpickle(path)
    missing = {"data", "labels"} - set(batch)
    if missing:
        raise CifarFormatError(
            f"{path} lacks the keys {sorted(missing)} of a CIFAR-10 batch"
        )
    try:
        data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    except ValueError as error:  # numpy refuses ragged nested lists
        raise CifarFormatError(
            f"{path}: 'data' and 'labels' must be rectangular arrays, not ragged lists "
            f"({error})"
        ) from error
    dims = int(np.prod(IMAGE_SHAPE))
    if data.ndim != 2 or data.shape[1] != dims or data.dtype != np.uint8:
        raise CifarFormatError(
            f"{path}: 'data' must be a uint8 array of shape (N, {dims}), "
            f"got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise CifarFormatError(
            f"{path}: 'labels' must hold one label per image ({data.shape[0]}), "
            f"got shape {labels.shape}"
        )
    if labels.size and labels.dtype.kind not in "iu":  # floats would be cut to integers
        raise CifarFormatError(
            f"{path}: labels must be integers in 0..{NUM_CLASSES - 1}, got {labels.dtype} "
            f"values such as {labels.flat[0]!r}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise CifarFormatError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}")
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _batch_files(folder: Path, split: str) -> list[Path]:
    if split == "test":
        files = [folder / "test_batch"]
    elif split == "train":
        files = sorted(folder.glob("data_batch_*"), key=lambda p: p.name)
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not files or not files[0].is_file():
        raise FileNotFoundError(
            f"no {split} batch in {folder} (expected "
            f"{'test_batch' if split == 'test' else 'data_batch_1 .. data_batch_5'}); "
            f"{_DOWNLOAD_HINT}"
        )
    return files


def load_cifar10(
    root: str | Path, split: str, max_images: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split: every ``data_batch_*`` ("train") or ``test_batch`` ("test").

    Args:
        root: ``cifar-10-batches-py`` or a folder containing it.
        split: "train" or "test".
        max_images: keep only the first N images; 0 keeps all.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) in 0..255 and int64 (N,).
    """
    folder = find_batch_dir(root)
    parts = [read_batch(path) for path in _batch_files(folder, split)]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    if max_images > 0:
        images, labels = images[:max_images], labels[:max_images]
    if not len(images):
        raise CifarFormatError(
            f"the {split} split in {folder} has no images: its batch files hold 0 rows"
        )
    logger.info(
        "CIFAR-10 %s: %d images from %d file(s) in %s",
        split,
        len(images),
        len(parts),
        folder,
    )
    return images, labels


def write_batch(path: str | Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Write uint8 (N, 3, 32, 32) images and (N,) labels as an official-layout batch file."""
    images = images.to(torch.uint8).cpu().numpy()
    batch = {
        b"batch_label": Path(path).name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": images.reshape(images.shape[0], -1),
        b"filenames": [f"{i}.png".encode() for i in range(images.shape[0])],
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
