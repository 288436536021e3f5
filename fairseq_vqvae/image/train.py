"""Train the CIFAR-10 VQ-VAE with a vqvae, hard_em or soft_em bottleneck.

    python -m fairseq_vqvae.image.train --data DIR --bottleneck hard_em --max-updates 1000 \\
        --save-dir runs/cifar10_hard_em

Writes ``checkpoint_last.pt`` (resumed automatically), ``metrics.json`` (test bits/dim,
MSE, codebook usage, training curve) and ``reconstructions.png`` to ``--save-dir``.
Per update: forward, loss, backward, optimizer step, then the EM M-step
(``bottleneck.step_``), as in Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 2.2.
"""

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import (
    LAST_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from .config import ImageVQVAEConfig, TrainConfig, add_arguments, from_args
from .data import CifarFormatError, load_cifar10
from .metrics import evaluate_model
from .model import ImageVQVAE
from .visualize import save_reconstructions

__all__ = ["main", "parse_args", "train"]

logger = logging.getLogger(__name__)

_LOGGED = (
    "loss",
    "recon_loss",
    "commit_loss",
    "code_perplexity",
    "codes_in_use",
    "ema_perplexity",
)


def parse_args(argv: list[str] | None = None) -> tuple[ImageVQVAEConfig, TrainConfig]:
    """Command line -> (model config, training config)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, ImageVQVAEConfig)
    add_arguments(parser, TrainConfig)
    args = parser.parse_args(argv)
    return from_args(ImageVQVAEConfig, args), from_args(TrainConfig, args)


def _batch_indices(step: int, num_images: int, config: TrainConfig) -> torch.Tensor:
    """Indices of update ``step``: epoch e is a permutation seeded by (seed, e), so the
    order depends only on the step and a resumed run sees the same batches."""
    per_epoch = max(1, num_images // config.batch_size)
    epoch, offset = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(num_images, generator=generator)
    return order[offset * config.batch_size : (offset + 1) * config.batch_size]


def _optimizer(model: ImageVQVAE, config: TrainConfig) -> torch.optim.Adam:
    """Adam; the vqvae codebook (the only codebook that is a parameter) may get its own lr."""
    codebook = list(model.bottleneck.codebook.parameters())
    ids = {id(p) for p in codebook}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    if codebook:
        groups.append({"params": codebook, "lr": config.lr * config.codebook_lr_scale})
    return torch.optim.Adam(groups, lr=config.lr)


def _restore(model, optimizer, config: TrainConfig) -> tuple[int, list[dict]]:
    """Load ``save_dir``/checkpoint_last.pt into model and optimizer if resuming."""
    path = Path(config.save_dir) / LAST_CHECKPOINT
    if not (config.resume and path.is_file()):
        return 0, []
    checkpoint = load_checkpoint(path)
    saved = ImageVQVAEConfig(**checkpoint["model_config"])
    if saved != model.config:
        raise CheckpointError(
            f"{path} was trained with {saved}, not {model.config}; use another --save-dir "
            f"or --no-resume"
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    logger.info("resumed from %s at step %d", path, checkpoint["step"])
    return checkpoint["step"], list(checkpoint["history"])


def _train_step(model: ImageVQVAE, optimizer, images: torch.Tensor) -> dict:
    """One update: loss, backward, optimizer step, then the EM M-step (no-op for vqvae)."""
    out = model(images)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    model.bottleneck.step_(out.vq.em_stats)
    values = {
        "loss": out.loss,
        "recon_loss": out.recon_loss,
        "commit_loss": out.vq.commit_loss,
    }
    values.update(out.vq.stats)
    return {k: float(v.detach()) for k, v in values.items()}


def _log_entry(step: int, window: list[dict]) -> dict:
    entry = {"step": step}
    entry.update({k: sum(w[k] for w in window) / len(window) for k in _LOGGED})
    logger.info(
        "step %d | %s", step, " | ".join(f"{k} {entry[k]:.4f}" for k in _LOGGED)
    )
    return entry


def _train_loop(
    model, optimizer, images, config: TrainConfig, start: int, history: list[dict]
):
    """Updates from ``start`` to ``config.max_updates``, logging and checkpointing."""
    device = next(model.parameters()).device
    window: list[dict] = []
    bar = tqdm(
        range(start, config.max_updates),
        initial=start,
        total=config.max_updates,
        desc="train",
        disable=not config.progress,
    )
    model.train()
    for step in bar:
        batch = images[_batch_indices(step, len(images), config)].to(device)
        window.append(_train_step(model, optimizer, batch))
        bar.set_postfix(
            loss=f"{window[-1]['loss']:.3f}", ppl=f"{window[-1]['code_perplexity']:.0f}"
        )
        done = step + 1
        if done % config.log_interval == 0 or done == config.max_updates:
            history.append(_log_entry(done, window))
            window = []
        if done % config.save_interval == 0 and done < config.max_updates:
            save_checkpoint(
                Path(config.save_dir) / LAST_CHECKPOINT,
                model,
                optimizer,
                done,
                config,
                history,
            )
    return history


def _finish(
    model, config: TrainConfig, history: list[dict], seconds: tuple[float, float]
) -> dict:
    """Test metrics -> metrics.json, and reconstructions.png, in ``save_dir``."""
    test_images, _ = load_cifar10(config.data, "test", config.max_eval_images)
    metrics = evaluate_model(model, test_images, config.eval_batch_size)
    metrics.update(
        bottleneck=model.config.bottleneck,
        updates=config.max_updates,
        seed=config.seed,
        train_seconds=seconds[0],
        train_cpu_seconds=seconds[1],
        model_config=dataclasses.asdict(model.config),
        history=history,
    )
    save_dir = Path(config.save_dir)
    with torch.no_grad():
        shown = test_images[:32].to(next(model.parameters()).device)
        means = model.likelihood.mean(model.eval()(shown).params)
    save_reconstructions(
        save_dir / "reconstructions.png", shown, means.round().to(torch.uint8)
    )
    (save_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        "test bits/dim %.4f | mse %.5f | code perplexity %.1f | codes in use %d",
        metrics["bits_per_dim"],
        metrics["reconstruction_mse"],
        metrics["code_perplexity"],
        metrics["codes_in_use"],
    )
    return metrics


def train(model_config: ImageVQVAEConfig, config: TrainConfig) -> dict:
    """Train (or resume) to ``config.max_updates`` and evaluate; returns the test metrics."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    Path(config.save_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    images, _ = load_cifar10(config.data, "train", config.max_train_images)
    model = ImageVQVAE(model_config).to(config.device)
    optimizer = _optimizer(model, config)
    step, history = _restore(model, optimizer, config)
    start, start_cpu = time.perf_counter(), time.process_time()
    if step < config.max_updates:
        history = _train_loop(model, optimizer, images, config, step, history)
    save_checkpoint(
        Path(config.save_dir) / LAST_CHECKPOINT,
        model,
        optimizer,
        max(step, config.max_updates),
        config,
        history,
    )
    seconds = (time.perf_counter() - start, time.process_time() - start_cpu)
    return _finish(model, config, history, seconds)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        level=logging.INFO,
    )
    model_config, config = parse_args(argv)
    try:
        return train(model_config, config)
    except (FileNotFoundError, CifarFormatError, CheckpointError) as error:  # to fix
        raise SystemExit(f"error: {error}") from error


if __name__ == "__main__":
    main()
