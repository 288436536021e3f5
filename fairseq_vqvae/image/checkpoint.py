"""Checkpoints of the image VQ-VAE: everything needed to resume training exactly.

A checkpoint is a dict of tensors and plain python values (loadable with
``torch.load(weights_only=True)``): ``model`` (parameters and the codebook's EM buffers),
``optimizer``, ``step`` (updates done), ``model_config``, ``train_config``, ``rng`` (torch's
CPU generator, which drives soft-EM sampling) and ``history`` (the logged training curve).
"""

import dataclasses
import logging
import os
import pickle
from pathlib import Path

import torch

from .config import ImageVQVAEConfig
from .model import ImageVQVAE

__all__ = [
    "LAST_CHECKPOINT",
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "checkpoint_last.pt"
_KEYS = ("model", "optimizer", "step", "model_config", "rng", "history")


class CheckpointError(ValueError):
    """A checkpoint file that is not this trainer's, is damaged, or belongs to another model."""


def save_checkpoint(
    path: str | Path,
    model: ImageVQVAE,
    optimizer: torch.optim.Optimizer,
    step: int,
    train_config,
    history: list[dict],
) -> None:
    """Write a checkpoint atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "model_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(train_config),
        "rng": {"torch": torch.get_rng_state()},
        "history": history,
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    logger.info("saved %s (step %d)", path, step)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint onto the CPU (tensors and plain values only).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is truncated, or not a checkpoint of this trainer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; train one with fairseq_vqvae.image.train"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as error:
        raise CheckpointError(
            f"{path} is truncated or not a torch checkpoint ({type(error).__name__}); "
            f"delete it to start afresh, or pass another --save-dir"
        ) from error
    missing = [key for key in _KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of fairseq_vqvae.image.train (it lacks "
            f"{', '.join(missing)}); pass another --save-dir"
        )
    return state


def load_model(path: str | Path, device: str = "cpu") -> tuple[ImageVQVAE, dict]:
    """Rebuild the VQ-VAE of a checkpoint, in eval mode on ``device``.

    Returns:
        ``(model, checkpoint)``, the latter as returned by :func:`load_checkpoint`.
    """
    checkpoint = load_checkpoint(path)
    model = ImageVQVAE(ImageVQVAEConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint
