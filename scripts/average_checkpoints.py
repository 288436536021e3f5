"""Average the newest N epoch checkpoints of a fairseq save directory into one checkpoint.

  python scripts/average_checkpoints.py SAVE_DIR --num-epoch-checkpoints N --output PATH

Checkpoint averaging is a standard last step for non-autoregressive models (GLAT, CMLM,
DA-Transformer average 5). fairseq has the script in its repository (scripts/
average_checkpoints.py) but not in its installed wheel, so this one does the same for the
files fairseq-train writes with --keep-last-epochs N: every floating-point tensor of the model
(parameters, and vqvae_nat's codebook and its EMA counts and sums) is the mean over the N
checkpoints; the other entries (integer buffers such as the number of M-steps, the
configuration signature) and the rest of the checkpoint (cfg, the newest epoch's extra state)
are the newest checkpoint's. The optimizer state is left out: the result is for decoding
(fairseq-generate, fairseq-interactive, scripts/benchmark.py), not for resuming.
"""

import argparse
import re
import sys
from pathlib import Path

import torch

_EPOCH = re.compile(r"checkpoint(\d+)\.pt$")


def epoch_checkpoints(save_dir: Path, count: int) -> list[Path]:
    """The newest ``count`` checkpoint{EPOCH}.pt of ``save_dir``, oldest first."""
    found = sorted(
        (int(m.group(1)), p)
        for p in save_dir.glob("checkpoint*.pt")
        if (m := _EPOCH.search(p.name))
    )
    if len(found) < count:
        raise SystemExit(
            f"average_checkpoints.py: error: {save_dir} has {len(found)} epoch checkpoints "
            f"(checkpointEPOCH.pt), {count} are needed: train with --keep-last-epochs {count} "
            "(not --no-epoch-checkpoints) or ask for fewer"
        )
    return [p for _, p in found[-count:]]


def average(paths: list[Path]) -> dict:
    """The newest checkpoint of ``paths`` with its model's floating-point tensors averaged."""
    states = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    newest = states[-1]
    keys = list(newest["model"])
    for path, state in zip(paths, states):
        if list(state["model"]) != keys:
            raise SystemExit(
                f"average_checkpoints.py: error: {path} holds other model tensors than "
                f"{paths[-1]}: average checkpoints of one training run only"
            )
    model = {}
    for key in keys:
        tensor = newest["model"][key]
        if tensor.is_floating_point():
            total = sum(s["model"][key].double() for s in states)
            model[key] = (total / len(states)).to(tensor.dtype)
        else:
            model[key] = tensor
    result = {k: v for k, v in newest.items() if k != "last_optimizer_state"}
    result["model"] = model
    result["averaged_from"] = [p.name for p in paths]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("save_dir", type=Path, help="fairseq-train's --save-dir")
    parser.add_argument("--num-epoch-checkpoints", type=int, required=True, metavar="N")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.num_epoch_checkpoints < 1:
        parser.error(
            f"--num-epoch-checkpoints must be at least 1, got {args.num_epoch_checkpoints}"
        )
    paths = epoch_checkpoints(args.save_dir, args.num_epoch_checkpoints)
    state = average(paths)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(args.output)  # a killed run leaves no half-written checkpoint
    print(f"averaged {', '.join(p.name for p in paths)} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
