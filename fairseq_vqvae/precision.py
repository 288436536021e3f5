"""Where ``--bf16-autocast`` pays: a GPU, or a CPU that computes bfloat16 natively.

On a CPU with AVX512-BF16 or AMX tiles, autocast trained 1.57x faster than fp32; on one
without (AVX2 only) torch emulates bfloat16 and autocast trained 21 times slower (README, "CPU
training with --bf16-autocast"). Plain torch: the shell pipelines ask
``python -m fairseq_vqvae.precision`` (exit status 0 where autocast pays).
"""

import functools
import logging
import sys

import torch

from .errors import OptionError

logger = logging.getLogger(__name__)

_NATIVE_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). A torch that cannot
    tell (no probe) is taken at its word: True."""
    probes = [getattr(torch.cpu, name, None) for name in _NATIVE_BF16_PROBES]
    probes = [probe for probe in probes if probe is not None]
    return not probes or any(bool(probe()) for probe in probes)


def autocast_pays() -> bool:
    """Whether --bf16-autocast makes training faster on this machine."""
    return torch.cuda.is_available() or cpu_has_native_bf16()


@functools.cache
def warn_if_bf16_is_emulated() -> None:
    """Once per process: --bf16-autocast on a CPU that emulates bfloat16 is slower than fp32."""
    if not cpu_has_native_bf16():
        logger.warning(
            "--bf16-autocast: this CPU has no native bfloat16 (no AVX512-BF16 or AMX; torch "
            "reports %s), so bfloat16 is emulated and training is slower than in fp32: drop "
            "--bf16-autocast on this machine",
            torch.backends.cpu.get_cpu_capability(),
        )


def check_autocast_optimizer(optimizer):
    """Refuse --bf16-autocast on top of fairseq's own mixed precision."""
    from fairseq.optim import AMPOptimizer
    from fairseq.optim.fp16_optimizer import (
        _FP16OptimizerMixin,
        _MemoryEfficientFP16OptimizerMixin,
    )

    mixed = (AMPOptimizer, _FP16OptimizerMixin, _MemoryEfficientFP16OptimizerMixin)
    if isinstance(optimizer, mixed):
        raise OptionError(
            "--bf16-autocast is its own mixed precision: drop --fp16/--bf16/--amp (or drop "
            "--bf16-autocast and use fairseq's, on a GPU)"
        )


def on_cuda(sample) -> bool:
    """Whether a fairseq batch is on a GPU (where --bf16-autocast runs under CUDA autocast)."""
    tokens = sample.get("net_input", {}).get("src_tokens")
    return tokens is not None and tokens.is_cuda


if __name__ == "__main__":
    sys.exit(0 if autocast_pays() else 1)
