"""Seconds per training update of a fairseq model, fp32 against --bf16-autocast.

Times forward + backward on the same batches, alternating the two modes (so that a busy
machine slows both alike), and prints one JSON line per round plus a summary. Any
fairseq-train arguments after ``--`` (data, task, arch, criterion, model flags)::

    python scripts/train_step_speed.py --threads 1 -- runs/multi30k/distill/data-bin \\
        --user-dir fairseq_vqvae --task translation_vqvae --arch vqvae_nat_small \\
        --criterion vqvae_em --bottleneck soft_em --num-samples 10 --share-all-embeddings --cpu
"""

import argparse
import json
import statistics
import sys
import time


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
        "fairseq_args", nargs=argparse.REMAINDER, help="-- then fairseq-train flags"
    )
    args = parser.parse_args(argv)
    fairseq_args = (
        args.fairseq_args[1:] if args.fairseq_args[:1] == ["--"] else args.fairseq_args
    )
    if not fairseq_args:
        parser.error(
            "give the fairseq-train flags after '--' (data folder, task, arch, ...)"
        )

    import torch
    from fairseq import options, tasks, utils

    torch.set_num_threads(args.threads)
    train_parser = options.get_training_parser()
    cfg = options.parse_args_and_arch(train_parser, input_args=fairseq_args)
    utils.import_user_module(cfg)
    task = tasks.setup_task(cfg)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg), task.build_criterion(cfg)
    batches = task.get_batch_iterator(
        task.dataset("train"),
        max_tokens=args.max_tokens,
        max_positions=(1024, 1024),
        seed=3,
    ).next_epoch_itr(shuffle=True)
    batches = [next(batches) for _ in range(args.batches + 1)]
    model.train()

    def step(sample, autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _, _ = criterion(model, sample)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    timings = {False: [], True: []}
    for round_ in range(args.rounds):
        for autocast in (False, True):
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
