"""PNG grids of images (reconstructions, samples), written with matplotlib's Agg backend."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never open a window
import matplotlib.image
import torch

__all__ = ["image_grid", "save_image_grid", "save_reconstructions"]


def image_grid(
    images: torch.Tensor, columns: int = 0, padding: int = 2
) -> torch.Tensor:
    """Tile uint8 (N, 3, H, W) images into one uint8 (rows*(H+p)+p, cols*(W+p)+p, 3) array.

    ``columns`` = 0 picks a square-ish grid; the padding is white.
    """
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = torch.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c),
        255,
        dtype=torch.uint8,
    )
    for i in range(n):
        top = padding + (i // columns) * (h + padding)
        left = padding + (i % columns) * (w + padding)
        grid[top : top + h, left : left + w] = images[i].permute(1, 2, 0)
    return grid


def save_image_grid(
    path: str | Path, images: torch.Tensor, columns: int = 0, scale: int = 2
) -> None:
    """Write uint8 (N, 3, H, W) images as one PNG, each pixel repeated ``scale`` times."""
    grid = image_grid(images.detach().cpu().to(torch.uint8), columns)
    grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(str(path), grid.numpy())


def save_reconstructions(
    path: str | Path,
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    columns: int = 8,
) -> None:
    """Rows alternate originals and their reconstructions, ``columns`` images per row."""
    count = min(len(originals), len(reconstructions))
    columns = max(1, min(columns, count))
    n = (count // columns) * columns
    pairs = []
    for start in range(0, n, columns):
        pairs += [
            originals[start : start + columns],
            reconstructions[start : start + columns],
        ]
    save_image_grid(path, torch.cat(pairs), columns=columns)
