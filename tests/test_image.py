"""Tests of fairseq_vqvae.image: CIFAR-10 loader, exact likelihoods and bits/dim, the conv
VQ-VAE with every bottleneck, the latent prior, and the train / evaluate entry points.

All tiny (codebook 8, code_dim 8, 16 channels) and CPU-only; the official-layout batch files
are written to ``tmp_path``.
"""

import importlib.util
import json
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_vqvae.image import evaluate as evaluate_cli
from fairseq_vqvae.image import train as train_cli
from fairseq_vqvae.image.checkpoint import LAST_CHECKPOINT, load_checkpoint, load_model
from fairseq_vqvae.image.config import ImageVQVAEConfig, PriorConfig, TrainConfig
from fairseq_vqvae.image.data import (
    CifarFormatError,
    load_cifar10,
    read_batch,
    write_batch,
)
from fairseq_vqvae.image.likelihood import Likelihood, _log_bin_mass, bits_per_dim
from fairseq_vqvae.image.metrics import evaluate_model
from fairseq_vqvae.image.model import ImageVQVAE
from fairseq_vqvae.image.prior import LatentPrior

BOTTLENECKS = ("vqvae", "hard_em", "soft_em")
SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
TINY_MODEL_FLAGS = [
    "--codebook-size",
    "8",
    "--code-dim",
    "8",
    "--hidden-channels",
    "16",
    "--residual-channels",
    "8",
    "--num-residual-blocks",
    "1",
    "--num-mixtures",
    "2",
]


def tiny_config(**overrides) -> ImageVQVAEConfig:
    values = {
        "codebook_size": 8,
        "code_dim": 8,
        "hidden_channels": 16,
        "residual_channels": 8,
        "num_residual_blocks": 1,
        "num_mixtures": 2,
        "num_samples": 3,
    }
    values.update(overrides)
    return ImageVQVAEConfig(**values)


def random_images(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's
    spinning made this file 10x slower; restore the setting for other test files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cifar(tmp_path) -> Path:
    """A cifar-10-batches-py folder: two train batches of 10 images and a test batch of 6."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_batch(folder / "data_batch_1", random_images(10, 1), torch.arange(10) % 10)
    write_batch(folder / "data_batch_2", random_images(10, 2), torch.arange(10) % 10)
    write_batch(folder / "test_batch", random_images(6, 3), torch.arange(6))
    meta = {b"label_names": [b"airplane"] * 10, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return tmp_path


# Data --------------------------------------------------------------------------------------


def test_loader_reads_red_green_blue_planes_row_major(tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 251
    batch = {b"data": data.astype(np.uint8), b"labels": [3, 7]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    images, labels = load_cifar10(tmp_path, "test")
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [3, 7]
    assert images[1, 0, 0, 1] == data[1, 1]  # red plane, row 0, column 1
    assert images[1, 0, 1, 0] == data[1, 32]  # red plane, row 1, column 0
    assert (
        images[1, 1, 0, 0] == data[1, 1024]
    )  # green plane starts after 32*32 red values
    assert images[1, 2, 31, 31] == data[1, 3071]  # last blue value


def test_loader_round_trip_reads_every_train_batch(tiny_cifar):
    images, labels = load_cifar10(
        tiny_cifar, "train"
    )  # the parent of cifar-10-batches-py
    assert torch.equal(images, torch.cat([random_images(10, 1), random_images(10, 2)]))
    assert labels.tolist() == (list(range(10)) * 2)
    test_images, _ = load_cifar10(
        tiny_cifar / "cifar-10-batches-py", "test", max_images=4
    )
    assert torch.equal(test_images, random_images(6, 3)[:4])


def test_loader_error_for_missing_folder(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="does not exist.*cifar-10-python.tar.gz"
    ):
        load_cifar10(tmp_path / "nowhere", "train")


def test_loader_error_for_truncated_file(tiny_cifar):
    path = tiny_cifar / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CifarFormatError, match="data_batch_2 is truncated or corrupt"):
        load_cifar10(tiny_cifar, "train")


@pytest.mark.parametrize(
    "batch, message",
    [
        (
            {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4},
            r"shape \(N, 3072\)",
        ),
        ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "uint8"),
        (
            {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3},
            "one label per image",
        ),
        ({b"labels": [0]}, "lacks the keys"),
    ],
)
def test_loader_error_for_wrong_arrays(tmp_path, batch, message):
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(CifarFormatError, match=message):
        read_batch(tmp_path / "test_batch")


@pytest.mark.skipif(
    not SUBSET.is_dir(), reason="../shared/data/cifar10-subset not present"
)
def test_loader_reads_the_shared_cifar10_subset():
    train, _ = load_cifar10(SUBSET, "train")
    test, test_labels = load_cifar10(SUBSET, "test")
    assert train.shape == (4000, 3, 32, 32) and test.shape == (1000, 3, 32, 32)
    assert set(test_labels.tolist()) == set(range(10))


# Likelihood and bits/dim ------------------------------------------------------------------


def test_bits_per_dim_matches_hand_computed_value():
    # 6000 nats + 64 ln 512 = 6000 + 576 ln 2 nats; / (3072 ln 2) = 2.81775... + 0.1875.
    assert bits_per_dim(6000.0, 64 * math.log(512)) == pytest.approx(
        3.0052637517, abs=1e-9
    )
    model = ImageVQVAE(tiny_config())  # 8x8 latents, K = 8: 64 * 3 bits over 3072 dims
    assert model.latent_nats() == pytest.approx(64 * math.log(8))
    nll = torch.tensor([3072 * math.log(2.0)])  # exactly 1 bit per sub-pixel
    assert model.bits_per_dim(nll).item() == pytest.approx(1.0 + 0.0625)


def test_categorical_with_flat_logits_costs_eight_bits_per_dim():
    likelihood = Likelihood("categorical")
    params = torch.zeros(2, likelihood.num_params, 32, 32)
    nll = likelihood.nll(params, random_images(2))
    assert torch.allclose(nll, torch.full((2,), 3072 * math.log(256.0)))
    assert bits_per_dim(nll, 0.0)[0].item() == pytest.approx(8.0)


@pytest.mark.parametrize("log_scale", [-7.0, -3.0, 0.0, 2.0])
def test_discretized_logistic_bin_masses_sum_to_one(log_scale):
    values = torch.arange(256)
    x = values.float() / 127.5 - 1.0
    for mean in (-1.3, -0.2, 0.7, 1.0):
        log_mass = _log_bin_mass(x, torch.tensor(mean), torch.tensor(log_scale), values)
        assert torch.logsumexp(log_mass, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_logistic_mixture_pixel_marginal_matches_red_mixture():
    # Summing p(r, g, b) over all (g, b) must leave the mixture over red alone: checks that
    # the coupled green / blue conditionals are normalised.
    likelihood = Likelihood("logistic_mixture", num_mixtures=2)
    params = torch.randn(1, likelihood.num_params, 1, 1)
    red = 100
    g, b = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    pixels = (
        torch.stack([torch.full_like(g, red), g, b], -1)
        .reshape(-1, 3, 1, 1)
        .to(torch.uint8)
    )
    total = torch.logsumexp(
        -likelihood.nll(params.expand(len(pixels), -1, -1, -1), pixels), 0
    )
    logits, means, log_scales, _ = likelihood._split(params)
    red_x = torch.tensor(red / 127.5 - 1.0)
    red_mass = _log_bin_mass(
        red_x, means[0, 0, :, 0, 0], log_scales[0, 0, :, 0, 0], torch.tensor(red)
    )
    expected = torch.logsumexp(red_mass + logits[0, :, 0, 0].log_softmax(0), 0)
    assert total.item() == pytest.approx(expected.item(), abs=1e-4)


@pytest.mark.parametrize("kind", ["logistic_mixture", "categorical"])
def test_likelihood_samples_and_means_are_valid_images(kind):
    likelihood = Likelihood(kind, num_mixtures=3)
    params = torch.randn(2, likelihood.num_params, 4, 4)
    samples = likelihood.sample(params, torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 4, 4) and samples.dtype == torch.uint8
    means = likelihood.mean(params)
    assert means.shape == (2, 3, 4, 4) and means.min() >= 0 and means.max() <= 255


# Model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["logistic_mixture", "categorical"])
@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_model_output_shapes(bottleneck, likelihood):
    model = ImageVQVAE(tiny_config(bottleneck=bottleneck, likelihood=likelihood))
    out = model(random_images(4))
    assert out.params.shape == (4, model.likelihood.num_params, 32, 32)
    assert out.vq.codes.shape == (4, 8, 8, 1) and out.vq.quantized.shape == (4, 8, 8, 8)
    assert out.nll.shape == (4,) and torch.isfinite(out.loss)
    assert out.recon_loss.item() == pytest.approx(
        out.nll.mean().item() / 3072, rel=1e-5
    )


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_one_training_step_updates_weights_and_codebook(bottleneck):
    model = ImageVQVAE(tiny_config(bottleneck=bottleneck))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    codebook = model.bottleneck.codebook
    before = {k: v.clone() for k, v in codebook.state_dict().items()}
    encoder_before = model.encoder[0].weight.detach().clone()
    stats = train_cli._train_step(model, optimizer, random_images(4))
    assert math.isfinite(stats["loss"]) and 1.0 <= stats["code_perplexity"] <= 8.0
    assert not torch.equal(model.encoder[0].weight, encoder_before)
    assert not torch.equal(codebook.weight, before["weight"])
    if (
        bottleneck != "vqvae"
    ):  # EM codebooks are buffers: one M-step, outside the optimizer
        assert int(codebook.num_updates) == 1
        assert all(id(p) != id(codebook.weight) for p in model.parameters())


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_codebook_init_reaches_the_codebook_and_data_starts_on_encoder_outputs(
    bottleneck,
):
    assert ImageVQVAEConfig().codebook_init == "uniform"
    uniform = ImageVQVAE(tiny_config(bottleneck=bottleneck))
    assert uniform.bottleneck.codebook.init == "uniform"
    model = ImageVQVAE(tiny_config(bottleneck=bottleneck, codebook_init="data"))
    assert model.bottleneck.codebook.awaits_data
    images = random_images(4)
    latents = []
    model.bottleneck.register_forward_hook(
        lambda module, args, out: latents.append(args[0].detach().clone())
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # codes stay as initialised
    train_cli._train_step(model, optimizer, images)
    codes = model.bottleneck.codebook.weight[0]  # (K, D)
    vectors = latents[0].reshape(-1, codes.shape[-1])  # 4 images x 8 x 8 latents
    matches = (codes[:, None] == vectors[None]).all(-1)  # (K, N)
    assert (matches.sum(1) >= 1).all()  # every code is one of this update's latents


def test_evaluate_model_reports_exact_bits_per_dim():
    model = ImageVQVAE(tiny_config())
    images = random_images(5)
    metrics = evaluate_model(model, images, batch_size=2)
    nll = model.eval()(images).nll.mean().item()
    assert metrics["bits_per_dim"] == pytest.approx(
        (nll + 64 * math.log(8)) / (3072 * math.log(2))
    )
    assert metrics["latent_bits_per_dim"] == pytest.approx(0.0625)
    assert 1 <= metrics["codes_in_use"] <= 8 and metrics["num_images"] == 5


def test_prior_is_causal_and_samples_valid_codes():
    prior = LatentPrior(
        8, 6, PriorConfig(prior_layers=1, prior_dim=16, prior_heads=2)
    ).eval()
    codes = torch.randint(0, 8, (2, 6))
    changed = codes.clone()
    changed[:, 3] = (codes[:, 3] + 1) % 8
    # Position t predicts code t from codes < t: changing code 3 leaves positions 0..3 alone.
    assert torch.allclose(
        prior.logits(codes)[:, :4], prior.logits(changed)[:, :4], atol=1e-6
    )
    assert not torch.allclose(prior.logits(codes)[:, 4:], prior.logits(changed)[:, 4:])
    assert prior.nll(codes).shape == (2,)
    samples = prior.sample(3, torch.Generator().manual_seed(0))
    assert samples.shape == (3, 6) and samples.min() >= 0 and samples.max() < 8


# Entry points -----------------------------------------------------------------------------


def _train_argv(
    data: Path, save_dir: Path, updates: int, bottleneck: str = "soft_em"
) -> list[str]:
    return [
        "--data",
        str(data),
        "--save-dir",
        str(save_dir),
        "--bottleneck",
        bottleneck,
        "--max-updates",
        str(updates),
        "--batch-size",
        "4",
        "--log-interval",
        "1",
        "--eval-batch-size",
        "3",
        "--no-progress",
        *TINY_MODEL_FLAGS,
    ]


def test_cli_train_then_resume_continues_like_one_run(tiny_cifar, tmp_path):
    save_dir = tmp_path / "run"
    train_cli.main(_train_argv(tiny_cifar, save_dir, 2))
    first = load_checkpoint(save_dir / LAST_CHECKPOINT)
    assert first["step"] == 2 and [h["step"] for h in first["history"]] == [1, 2]
    model, _ = load_model(save_dir / LAST_CHECKPOINT)
    for name, value in model.bottleneck.codebook.state_dict().items():
        assert torch.equal(value, first["model"][f"bottleneck.codebook.{name}"]), name

    metrics = train_cli.main(_train_argv(tiny_cifar, save_dir, 4))  # resumes at step 2
    resumed = load_checkpoint(save_dir / LAST_CHECKPOINT)
    assert resumed["step"] == 4 and [h["step"] for h in resumed["history"]] == [
        1,
        2,
        3,
        4,
    ]
    assert int(resumed["model"]["bottleneck.codebook.num_updates"]) == 4

    straight = tmp_path / "straight"
    train_cli.main(_train_argv(tiny_cifar, straight, 4))
    reference = load_checkpoint(straight / LAST_CHECKPOINT)
    for name, value in reference["model"].items():
        assert torch.allclose(
            resumed["model"][name].float(), value.float(), atol=1e-6
        ), name
    saved = json.loads((save_dir / "metrics.json").read_text())
    for key in (
        "bits_per_dim",
        "reconstruction_mse",
        "code_perplexity",
        "codes_in_use",
    ):
        assert saved[key] == pytest.approx(metrics[key])
    assert (save_dir / "reconstructions.png").stat().st_size > 0


def test_cli_reports_a_missing_data_folder_without_traceback(tmp_path):
    with pytest.raises(SystemExit, match="error: CIFAR-10 folder .* does not exist"):
        train_cli.main(_train_argv(tmp_path / "missing", tmp_path / "run", 1))
    with pytest.raises(SystemExit, match="error: checkpoint .* not found"):
        evaluate_cli.main(
            ["--checkpoint", str(tmp_path / "x.pt"), "--data", str(tmp_path)]
        )


def test_cli_resume_refuses_a_different_model(tiny_cifar, tmp_path):
    train_cli.main(_train_argv(tiny_cifar, tmp_path, 1))
    with pytest.raises(SystemExit, match="error: .*--no-resume"):
        train_cli.main(_train_argv(tiny_cifar, tmp_path, 2, bottleneck="hard_em"))


# A batch pickling an object of a module not installed where it is read.
_ELSEWHERE = pickle.dumps({b"data": OrderedDict(), b"labels": [0]}, protocol=2).replace(
    b"collections", b"not_installed"
)


@pytest.mark.parametrize(
    "batch, message",
    [
        ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "has no images"),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]},
            "labels must be integers",
        ),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.0, 2.7]},
            "labels must be integers",
        ),
        (
            {b"data": [[0] * 3072, [0] * 100], b"labels": [0, 1]},
            "not ragged lists",
        ),
        (_ELSEWHERE, "module that is not installed"),
    ],
)
def test_cli_bad_training_batch_is_one_line_error(tiny_cifar, tmp_path, batch, message):
    folder = tiny_cifar / "cifar-10-batches-py"
    (folder / "data_batch_2").unlink()
    raw = batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=2)
    (folder / "data_batch_1").write_bytes(raw)
    with pytest.raises(SystemExit, match=f"error: .*{message}"):
        train_cli.main(_train_argv(tiny_cifar, tmp_path / "run", 1))
    assert not (tmp_path / "run" / LAST_CHECKPOINT).exists()


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_cli_damaged_checkpoint_is_one_line_error_and_kept(
    tiny_cifar, tmp_path, damage
):
    train_cli.main(_train_argv(tiny_cifar, tmp_path, 1))
    path = tmp_path / LAST_CHECKPOINT
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:3000])
    else:
        torch.save(torch.zeros(3), path)
    before = path.read_bytes()
    needle = "truncated" if damage == "truncate" else "not a checkpoint of"
    with pytest.raises(SystemExit, match=f"error: .*{needle}"):
        train_cli.main(_train_argv(tiny_cifar, tmp_path, 2))
    with pytest.raises(SystemExit, match=f"error: .*{needle}"):
        evaluate_cli.main(["--checkpoint", str(path), "--data", str(tiny_cifar)])
    assert path.read_bytes() == before


def test_cli_evaluate_fits_prior_and_writes_samples(tiny_cifar, tmp_path):
    train_cli.main(_train_argv(tiny_cifar, tmp_path, 2, bottleneck="hard_em"))
    metrics = evaluate_cli.main(
        [
            "--checkpoint",
            str(tmp_path / LAST_CHECKPOINT),
            "--data",
            str(tiny_cifar),
            "--prior-layers",
            "1",
            "--prior-dim",
            "16",
            "--prior-heads",
            "2",
            "--prior-updates",
            "3",
            "--prior-batch-size",
            "4",
            "--num-sample-images",
            "4",
            "--eval-batch-size",
            "3",
            "--no-progress",
        ]
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "bits_per_dim",
        "reconstruction_mse",
        "code_perplexity",
        "codes_in_use",
        "prior_bits_per_dim",
        "prior_nats_per_code",
    ):
        assert math.isfinite(saved[key]) and saved[key] == pytest.approx(metrics[key])
    expected = saved["reconstruction_bits_per_dim"] + saved["prior_code_bits_per_dim"]
    assert saved["prior_bits_per_dim"] == pytest.approx(expected)
    for name in ("samples.png", "samples_pixels.png", "prior.pt"):
        assert (tmp_path / name).stat().st_size > 0


def test_train_config_flags_round_trip():
    model_config, config = train_cli.parse_args(
        [
            "--data",
            "d",
            "--save-dir",
            "s",
            "--bottleneck",
            "hard_em",
            "--no-resume",
            "--decay",
            "0.9",
            "--codebook-init",
            "data",
        ]
    )
    assert model_config == ImageVQVAEConfig(
        bottleneck="hard_em", decay=0.9, codebook_init="data"
    )
    assert config == TrainConfig(data="d", save_dir="s", resume=False)


def test_benchmark_summary_table_and_plot(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "image_benchmark",
        Path(__file__).resolve().parents[1] / "scripts" / "image_benchmark.py",
    )
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    history = [{"step": 50, "recon_loss": 4.0}, {"step": 100, "recon_loss": 3.5}]
    runs = {
        name: [
            {key: offset + seed for key in benchmark.SUMMARY_KEYS}
            | {"history": history}
            for seed in (1.0, 2.0, 3.0)
        ]
        for name, offset in (("hard_em", 0.0), ("soft_em", 10.0))
    }
    summary = benchmark.summarize(runs)
    assert summary["soft_em"]["bits_per_dim"]["mean"] == pytest.approx(12.0)
    assert summary["hard_em"]["codes_in_use"]["std"] == pytest.approx(1.0)  # sample std
    table = benchmark.markdown_table(summary, runs, [1, 2, 3])
    assert (
        "| soft_em | 12.000 ± 1.000 |" in table
        and "| hard_em seed 3 | 3.000 |" in table
    )
    benchmark.plot_summary(tmp_path / "summary.png", summary, runs)
    assert (tmp_path / "summary.png").stat().st_size > 0


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max-updates", "-1", "must be >= 1, got -1"),
        ("--batch-size", "0", "must be >= 1, got 0"),
        ("--threads", "-2", "must be >= 0, got -2"),
        ("--max-updates", "x", "invalid int value: 'x'"),
    ],
)
def test_cli_refuses_counts_out_of_range_in_one_line(
    tmp_path, capsys, flag, value, message
):
    """--max-updates -1 used to train and write metrics with "updates": -1."""
    with pytest.raises(SystemExit):
        train_cli.parse_args(
            ["--data", str(tmp_path), "--save-dir", str(tmp_path / "run"), flag, value]
        )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: {message}" in err
