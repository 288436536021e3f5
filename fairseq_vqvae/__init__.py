"""fairseq_vqvae: non-autoregressive translation through an EM-trained VQ-VAE bottleneck.

Roy et al. 2018, https://arxiv.org/abs/1805.11063. Load with ``--user-dir fairseq_vqvae``.
"""

from . import compat  # noqa: F401  (first: fairseq checkpoints must load under torch >= 2.6)
from . import criterion, model, task  # noqa: F401
