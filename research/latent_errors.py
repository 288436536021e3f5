"""How far the latent predictor's wrong codes are from the right ones.

  python research/latent_errors.py CHECKPOINT DATA_BIN [--subset valid] [--max-tokens 4096]

Loads a vqvae_nat checkpoint with fairseq's API and, for every latent of every sentence of the
subset, compares the code the autoencoder gives the reference (the "oracle" code, what
``--gen-oracle-latents`` decodes) with the latent predictor's distribution given the source and
the oracle codes before it (teacher forcing, as the logged ``latent_acc``). Prints one JSON
object: for each r, the share of latents whose predicted (argmax) code is the oracle code or one
of its r nearest other codes in the codebook (``argmax_within_neighbours``), and the share whose
oracle code is among the predictor's r+1 most likely codes (``oracle_in_top``); the median
neighbour rank of the argmax over all latents (0: right) and over the wrong ones only. With
several slices each latent counts once per slice. Near misses (small ranks) are what a code
choice over the codebook's geometry could repair (``swap_codes.py expected:T``); far ones are
not.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from swap_codes import neighbour_order  # noqa: E402

RANKS = (0, 1, 2, 4, 8, 16, 64, 256)


def neighbour_ranks(weight: torch.Tensor) -> torch.Tensor:
    """(S, K, K): [s, k, j] is how many other codes of slice s are nearer code k than code j
    is (0 for j == k; ties go to the lower index)."""
    order = neighbour_order(weight)
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def tally(logits, oracle, keep, ranks) -> dict:
    """Per code (latent and slice) the rank of the argmax among the oracle code's neighbours
    and the rank of the oracle code among the predictor's codes, both with the argmax's tie
    rule (lower index first). logits (B, N, S, K), oracle (B, N, S), keep (B, N)."""
    slices = torch.arange(oracle.shape[-1], device=oracle.device).expand_as(oracle)
    argmax = logits.argmax(-1)
    neighbour = ranks[slices, oracle, argmax]  # (B, N, S)
    oracle_logit = logits.gather(-1, oracle.unsqueeze(-1))
    lower = torch.arange(logits.shape[-1], device=logits.device) < oracle.unsqueeze(-1)
    before = (logits > oracle_logit) | ((logits == oracle_logit) & lower)
    return {
        "neighbour": neighbour[keep].flatten(),
        "above": before.sum(-1)[keep].flatten(),
    }


def summary(neighbour: torch.Tensor, above: torch.Tensor) -> dict:
    count = neighbour.numel()
    if count == 0:
        raise ValueError("no latents in the subset")
    misses = neighbour[neighbour > 0].float()
    return {
        "latent_codes": count,  # latents x slices
        "argmax_within_neighbours": {
            str(r): round((neighbour <= r).float().mean().item(), 4) for r in RANKS
        },
        "oracle_in_top": {
            str(r + 1): round((above <= r).float().mean().item(), 4) for r in RANKS
        },
        "median_neighbour_rank_of_argmax": neighbour.float().median().item(),
        "median_neighbour_rank_of_wrong_argmax": misses.median().item()
        if misses.numel()
        else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data_bin")
    parser.add_argument("--subset", default="valid")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.max_tokens < 1 or args.threads < 1:
        parser.error("--max-tokens and --threads must be at least 1")
    if not Path(args.checkpoint).is_file():
        parser.error(f"no checkpoint at {args.checkpoint}")
    torch.set_num_threads(args.threads)
    import importlib

    from fairseq import checkpoint_utils

    for part in ("criterion", "model", "task"):  # registers them with fairseq
        importlib.import_module(f"fairseq_vqvae.{part}")

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data_bin}
    )
    model = models[0].eval()
    task.load_dataset(args.subset)
    batches = task.get_batch_iterator(
        task.dataset(args.subset), max_tokens=args.max_tokens
    ).next_epoch_itr(shuffle=False)
    ranks = neighbour_ranks(model.bottleneck.codebook.weight)
    parts = {"neighbour": [], "above": []}
    with torch.no_grad():
        for sample in batches:
            net = sample["net_input"]
            encoder_out = model.encoder(
                net["src_tokens"], src_lengths=net["src_lengths"]
            )
            _, padding, _, vq = model.autoencode(
                sample["target"], net["src_lengths"], encoder_out
            )
            predictor = model.latent_predictor
            lengths = sample["target"].ne(model.pad).sum(1)
            logits = predictor(
                predictor.embed(vq.codes, lengths=lengths), encoder_out, padding
            )
            for key, value in tally(logits, vq.codes, ~padding, ranks).items():
                parts[key].append(value)
    result = summary(torch.cat(parts["neighbour"]), torch.cat(parts["above"]))
    result.update(checkpoint=args.checkpoint, subset=args.subset)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
