"""What the translation_vqvae task needs to apply the codebooks' EM updates under fairseq's
trainer: the model's bottlenecks, its first micro-batch of an update, the data-parallel group
and the loss scale of ``--amp`` (whose skipped steps must not count).
"""

import torch.distributed as dist

from .bottleneck import VQBottleneck


def unwrap(model):
    """The model inside fairseq's wrappers (DDP and others hold it as ``.module``)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def bottlenecks(model):
    """Every ``VQBottleneck`` of ``model``."""
    return [m for m in unwrap(model).modules() if isinstance(m, VQBottleneck)]


def first_micro_batch(model) -> bool:
    """fairseq's trainer zeroes gradients (to None) before an update's first micro-batch."""
    for param in unwrap(model).parameters():
        if param.requires_grad:
            return param.grad is None
    return True


def data_parallel_group():
    """fairseq's data-parallel process group; None outside torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    from fairseq.distributed import utils as distributed_utils

    return distributed_utils.get_data_parallel_group()


def loss_scale(optimizer) -> float | None:
    """The loss scale of fairseq's AMPOptimizer (--amp; a torch GradScaler, which lowers it
    when it skips a step on an overflow), or None for other optimizers: under --fp16 an
    overflow is raised before the task's optimizer step."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not hasattr(scaler, "get_scale"):
        return None
    if hasattr(scaler, "is_enabled") and not scaler.is_enabled():
        return None
    return float(scaler.get_scale())
