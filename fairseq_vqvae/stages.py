"""The stages of one ``VQVAENATGenerator.generate`` call, as torch.profiler labels.

``scripts/benchmark.py --profile-sentences`` sums them; outside a profiler a label costs about
a microsecond.
"""

from torch.profiler import record_function

STAGES = (
    "encoder",
    "length",
    "latent_predictor",
    "decompressor",
    "decoder",
    "output",
    "ranking",
)


def stage(name: str):
    """The profiler label of stage ``name`` (one of ``STAGES``), as a context manager."""
    return record_function(f"vqvae_nat.{name}")
