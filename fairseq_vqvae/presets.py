"""Architecture presets of vqvae_nat: named defaults, each applied only where the command line is silent.

``vqvae_nat`` / ``vqvae_nat_base`` is the paper's base model (Roy et al. 2018,
https://arxiv.org/abs/1805.11063, section 5.1); the others are sized for a CPU. The
architectures themselves are registered with the model (``model.py``).
"""

from .config import VQVAENATConfig

PRESETS = {
    "vqvae_nat": {},  # the paper's base model (d=512, 6 layers per stack, K=2^12, n_c=3)
    "vqvae_nat_small": dict(  # Multi30k on a 2-core CPU
        encoder_embed_dim=256,
        encoder_ffn_embed_dim=1024,
        decoder_ffn_embed_dim=1024,
        encoder_layers=3,
        decoder_layers=3,
        latent_layers=2,
        codebook_size=1024,
        # A few thousand updates: the paper's 0.999 (a 1000-update memory) would lag; plain
        # EMA collapses onto a few codes here (examples/bottleneck_demo), so restart them.
        codebook_decay=0.99,
        dead_code_threshold=0.01,
        # The recipe ablations' best variant (examples/multi30k/results/ablations, 2026-12-02): dropout
        # 0.1 and glancing 0.5 -> 0.3 over 1,000 updates (with --warmup-updates 200 on the command
        # line) reached validation BLEU 19.56 at 1,000 updates against 16.24 for the study's
        # recipe (dropout 0.3, no glancing). Attention and activation dropout cost a fifth of a
        # CPU update (Bernoulli sampling) for no gain at this size.
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        glance_ratio=0.5,
        glance_ratio_end=0.3,
        glance_anneal_updates=1000,
        # The converged study's best row (examples/multi30k, 2026-12-06): the gradient-trained
        # VQ-VAE with codes initialised from the first update's latents and 4 target tokens per
        # code. Two seeds of 4,000 updates: validation BLEU 30.48 +- 0.24 against 28.30 +- 0.73
        # at n_c = 3 and 28.55 / 29.08 for soft / hard EM at n_c = 3 (one seed each). Its codes
        # stay predictable (35% teacher-forced) where more of them carry more (oracle 34.5
        # against 29.7). The study's EM rows: --bottleneck soft_em --compress-steps 3
        # --codebook-init uniform.
        bottleneck="vqvae",
        codebook_init="data",
        compress_steps=2,
    ),
    "vqvae_nat_tiny": dict(  # tests and the README demo
        encoder_embed_dim=64,
        encoder_ffn_embed_dim=128,
        decoder_ffn_embed_dim=128,
        encoder_layers=2,
        decoder_layers=2,
        latent_layers=1,
        encoder_attention_heads=4,
        codebook_size=64,
        codebook_decay=0.99,
        dead_code_threshold=0.05,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
    ),
}


def apply_preset(args, name):
    """Fill every option of ``args`` that is None (not given) from preset ``name``, else the
    configuration's default."""
    preset = PRESETS[name]
    legacy = getattr(
        args, "normalize_before", None
    )  # checkpoints from before --post-norm
    if getattr(args, "post_norm", None) is None and legacy is not None:
        args.post_norm = not legacy
    for fld in VQVAENATConfig.__dataclass_fields__.values():
        if getattr(args, fld.name, None) is None:
            default = preset.get(fld.name, fld.default)
            if isinstance(default, str) and default.startswith("${"):
                continue  # interpolations such as max_target_positions come from the task
            setattr(args, fld.name, default)
