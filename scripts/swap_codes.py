"""fairseq-generate with the latent predictor's codes swapped: how much do its codes steer the
decoder?

    python scripts/swap_codes.py MODE DATA --path CKPT --user-dir fairseq_vqvae \\
        --task translation_vqvae --gen-subset valid --max-tokens 4096 --cpu \\
        --remove-bpe --scoring sacrebleu --tokenizer moses --source-lang en --target-lang de

takes the arguments of ``fairseq-generate`` after MODE, and decodes every sentence from

* ``predicted``: the predictor's own greedy codes (plain fairseq-generate);
* ``shuffled``: the greedy codes of another sentence of the same batch (a random permutation;
  the codes the predictor gives, on the wrong sentence);
* ``random``: codes drawn uniformly from the codebook.

A diagnostic for the README's "third stage" section: when ``shuffled`` scores far below
``predicted``, the decoder reads its codes closely and a wrong predicted code costs BLEU.
"""

import sys

import torch

MODES = ("predicted", "shuffled", "random")


def swap(codes: torch.Tensor, mode: str, codebook_size: int, generator=None):
    """The candidates' codes (B, C, N, S) as ``mode`` says; a sentence keeps its latent count
    (the codes after it are never read)."""
    if mode == "predicted":
        return codes
    if mode == "shuffled":
        order = torch.randperm(codes.shape[0], generator=generator)
        return codes[order.to(codes.device)]
    if mode == "random":
        drawn = torch.randint(
            0, codebook_size, codes.shape, generator=generator, dtype=codes.dtype
        )
        return drawn.to(codes.device)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in MODES:
        sys.exit(
            f"usage: swap_codes.py {{{','.join(MODES)}}} <fairseq-generate arguments>"
        )
    mode = argv[0]
    import fairseq  # noqa: F401  (the plugin registers its parts when fairseq is loaded)

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from fairseq_vqvae import criterion, model, task  # noqa: F401
    from fairseq_vqvae.latent import LatentPredictor

    search = LatentPredictor.search

    def swapped_search(self, encoder_out, num_latents, beam_size=1, samples=0):
        codes, scores = search(self, encoder_out, num_latents, beam_size, samples)
        return swap(codes, mode, self.codebook_size), scores

    LatentPredictor.search = swapped_search
    from fairseq_cli.generate import cli_main

    sys.argv = [sys.argv[0], *argv[1:]]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
