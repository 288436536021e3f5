"""fairseq-generate with the latent predictor's codes swapped: how much do its codes steer the
decoder, and how much does a near miss cost?

    python research/swap_codes.py MODE DATA --path CKPT --user-dir fairseq_vqvae \\
        --task translation_vqvae --gen-subset valid --max-tokens 4096 --cpu \\
        --remove-bpe --scoring sacrebleu --tokenizer moses --source-lang en --target-lang de

takes the arguments of ``fairseq-generate`` after MODE, and decodes every sentence from

* ``predicted``: the predictor's own greedy codes (plain fairseq-generate);
* ``shuffled``: the greedy codes of another sentence of the same batch (a random permutation;
  the codes the predictor gives, on the wrong sentence);
* ``random``: codes drawn uniformly from the codebook;
* ``expected:T`` (T > 0): at each step of the greedy search, the code nearest the code vector
  the predictor expects, sum_k p_T(k) c_k, with p_T its distribution at temperature T (the
  code of least expected squared distance: a Bayes choice over the codebook's geometry, where
  the argmax is one over code identities); greedy search of one length only (no
  ``--gen-latent-beam``, ``--gen-latent-samples`` or ``--gen-length-beam`` above 1);
* ``neighbour:R`` (R >= 1): the reference's own codes (``--gen-oracle-latents``, added here)
  with each code replaced by its R-th nearest other code of the same slice (Euclidean, in the
  checkpoint's codebook). R=1 is the nearest miss a predictor can make.

A diagnostic for the README's "third stage" section: when ``shuffled`` scores far below
``predicted``, the decoder reads its codes closely and a wrong predicted code costs BLEU; when
``neighbour:1`` scores near the oracle, the codebook's geometry is one the decoder shares, and a
predictor that errs towards near codes loses little. ``expected:T`` and ``neighbour:R`` end
with one line on stderr that says how many codes they changed.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fairseq_vqvae.bottleneck import em  # noqa: E402

PLAIN_MODES = ("predicted", "shuffled", "random")
MODES = (*PLAIN_MODES, "expected:T", "neighbour:R")
# Flags that would change what expected:T means (the patched scores are distances, not the
# predictor's log-probabilities): refused there.
ONE_CANDIDATE_FLAGS = ("--gen-latent-beam", "--gen-latent-samples", "--gen-length-beam")


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


def neighbour_rank(mode: str) -> int | None:
    """R of ``neighbour:R``; None for the other modes. Raises ValueError for a bad R."""
    if not mode.startswith("neighbour:"):
        return None
    text = mode.partition(":")[2]
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"neighbour:R needs an integer R >= 1, got {mode!r}")
    return int(text)


def expected_temperature(mode: str) -> float | None:
    """T of ``expected:T``; None for the other modes. Raises ValueError for a bad T."""
    if not mode.startswith("expected:"):
        return None
    try:
        value = float(mode.partition(":")[2])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected:T needs a number T > 0, got {mode!r}")
    return value


def flag_values(args: list[str], name: str) -> list[str]:
    """The values given to ``name`` in ``args`` (``--name V`` or ``--name=V``); a flag with
    no value gives ``""``."""
    values = []
    for i, arg in enumerate(args):
        if arg == name:
            following = args[i + 1] if i + 1 < len(args) else ""
            values.append("" if following.startswith("--") else following)
        elif arg.startswith(name + "="):
            values.append(arg.partition("=")[2])
    return values


def refused_flags(mode: str, args: list[str]) -> str | None:
    """Why ``args`` do not fit ``mode`` (one line), or None."""
    swaps_predicted = mode in ("shuffled", "random") or mode.startswith("expected:")
    if swaps_predicted and flag_values(args, "--gen-oracle-latents"):
        return (
            f"{mode} swaps the predictor's codes, which --gen-oracle-latents never "
            "reads; drop it (neighbour:R adds it itself)"
        )
    if mode.startswith("expected:"):
        for name in ONE_CANDIDATE_FLAGS:
            if any(value not in ("", "0", "1") for value in flag_values(args, name)):
                return f"{mode} is a greedy search of one candidate: drop {name}"
    return None


def neighbour_order(weight: torch.Tensor) -> torch.Tensor:
    """(S, K, K): row [s, k] lists the codes of slice s of ``weight`` (S, K, D) from the
    nearest to the farthest from code k (Euclidean), code k itself first; ties go to the
    lower index."""
    distances = torch.cdist(weight.float(), weight.float())  # (S, K, K)
    distances.diagonal(dim1=1, dim2=2).fill_(-1.0)  # a code first in its own order
    return distances.argsort(dim=-1, stable=True)


def neighbours(order: torch.Tensor, rank: int, codes: torch.Tensor) -> torch.Tensor:
    """Each code of ``codes`` (..., S) replaced by its ``rank``-th nearest other code of the
    same slice, from ``neighbour_order``'s (S, K, K) table."""
    slices, size, _ = order.shape
    if rank >= size:
        raise ValueError(
            f"neighbour:{rank} needs a codebook of more than {rank} codes, this one has {size}"
        )
    slice_index = torch.arange(slices, device=codes.device).expand_as(codes)
    return order[..., rank].to(codes.device)[slice_index, codes]


def expected_code_logits(
    logits: torch.Tensor, weight: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Logits (..., S, K) whose argmax is the code nearest the expected code vector
    sum_k softmax(logits / T)_k c_k of each slice of ``weight`` (S, K, D): minus the squared
    distances to it."""
    probs = (logits.float() / temperature).softmax(-1)
    expected = torch.einsum("...sk,skd->...sd", probs, weight.float())
    lead = expected.shape[:-2]
    distances = em.squared_distances(expected.reshape(-1, *expected.shape[-2:]), weight)
    return -distances.reshape(*lead, *distances.shape[-2:])


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else ""
    try:
        rank, temperature = neighbour_rank(mode), expected_temperature(mode)
    except ValueError as error:
        sys.exit(f"swap_codes.py: {error}")
    if mode not in PLAIN_MODES and rank is None and temperature is None:
        sys.exit(
            f"usage: swap_codes.py {{{','.join(MODES)}}} <fairseq-generate arguments>"
        )
    args = argv[1:]
    refused = refused_flags(mode, args)
    if refused:
        sys.exit(f"swap_codes.py: {refused}")
    import fairseq  # noqa: F401  (the plugin registers its parts when fairseq is loaded)

    from fairseq_vqvae import criterion, model, task  # noqa: F401
    from fairseq_vqvae.generator import VQVAENATGenerator
    from fairseq_vqvae.latent import CachedSteps, FairseqSteps, LatentPredictor

    changed = {"codes": 0, "of": 0}
    report = None
    if rank is not None:
        oracle, table = VQVAENATGenerator.oracle_codes, {}

        def neighbour_codes(model, sample, encoder_out):
            codes, padding, lengths = oracle(model, sample, encoder_out)
            if "order" not in table:  # the codebook does not change while decoding
                table["order"] = neighbour_order(model.bottleneck.codebook.weight)
            moved = neighbours(table["order"], rank, codes)
            kept = ~padding
            changed["codes"] += int((moved != codes)[kept].sum())
            changed["of"] += int(kept.sum()) * codes.shape[-1]
            return moved, padding, lengths

        VQVAENATGenerator.oracle_codes = staticmethod(neighbour_codes)
        if not flag_values(args, "--gen-oracle-latents"):
            args.append("--gen-oracle-latents")
        report = "of the references' codes moved to their neighbour"
    elif temperature is not None:
        candidates, codebook = VQVAENATGenerator.candidates, {}

        def candidates_keeping_the_codebook(self, model, sample, encoder_out):
            codebook["weight"] = model.bottleneck.codebook.weight
            return candidates(self, model, sample, encoder_out)

        def expected(step):
            def expected_step(self, x):
                logits = step(self, x)
                out = expected_code_logits(logits, codebook["weight"], temperature)
                changed["codes"] += int((out.argmax(-1) != logits.argmax(-1)).sum())
                changed["of"] += out[..., 0].numel()
                return out

            return expected_step

        VQVAENATGenerator.candidates = candidates_keeping_the_codebook
        # The search's steps, either way it runs them (CachedSteps does not call FairseqSteps')
        for steps in (FairseqSteps, CachedSteps):
            steps.__call__ = expected(steps.__call__)
        report = (
            "search steps chose another code than the argmax (steps of finished "
            "sentences included)"
        )
    else:
        search = LatentPredictor.search

        def swapped_search(
            self, encoder_out, num_latents, beam_size=1, samples=0, lengths=None
        ):
            codes, scores = search(
                self, encoder_out, num_latents, beam_size, samples, lengths
            )
            return swap(codes, mode, self.codebook_size), scores

        LatentPredictor.search = swapped_search
    from fairseq_cli.generate import cli_main

    sys.argv = [sys.argv[0], *args]
    try:
        cli_main()
    except ValueError as error:  # e.g. neighbour:R with R >= the codebook's size
        sys.exit(f"swap_codes.py: {error}")
    if report:
        print(
            f"swap_codes.py {mode}: {changed['codes']} of {changed['of']} {report}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
