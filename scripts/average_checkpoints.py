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

Refused: checkpoints of different trainings (``check_one_run``: the model options in their
cfg.model differ), and an --output that is one of the inputs, a name fairseq-train writes
(checkpoint_last.pt, checkpoint_best.pt, checkpointN.pt, checkpoint_N_M.pt: a resume would
start from it, a later average include it), or an existing file other than an earlier
average (unless --force). The output is written atomically.
"""

import argparse
import dataclasses
import functools
import re
import sys
from pathlib import Path

import torch

from fairseq_vqvae.checkpoints import output_refusal, save_atomically

_EPOCH = re.compile(r"checkpoint(\d+)\.pt$")
# Options that the checkpoints of one training run may disagree on: a resumed run may change
# its learning-rate schedule, length and precision, and the data may move. fairseq's own run
# options (its common, dataset, distributed, checkpoint and optimization groups: lr,
# max_update, seed, save_dir, fp16, batch sizes, logging, devices, ...) and the task's
# validation and decoding options (eval_*, gen_*) are not compared either; everything else
# in cfg.model is (the model's options, the task's data options, criterion and optimizer).
SCHEDULE_OPTIONS = frozenset(
    {
        "lr",
        "max_update",
        "seed",
        "save_dir",
        "warmup_updates",
        "warmup_init_lr",
        "data",
        "bf16_autocast",
    }
)
UNCOMPARED_PREFIXES = ("eval_", "gen_")


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


@functools.cache
def _fairseq_run_options() -> frozenset:
    """The fields of fairseq's own option groups (FairseqConfig's dataclass groups)."""
    from fairseq.dataclass.configs import FairseqConfig

    return frozenset(
        option.name
        for group in dataclasses.fields(FairseqConfig)
        if dataclasses.is_dataclass(group.type)
        for option in dataclasses.fields(group.type)
    )


def _model_options(state: dict) -> dict | None:
    """cfg.model of a checkpoint as a dict (fairseq-train's namespace or a model config)."""
    model = (state.get("cfg") or {}).get("model")
    if isinstance(model, argparse.Namespace):
        return vars(model)
    return dict(model) if isinstance(model, dict) else None


def _compared(option: str) -> bool:
    return not (
        option in SCHEDULE_OPTIONS
        or option.startswith(UNCOMPARED_PREFIXES)
        or option in _fairseq_run_options()
    )


def check_one_run(paths: list[Path], states: list[dict]) -> None:
    """Refuse checkpoints whose model options differ (an option that only one of them has,
    e.g. one added to the code during the run, is not compared)."""
    newest = _model_options(states[-1])
    for path, state in zip(paths[:-1], states[:-1]):
        options = _model_options(state)
        if newest is None or options is None:
            continue
        for option in sorted(options.keys() & newest.keys()):
            if options[option] != newest[option] and _compared(option):
                raise SystemExit(
                    f"average_checkpoints.py: error: {path} and {paths[-1]} were trained "
                    f"with different --{option.replace('_', '-')} ({options[option]!r} and "
                    f"{newest[option]!r}): average checkpoints of one training run only "
                    f"(fewer with --num-epoch-checkpoints)"
                )


def average(paths: list[Path]) -> dict:
    """The newest checkpoint of ``paths`` with its model's floating-point tensors averaged."""
    states = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    check_one_run(paths, states)
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --output that is not an earlier average (never an "
        "input, nor checkpoint_last.pt, checkpoint_best.pt or another fairseq-train name)",
    )
    args = parser.parse_args(argv)
    if args.num_epoch_checkpoints < 1:
        parser.error(
            f"--num-epoch-checkpoints must be at least 1, got {args.num_epoch_checkpoints}"
        )
    paths = epoch_checkpoints(args.save_dir, args.num_epoch_checkpoints)
    refusal = output_refusal(args.output, paths, args.force, "averaged_from")
    if refusal:
        parser.error(refusal)
    state = average(paths)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(state, args.output)
    print(f"averaged {', '.join(p.name for p in paths)} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
