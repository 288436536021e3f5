"""``--optimizer torch_adamw``: fairseq's ``adam``, stepped by torch's fused AdamW.

fairseq's ``adam`` hands its step to NVIDIA apex's FusedAdam when apex is installed (rarely
possible with today's torch); otherwise it steps every parameter tensor in a Python loop
(about eight operations each), and ``clip_grad_norm`` takes the gradient norm tensor by
tensor. For ``vqvae_nat_small`` with soft EM at n_c = 3 (274 parameter tensors) that is 2,195
compute operations per update, more than the 1,465 of a batch's forward and backward pass;
``torch_adamw`` dispatches 6 (``research/optimizer_step_speed.py``). On a GPU every operation is a kernel launch, and a
small model's update is bound by its launches.

``torch.optim.AdamW(fused=True)`` is the same algorithm (fairseq's ``adam`` decays weights
the AdamW way) in a few fused kernels, and torch's foreach norm and clipping replace the
per-tensor loop. One difference in the arithmetic, not in the method: fairseq adds
``--adam-eps`` to sqrt(v) before the bias correction, torch after it (the two agree to
about eps / sqrt(v) relative; ``tests/test_optim.py`` compares their steps).

A drop-in: it reads fairseq's own ``adam`` options (``--adam-betas``, ``--adam-eps``,
``--weight-decay``, through fairseq's ``FairseqAdamConfig``), adds none, and works under
``--amp``, ``--fp16`` (with fairseq's flat fp32 master copy) and the plugin's
``--bf16-autocast``. Its checkpoint state is torch's: a run resumes with the optimizer it was
saved with (fairseq stops with "Optimizer does not match" otherwise; ``--reset-optimizer``
switches, with fresh moments).
"""

from collections.abc import Collection

import torch
from fairseq import utils
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from omegaconf import OmegaConf

from .errors import OptionError

OPTIMIZER_NAME = "torch_adamw"


def _fused_supported(params) -> bool:
    """torch's fused AdamW runs on CPU and CUDA tensors of floating point types."""
    return all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )


@register_optimizer(OPTIMIZER_NAME, dataclass=FairseqAdamConfig)
class TorchAdamW(FairseqOptimizer):
    """fairseq's Adam (AdamW weight decay) as ``torch.optim.AdamW``, fused where it can be."""

    def __init__(self, cfg: FairseqAdamConfig, params):
        super().__init__(cfg)
        if getattr(cfg, "fp16_adam_stats", False):
            raise OptionError(
                f"--optimizer {OPTIMIZER_NAME} keeps Adam's statistics in fp32: drop "
                "--fp16-adam-stats (it needs --optimizer adam with apex's FusedAdam)"
            )
        if getattr(cfg, "use_old_adam", False):
            raise OptionError(
                f"--use-old-adam asks for fairseq's Python Adam: use --optimizer adam, "
                f"or drop --use-old-adam to keep --optimizer {OPTIMIZER_NAME}"
            )
        if getattr(cfg, "tpu", False):
            raise OptionError(
                f"--optimizer {OPTIMIZER_NAME} does not run on TPUs: use --optimizer adam"
            )
        params = list(params)
        self.fused = _fused_supported(params)
        self._optimizer = torch.optim.AdamW(
            params,
            **self.optimizer_config,
            fused=self.fused or None,
            foreach=None if self.fused else True,
        )

    @property
    def optimizer_config(self):
        """The arguments a checkpoint's optimizer state is overridden with (as fairseq's adam)."""
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr
        betas = self.cfg.adam_betas
        betas = eval(betas) if isinstance(betas, str) else OmegaConf.to_container(betas)
        return {
            "lr": lr,
            "betas": tuple(betas),
            "eps": self.cfg.adam_eps,
            "weight_decay": self.cfg.weight_decay,
        }

    @property
    def supports_flat_params(self):
        return True  # --fp16's single flat fp32 master tensor is one more parameter

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """fairseq's ``clip_grad_norm_`` with the norm taken by foreach kernels.

        Without apex, fairseq takes one norm per tensor; the rest (fp32 norm, the 1e-6, the
        clamp, the foreach multiply, the returned tensor) is as fairseq's. A single tensor
        (``--fp16``'s flat master copy) and mixture-of-experts parameters go to fairseq's own.
        """
        params = list(self.params)  # a generator: read it once
        grads = [p.grad for p in params if p.grad is not None]
        if len(grads) < 2 or any(hasattr(p, "expert") for p in params):
            return utils.clip_grad_norm_(params, max_norm, aggregate_norm_fn)
        # get_total_norm runs under no_grad; in fp32, as fairseq's
        total_norm = torch.nn.utils.get_total_norm(
            [g if g.dtype == torch.float32 else g.float() for g in grads],
            norm_type=2.0,
            foreach=True,
        )
        if aggregate_norm_fn is not None:
            total_norm = aggregate_norm_fn(total_norm)
        if max_norm > 0:
            clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
            torch._foreach_mul_(grads, clip_coef)
        return total_norm

    # --use-bmuf averages Adam's moments across workers; torch's AdamW names them as fairseq's.
    average_params = FairseqAdam.average_params
