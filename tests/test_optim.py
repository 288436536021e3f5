"""``--optimizer torch_adamw``: fairseq's adam options, fairseq's adam steps, a resumable state."""

import copy
import os
import re
import subprocess
import sys

import pytest
import torch
from fairseq import optim, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_vqvae.optim import TorchAdamW

from conftest import TINY_FLAGS, USER_DIR

ADAM_FLAGS = (
    "--adam-betas",
    "(0.8,0.95)",
    "--adam-eps",
    "1e-6",
    "--weight-decay",
    "0.1",
)


def _optimizer(built, params=None):
    # as fairseq-train's trainer gets it
    cfg = convert_namespace_to_omegaconf(built.args)
    params = params if params is not None else list(built.model.parameters())
    return optim.build_optimizer(cfg.optimizer, params)


def _copies(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _update(optimizer, grads, scale, max_norm):
    """What fairseq's trainer does with an update's gradients: (norm, clipped gradients)."""
    for p, g in zip(optimizer.params, grads):
        p.grad = g.clone()
    optimizer.multiply_grads(scale)
    norm = optimizer.clip_grad_norm(max_norm)
    clipped = [p.grad.clone() for p in optimizer.params]
    optimizer.step()
    optimizer.zero_grad()
    return norm, clipped


def test_fairseqs_adam_defaults_reach_the_fused_torch_optimizer(build_vqvae):
    built = build_vqvae("--optimizer", "torch_adamw")
    optimizer = _optimizer(built)
    assert isinstance(optimizer, TorchAdamW)
    assert isinstance(optimizer.optimizer, torch.optim.AdamW)
    group = optimizer.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        1e-3,
        (0.9, 0.999),
        1e-8,
        0.0,
    )
    assert optimizer.fused and group["fused"]  # CPU float parameters: the fused kernel


def test_fairseqs_adam_flags_reach_it(build_vqvae):
    built = build_vqvae("--optimizer", "torch_adamw", *ADAM_FLAGS)
    group = _optimizer(built).optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == (
        (0.8, 0.95),
        1e-6,
        0.1,
    )


@pytest.mark.parametrize("max_norm", [0.0, 0.5])
def test_updates_match_fairseqs_adam(build_vqvae, max_norm):
    """Same flags, same gradients: the parameters and gradient norms of fairseq's adam.

    Weight decay 0.1 tells AdamW's decoupled decay (fairseq's) from Adam's L2 term; max_norm
    0.5 clips every update (compared on the gradients: Adam's step hardly sees a constant
    factor), 0 only measures the norm. --adam-eps 0: fairseq adds eps before the bias
    correction, torch after it, which moves the steps of gradients near eps (here, clipped
    ones) by up to a hundredth; with eps 0 the two are the same arithmetic.
    """
    flags = ("--adam-betas", "(0.8,0.95)", "--adam-eps", "0", "--weight-decay", "0.1")
    adam_built = build_vqvae(*flags)
    ours_built = build_vqvae("--optimizer", "torch_adamw", *flags)
    params = [p for p in adam_built.model.parameters() if p.requires_grad]
    theirs = _optimizer(adam_built, _copies(params))
    ours = _optimizer(ours_built, _copies(params))
    assert type(theirs).__name__ == "FairseqAdam"
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        grads = [torch.randn(p.shape, generator=generator) for p in params]
        their_norm, their_grads = _update(theirs, grads, 0.5, max_norm)
        our_norm, our_grads = _update(ours, grads, 0.5, max_norm)
        assert torch.allclose(our_norm, their_norm, rtol=1e-5)
        for a, b, g in zip(their_grads, our_grads, grads):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)
            assert max_norm == 0 or a.abs().sum() < 0.1 * g.abs().sum()  # it clipped
    moved = max(float((a - p).abs().max()) for a, p in zip(theirs.params, params))
    assert moved > 1e-3  # the comparison below is not of parameters that stayed put
    for a, b in zip(theirs.params, ours.params):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), float((a - b).abs().max())


@pytest.mark.parametrize("shapes", [[(40,)], [(3, 4), (5,)]], ids=["flat", "two"])
@pytest.mark.parametrize("scale", [100.0, float("inf")], ids=["finite", "overflow"])
def test_clip_grad_norm_reports_and_clips_as_fairseqs(build_vqvae, shapes, scale):
    """One tensor is --fp16's flat fp32 master copy; an infinite gradient is an fp16 overflow,
    which fairseq's loss scaler sees only through the norm."""
    ours = _optimizer(
        build_vqvae("--optimizer", "torch_adamw"),
        [torch.nn.Parameter(torch.zeros(s)) for s in shapes],
    )
    grads = [torch.full(s, scale) for s in shapes]
    for p, g in zip(ours.params, grads):
        p.grad = g.clone()
    norm = ours.clip_grad_norm(1.0)
    reference = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, g in zip(reference, grads):
        p.grad = g.clone()
    expected = utils.clip_grad_norm_(reference, 1.0)
    if scale == float("inf"):
        assert not torch.isfinite(norm)
        return
    assert torch.allclose(norm, expected) and float(norm) > 100
    clipped = torch.cat([p.grad.flatten() for p in ours.params])
    assert torch.allclose(clipped.norm(), torch.tensor(1.0), rtol=1e-4)


def test_bmuf_averages_the_torch_optimizers_moments(build_vqvae, monkeypatch):
    ours = _optimizer(
        build_vqvae("--optimizer", "torch_adamw"), [torch.nn.Parameter(torch.zeros(3))]
    )
    _update(ours, [torch.ones(3)], 1.0, 0.0)
    state = ours.optimizer.state[next(ours.params)]
    before = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, op=None: tensor)
    ours.average_params()  # two workers whose other half adds nothing here
    assert torch.allclose(state["exp_avg"], before[0] / 2)
    assert torch.allclose(state["exp_avg_sq"], before[1] / 2)


def test_a_reloaded_state_steps_exactly_as_the_original(build_vqvae):
    built = build_vqvae("--optimizer", "torch_adamw", *ADAM_FLAGS)
    params = [p for p in built.model.parameters() if p.requires_grad]
    first = _optimizer(built, _copies(params))
    generator = torch.Generator().manual_seed(1)
    grads = [
        [torch.randn(p.shape, generator=generator) for p in params] for _ in range(4)
    ]
    for step in grads[:3]:
        _update(first, step, 1.0, 0.0)
    state = copy.deepcopy(first.state_dict())
    second = _optimizer(built, _copies(first.params))
    second.load_state_dict(state)
    _update(first, grads[3], 1.0, 0.0)
    _update(second, grads[3], 1.0, 0.0)
    for a, b in zip(first.params, second.params):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--fp16-adam-stats", "drop --fp16-adam-stats"),
        ("--use-old-adam", "use --optimizer adam, or drop --use-old-adam"),
    ],
)
def test_fairseqs_adam_flags_it_cannot_honour_are_refused(build_vqvae, flag, message):
    built = build_vqvae("--optimizer", "torch_adamw", flag)
    with pytest.raises(ValueError, match=re.escape(message)):
        _optimizer(built)


def test_fairseq_train_runs_and_resumes_with_its_state(tiny_databin, tmp_path):
    """Through fairseq-train: 2 updates, then a second run resumes to 4 with its moments."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def train(max_update):
        command = [
            sys.executable, "-m", "fairseq_cli.train", str(tiny_databin),
            "--user-dir", str(USER_DIR), "--task", "translation_vqvae",
            "--arch", "vqvae_nat_tiny", "--criterion", "vqvae_em", "--share-all-embeddings",
            *TINY_FLAGS, "--optimizer", "torch_adamw", "--lr", "1e-3", "--clip-norm", "1",
            "--max-tokens", "1000", "--max-update", str(max_update), "--cpu",
            "--num-workers", "0", "--save-dir", str(tmp_path), "--no-epoch-checkpoints",
            "--save-interval-updates", "2", "--disable-validation",
            "--log-format", "simple", "--log-interval", "1",
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    train(2)
    saved = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert saved["last_optimizer_state"]["state"][0]["exp_avg"].abs().sum() > 0
    resumed = train(4)
    # fairseq's "Loaded checkpoint ... (epoch N @ 2 updates)"
    assert "@ 2 updates)" in resumed
    final = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert final["optimizer_history"][-1]["optimizer_name"] == "TorchAdamW"
    assert int(final["last_optimizer_state"]["state"][0]["step"]) == 4
