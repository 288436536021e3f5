"""Where ``--bf16-autocast`` pays: a GPU, or a CPU that computes bfloat16 natively.

On a CPU with AVX512-BF16 or AMX tiles, autocast trained 1.57x faster than fp32; on one
without (AVX2 only) torch emulates bfloat16 and autocast trained 21 times slower (README, "CPU
training with --bf16-autocast"). Plain torch: the shell pipelines ask
``python -m fairseq_vqvae.precision`` (exit status 0 where autocast pays).
"""

import sys

import torch

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


if __name__ == "__main__":
    sys.exit(0 if autocast_pays() else 1)
