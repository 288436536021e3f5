"""What fairseq's optimizer part of an update costs: ``adam`` against ``torch_adamw``.

Builds the model from fairseq-train flags, takes one batch's gradients, then for each
optimizer times what fairseq's trainer does with them every update (divide by the sample
size, clip or measure the gradient norm, step) and counts the compute operations it
dispatches (about its kernel launches on a GPU, where a small model's update is bound by
them). The forward and backward pass of the same batch is counted for scale. One JSON line
per optimizer, then a summary. Times on a shared machine drift: compare counts there::

    python research/optimizer_step_speed.py --device cpu -- runs/multi30k/distill_shared/data-bin \\
        --user-dir fairseq_vqvae --task translation_vqvae --arch vqvae_nat_small \\
        --criterion vqvae_em --bottleneck soft_em --compress-steps 3 --codebook-init uniform \\
        --share-all-embeddings --clip-norm 0
"""

import argparse
import json
import statistics
import sys
import time

from training_setup import build_training, fairseq_flags

# aten calls that launch no kernel (views, allocations), and those that do only when they copy.
NO_KERNEL = {
    "t", "detach", "detach_", "transpose", "view", "_unsafe_view", "expand", "permute",
    "unsqueeze", "squeeze", "select", "slice", "as_strided", "alias", "unflatten", "narrow",
    "split", "split_with_sizes", "chunk", "unbind", "lift_fresh", "empty", "empty_like",
    "empty_strided", "resolve_conj", "resolve_neg", "result_type", "set_", "numpy_T",
}  # fmt: skip
MAYBE_COPY = {"to", "reshape", "contiguous", "flatten", "type_as"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed updates each")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument(
        "--optimizers",
        default="adam,torch_adamw",
        help="comma-separated fairseq --optimizer names (default adam,torch_adamw)",
    )
    parser.add_argument(
        "fairseq_args", nargs=argparse.REMAINDER, help="-- then fairseq-train flags"
    )
    args = parser.parse_args(argv)
    fairseq_args = fairseq_flags(parser, args.fairseq_args)
    if args.device not in ("cpu", "cuda") or args.repeats < 1:
        parser.error("--device is cpu or cuda, --repeats at least 1")

    import torch
    from fairseq import optim, options, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from torch.profiler import ProfilerActivity, profile

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here")
    torch.set_num_threads(args.threads)
    cpu = ["--cpu"] if args.device == "cpu" else []
    cfg, _, model, criterion, (sample,) = build_training(
        [*fairseq_args, *cpu], args.max_tokens, 1
    )
    model, criterion = model.to(args.device), criterion.to(args.device)
    sample = utils.move_to_cuda(sample) if args.device == "cuda" else sample
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def operations(fn) -> int:
        """Compute operations ``fn`` dispatches: about its kernel launches on a GPU.

        Top-level aten calls, less views and allocations (no kernel), and less conversions
        and reshapes that copied nothing (no nested call).
        """
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
            sync()
        count = 0
        for event in prof.events():
            parent = event.cpu_parent
            if not event.name.startswith("aten::") or (
                parent is not None and parent.name.startswith("aten::")
            ):
                continue
            name = event.name[len("aten::") :]
            if name in NO_KERNEL or (name in MAYBE_COPY and not event.cpu_children):
                continue
            count += 1
        return count

    def forward_backward():
        loss, sample_size, _ = criterion(model, sample)
        loss.backward()
        return sample_size

    # A warm-up, and the gradients every optimizer steps with.
    sample_size = forward_backward()
    grads = [p.grad.detach().clone() for p in params]
    for p in params:
        p.grad = None
    forward_backward_ops = operations(forward_backward)
    for p in params:
        p.grad = None
    print(
        json.dumps(
            {
                "device": args.device,
                "arch": cfg.arch,
                "parameter_tensors": len(params),
                "forward_backward_operations": forward_backward_ops,
            }
        ),
        flush=True,
    )

    results = {}
    for name in args.optimizers.split(","):
        optimizer_cfg = options.parse_args_and_arch(
            options.get_training_parser(),
            input_args=[*fairseq_args, *cpu, "--optimizer", name],
        )
        optimizer = optim.build_optimizer(
            convert_namespace_to_omegaconf(optimizer_cfg).optimizer, params
        )

        def set_grads():
            for p, g in zip(params, grads):
                p.grad = g.clone()

        def update(optimizer=optimizer):
            optimizer.multiply_grads(1.0 / float(sample_size))
            optimizer.clip_grad_norm(cfg.clip_norm)
            optimizer.step()
            optimizer.zero_grad()

        set_grads()
        update()  # the moments' first allocation
        set_grads()
        ops = operations(update)
        seconds = []
        for _ in range(args.repeats):
            set_grads()
            sync()
            started = time.perf_counter()
            update()
            sync()
            seconds.append(time.perf_counter() - started)
        results[name] = {
            "optimizer": name,
            "class": type(optimizer).__name__,
            "operations_per_update": ops,
            "ms_per_update_median": round(1000 * statistics.median(seconds), 3),
        }
        print(json.dumps(results[name]), flush=True)
    summary = {"summary": True, "threads": args.threads}
    for name, result in results.items():
        summary[f"{name}_ms"] = result["ms_per_update_median"]
        summary[f"{name}_operations"] = result["operations_per_update"]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
