"""Give a trained vqvae_nat checkpoint a freshly initialised latent predictor.

  python scripts/fresh_latent_predictor.py CHECKPOINT --output PATH [--latent-layers N] [--seed S]

Every other tensor of the model (source encoder, autoencoder, codebook and its EMA statistics,
decoder, length head) is copied unchanged; the latent predictor is built as a new model's would
be, with N layers (default: the checkpoint's), from seed S, and the checkpoint's configuration
says N layers. Then a second stage trains the predictor alone on the frozen model's codes:

  fairseq-train DATA ... --latent-predictor-only --finetune-from-model PATH --latent-layers N

Why: trained together with the rest, the predictor memorises the codes of the training set
(README, "The converged study": 42% teacher-forced accuracy on training codes, 10.7% on
validation). A fresh one trained alone sees codes that no longer move, and can have its own
dropout (--latent-predictor-dropout), depth and early stopping; with fewer layers it is also
cheaper (it is about a quarter of batch-1 decoding time). The optimizer state is left out:
fairseq's --finetune-from-model starts a new one anyway.

--output is never the checkpoint itself nor a name fairseq-train writes (checkpoint_last.pt,
checkpoint_best.pt, checkpointN.pt, ...: the second stage's fairseq-train would resume from
it or replace it); an existing file only when it is an earlier output of this script, or with
--force. It is written atomically.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch

from fairseq_vqvae.checkpoints import output_refusal, save_atomically

PREFIX = "latent_predictor."


def fail(message: str):
    raise SystemExit(f"fresh_latent_predictor.py: error: {message}")


def fresh_predictor_state(state: dict, latent_layers=None, seed: int = 1) -> dict:
    """``state`` (a fairseq checkpoint of vqvae_nat) with a new latent predictor."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    from fairseq_vqvae.config import VQVAENATConfig, validate
    from fairseq_vqvae.model import build_latent_predictor

    model_state = state.get("model") or {}
    if "bottleneck.codebook.weight" not in model_state:
        fail("this checkpoint is not a vqvae_nat model (no bottleneck.codebook.weight)")
    namespace = copy.copy((state.get("cfg") or {}).get("model"))
    if not isinstance(namespace, argparse.Namespace):
        fail(
            "this checkpoint has no model configuration (cfg.model): checkpoints of "
            "fairseq before 0.10 are not supported"
        )
    if latent_layers is not None:
        namespace.latent_layers = latent_layers
    # as build_model: the preset fills in what an older checkpoint's namespace lacks
    ARCH_CONFIG_REGISTRY[namespace.arch](namespace)
    cfg = VQVAENATConfig.from_namespace(namespace)
    try:
        validate(cfg)
    except ValueError as error:
        fail(str(error))
    torch.manual_seed(seed)
    predictor = build_latent_predictor(cfg).state_dict()
    model = {k: v for k, v in model_state.items() if not k.startswith(PREFIX)}
    model.update({PREFIX + k: v for k, v in predictor.items()})
    result = {k: v for k, v in state.items() if k != "last_optimizer_state"}
    result["model"] = model
    result["cfg"] = dict(state["cfg"], model=namespace)
    # fairseq adds this to the next stage's training time even under --finetune-from-model
    extra = state.get("extra_state") or {}
    result["extra_state"] = {
        k: v for k, v in extra.items() if k != "previous_training_time"
    }
    result["fresh_latent_predictor"] = {
        "latent_layers": cfg.latent_layers,
        "seed": seed,
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "checkpoint", type=Path, help="a vqvae_nat checkpoint of fairseq-train"
    )
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument(
        "--latent-layers",
        type=int,
        metavar="N",
        help="layers of the new predictor (default: as many as the checkpoint's)",
    )
    parser.add_argument("--seed", type=int, default=1, help="initialisation seed (1)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --output that this script did not write (never the "
        "checkpoint itself, nor checkpoint_last.pt or another fairseq-train name)",
    )
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"no checkpoint at {args.checkpoint}")
    if args.output.resolve() == args.checkpoint.resolve():
        parser.error("--output must not be the checkpoint itself: write a new file")
    refusal = output_refusal(
        args.output, [args.checkpoint], args.force, "fresh_latent_predictor"
    )
    if refusal:
        parser.error(refusal)
    import fairseq  # noqa: F401  (the plugin registers its fairseq parts after fairseq)

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    result = fresh_predictor_state(state, args.latent_layers, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(result, args.output)
    layers = result["fresh_latent_predictor"]["latent_layers"]
    print(
        f"{args.checkpoint} with a fresh {layers}-layer latent predictor -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
