"""Seconds per training update of a fairseq model, fp32 against --bf16-autocast.

Times forward + backward on the same batches, alternating the two modes (so that a busy
machine slows both alike), and prints one JSON line per round plus a summary. Any
fairseq-train arguments after ``--`` (data, task, arch, criterion, model flags)::

    python research/train_step_speed.py --threads 1 -- runs/multi30k/distill/data-bin \\
        --user-dir fairseq_vqvae --task translation_vqvae --arch vqvae_nat_small \\
        --criterion vqvae_em --bottleneck soft_em --num-samples 10 --compress-steps 3 \\
        --codebook-init uniform --share-all-embeddings --cpu

``--onednn-cache-capacities 1024,65536`` times --bf16-autocast instead once per value of
oneDNN's primitive cache capacity (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, read once when a
process starts, so each value runs in its own child process). Under autocast every new batch
shape JIT-compiles new oneDNN kernels; an epoch's batches come back every epoch, and the
cache keeps their kernels only if it is large enough (the default holds 1,024). Round 0
compiles them; later rounds show what training sees from its second epoch on: give
``--batches`` about as many batches as an epoch has, or at least a few dozen. Repeat the
values (``1024,65536,1024,65536``) to see how much a shared machine drifts between them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from training_setup import build_training, fairseq_flags

CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def _capacities(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated non-negative integers (0 disables the cache), got '{text}'"
        )
    return values


def compare_caches(args, argv) -> int:
    """One child process per capacity (--modes bf16), then one summary line."""
    child, skip = [], False
    for arg in argv:  # the same arguments less the capacities (both spellings)
        if skip or arg.startswith("--onednn-cache-capacities="):
            skip = False
        elif arg == "--onednn-cache-capacities":
            skip = True
        else:
            child.append(arg)
    results = []  # (capacity, per-round seconds), in run order: a value may repeat
    for capacity in args.onednn_cache_capacities:
        env = dict(os.environ, **{CACHE_VARIABLE: str(capacity)})
        proc = subprocess.run(
            [sys.executable, __file__, "--modes", "bf16", *child],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rounds = []
        for line in proc.stdout.splitlines():
            if line.startswith("{") and "round" in (record := json.loads(line)):
                print(json.dumps({CACHE_VARIABLE: capacity, **record}), flush=True)
                rounds.append(record["s_per_update"])
        results.append((capacity, rounds))
    print(
        json.dumps(
            {
                "summary": True,
                "threads": args.threads,
                "batches": args.batches,
                "bf16_autocast": True,
                "runs": [
                    {
                        CACHE_VARIABLE: c,
                        "first_round_s_per_update": r[0],
                        "last_round_s_per_update": r[-1],
                    }
                    for c, r in results
                ],
            }
        )
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1)"
    )
    parser.add_argument(
        "--batches", type=int, default=3, help="timed batches per round"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of (fp32, autocast)"
    )
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument(
        "--modes",
        default="fp32,bf16",
        help="what each round times, in order: fp32 and/or bf16 (--bf16-autocast)",
    )
    parser.add_argument(
        "--onednn-cache-capacities",
        type=_capacities,
        help="compare these oneDNN primitive cache capacities under --bf16-autocast, e.g. 1024,65536",
    )
    parser.add_argument(
        "fairseq_args", nargs=argparse.REMAINDER, help="-- then fairseq-train flags"
    )
    args = parser.parse_args(argv)
    fairseq_args = fairseq_flags(parser, args.fairseq_args)
    modes = {"fp32": False, "bf16": True}
    if not args.modes or any(m not in modes for m in args.modes.split(",")):
        parser.error(f"--modes: comma-separated fp32 and/or bf16, got '{args.modes}'")
    if args.onednn_cache_capacities:
        return compare_caches(args, sys.argv[1:] if argv is None else argv)

    import torch

    torch.set_num_threads(args.threads)
    cfg, _, model, criterion, batches = build_training(
        fairseq_args, args.max_tokens, args.batches + 1
    )
    model.train()

    def step(sample, autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _, _ = criterion(model, sample)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    timings = {False: [], True: []}
    for round_ in range(args.rounds):
        for autocast in [modes[m] for m in args.modes.split(",")]:
            step(batches[0], autocast)  # warm-up
            started = time.perf_counter()
            losses = [step(b, autocast) for b in batches[1:]]
            seconds = (time.perf_counter() - started) / args.batches
            timings[autocast].append(seconds)
            print(
                json.dumps(
                    {
                        "round": round_,
                        "bf16_autocast": autocast,
                        "s_per_update": round(seconds, 3),
                        "losses": [round(x, 3) for x in losses],
                    }
                ),
                flush=True,
            )
    if not (timings[False] and timings[True]):
        return 0  # one mode: its rounds are the result
    fp32, bf16 = statistics.median(timings[False]), statistics.median(timings[True])
    print(
        json.dumps(
            {
                "summary": True,
                "threads": args.threads,
                "arch": cfg.arch,
                "fp32_s_per_update": round(fp32, 3),
                "bf16_autocast_s_per_update": round(bf16, 3),
                "speedup": round(fp32 / bf16, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
