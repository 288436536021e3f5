"""Evaluate a trained CIFAR-10 VQ-VAE, fit an autoregressive prior over its codes, sample.

    python -m fairseq_vqvae.image.evaluate --checkpoint runs/cifar10_hard_em/checkpoint_last.pt \\
        --data DIR

Adds to ``metrics.json`` (in ``--out-dir``, default the checkpoint's folder) the prior's
``prior_bits_per_dim`` = (reconstruction NLL + prior NLL of the codes) / (3072 ln 2) on the
test set, and writes ``prior.pt`` (loaded instead of trained with ``--reuse-prior``),
``samples.png`` (decoder means of sampled code grids) and
``samples_pixels.png`` (pixels drawn from the decoder's likelihood).
"""

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_model
from .config import EvaluateConfig, PriorConfig, add_arguments, from_args
from .data import CifarFormatError, load_cifar10
from .metrics import batches, encode_codes, evaluate_model
from .model import ImageVQVAE
from .prior import LatentPrior, train_prior
from .visualize import save_image_grid

__all__ = ["evaluate", "main", "parse_args", "prior_metrics"]

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> EvaluateConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, EvaluateConfig)
    return from_args(EvaluateConfig, parser.parse_args(argv))


def _load_or_train_prior(
    model: ImageVQVAE, train_codes: torch.Tensor, config: EvaluateConfig, out_dir: Path
) -> tuple[LatentPrior, list[float]]:
    """A new prior fitted to ``train_codes`` (saved as ``out_dir``/prior.pt), or that file."""
    length = train_codes[0].numel()
    prior = LatentPrior(model.config.codebook_size, length, config).to(config.device)
    path = out_dir / "prior.pt"
    if config.reuse_prior:
        prior.load_state_dict(
            torch.load(path, map_location=config.device, weights_only=True)
        )
        logger.info("loaded the prior from %s", path)
        return prior.eval(), []
    losses = train_prior(
        prior, train_codes.to(config.device), config, config.seed, config.progress
    )
    torch.save(prior.state_dict(), path)
    return prior.eval(), losses


@torch.no_grad()
def prior_metrics(
    prior: LatentPrior,
    test_codes: torch.Tensor,
    reconstruction_nll: float,
    batch_size: int = 250,
    num_dims: int = 3072,
) -> dict:
    """bits/dim with the learned prior, from the mean reconstruction NLL (nats per image)."""
    device = prior.position.device
    nll = sum(
        prior.nll(b.to(device)).double().sum().item()
        for b in batches(test_codes, batch_size)
    )
    prior_nll = nll / len(test_codes)
    return {
        "prior_bits_per_dim": (reconstruction_nll + prior_nll)
        / (num_dims * math.log(2.0)),
        "prior_nats_per_code": prior_nll / test_codes[0].numel(),
        "prior_code_bits_per_dim": prior_nll / (num_dims * math.log(2.0)),
    }


@torch.no_grad()
def _write_samples(
    model: ImageVQVAE, prior: LatentPrior, config: EvaluateConfig, out_dir: Path
):
    """samples.png (decoder means) and samples_pixels.png (drawn pixels) of prior samples."""
    generator = torch.Generator(device=config.device).manual_seed(config.seed)
    codes = prior.sample(config.num_sample_images, generator)  # (N, L)
    side = round(math.sqrt(codes.shape[1] // model.config.num_slices))
    codes = codes.reshape(-1, side, side, model.config.num_slices)
    params = model.decode_codes(codes)
    means = model.likelihood.mean(params).round().to(torch.uint8)
    save_image_grid(out_dir / "samples.png", means)
    save_image_grid(
        out_dir / "samples_pixels.png", model.likelihood.sample(params, generator)
    )


def _merge_metrics(path: Path, metrics: dict) -> dict:
    """Add ``metrics`` to the JSON file at ``path`` (written by train) and return the union."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(metrics)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def evaluate(config: EvaluateConfig) -> dict:
    """Test metrics, prior and samples for ``config.checkpoint``; returns metrics.json's dict."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir or Path(config.checkpoint).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, checkpoint = load_model(config.checkpoint, config.device)
    train_images, _ = load_cifar10(config.data, "train", config.max_train_images)
    test_images, _ = load_cifar10(config.data, "test", config.max_eval_images)
    metrics = evaluate_model(model, test_images, config.eval_batch_size)
    train_codes = encode_codes(model, train_images, config.eval_batch_size)
    test_codes = encode_codes(model, test_images, config.eval_batch_size)
    start, start_cpu = time.perf_counter(), time.process_time()
    prior, losses = _load_or_train_prior(model, train_codes, config, out_dir)
    metrics["prior_seconds"] = time.perf_counter() - start
    metrics["prior_cpu_seconds"] = time.process_time() - start_cpu
    metrics.update(
        prior_metrics(
            prior, test_codes, metrics["reconstruction_nll"], config.eval_batch_size
        )
    )
    if losses:
        metrics["prior_final_train_nats_per_code"] = sum(losses[-50:]) / len(
            losses[-50:]
        )
    metrics["prior_config"] = {
        k: getattr(config, k) for k in PriorConfig.__dataclass_fields__
    }
    metrics["vqvae_step"] = checkpoint["step"]
    _write_samples(model, prior, config, out_dir)
    merged = _merge_metrics(out_dir / "metrics.json", metrics)
    logger.info(
        "test bits/dim: %.4f with a uniform prior, %.4f with the learned prior",
        metrics["bits_per_dim"],
        metrics["prior_bits_per_dim"],
    )
    return merged


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        level=logging.INFO,
    )
    config = parse_args(argv)
    try:
        return evaluate(config)
    except (FileNotFoundError, CifarFormatError, CheckpointError) as error:  # to fix
        raise SystemExit(f"error: {error}") from error


if __name__ == "__main__":
    main()
