"""fairseq_vqvae: non-autoregressive translation through an EM-trained VQ-VAE bottleneck.

Roy et al. 2018, https://arxiv.org/abs/1805.11063. Load with ``--user-dir fairseq_vqvae``.

``fairseq_vqvae.bottleneck`` and ``fairseq_vqvae.image`` are plain torch. The fairseq
components (model, criterion, task, the ``torch_adamw`` optimizer) are registered when
fairseq is already imported, as it is whenever fairseq loads the plugin (``--user-dir``),
and only here (``register``): a module imported directly registers itself alone, and
``VQVAENATModel.from_pretrained`` calls ``register`` for the task and criterion it needs.
"""

import sys

from . import compat  # noqa: F401  (fairseq checkpoints must load under torch >= 2.6)


def register() -> None:
    """Register the fairseq components (imports fairseq). For a process that imported this
    package before fairseq: fairseq's ``import_user_module`` skips a package already imported,
    so nothing else would register them."""
    from . import criterion, model, optim, task  # noqa: F401


if "fairseq" in sys.modules:
    register()
