"""Checks of a checkpoint against the model that loads it (``VQVAENATModel.load_state_dict``),
each failing with one line that says what to change (``errors.OptionError``): what it is, its
codebook, its dictionaries (``signature``), its bottleneck and latent predictor kinds.
"""

import hashlib

import torch

from .bottleneck import BOTTLENECKS
from .errors import OptionError


def check_state_dict(model, state_dict):
    """Refuse a checkpoint that is not a vqvae_nat model, holds a non-finite codebook, or was
    trained with other dictionaries or another bottleneck kind (``check_signature``)."""
    if "bottleneck.codebook.weight" not in state_dict:
        raise OptionError(
            "this checkpoint is not a vqvae_nat model (it has no bottleneck.codebook.weight); "
            "load it with the task and --arch it was trained with"
        )
    for key in (
        "bottleneck.codebook.weight",
        "bottleneck.codebook.ema_counts",
        "bottleneck.codebook.ema_sums",
    ):
        if key in state_dict and not bool(torch.isfinite(state_dict[key]).all()):
            raise OptionError(
                f"this checkpoint's codebook is not finite ({key} holds NaN or inf): the run "
                f"diverged before it was saved; load or resume from an earlier checkpoint"
            )
    for key, ours, what in (
        ("encoder.embed_tokens.weight", model.encoder.embed_tokens.weight, "source"),
        ("embed_target.weight", model.embed_target.weight, "target"),
    ):
        if key not in state_dict:
            continue
        theirs = state_dict[key].shape
        if ours.shape[1:] != theirs[1:]:
            raise OptionError(
                f"width mismatch: the checkpoint's {what} embeddings are {theirs[1]} wide, "
                f"the command line builds {ours.shape[1]} (--encoder-embed-dim "
                f"{ours.shape[1]}): pass --encoder-embed-dim {theirs[1]} (or drop the "
                f"override), or train a new model"
            )
        if ours.shape != theirs:
            raise OptionError(
                f"dictionary mismatch: the checkpoint's {what} dictionary has {theirs[0]} "
                f"symbols, the data's has {ours.shape[0]}; binarize the data with the checkpoint's "
                f"dictionaries (fairseq-preprocess --srcdict/--tgtdict, or --joined-dictionary)"
            )
    check_latent_layers(model.cfg.latent_layers, state_dict)
    check_signature(model.signature, state_dict)


def check_latent_layers(ours: int, state_dict) -> None:
    """Refuse a checkpoint whose latent predictor has another depth than --latent-layers (torch
    would list dozens of missing or unexpected keys)."""
    prefix = "latent_predictor.layers."
    layers = {
        key[len(prefix) :].split(".")[0] for key in state_dict if key.startswith(prefix)
    }
    if layers and len(layers) != ours:
        raise OptionError(
            f"this checkpoint's latent predictor has {len(layers)} layers, the command line "
            f"builds {ours} (--latent-layers {ours}): pass --latent-layers {len(layers)}, or, to "
            f"start a second stage from it (--finetune-from-model), give it a fresh "
            f"{ours}-layer predictor with scripts/fresh_latent_predictor.py"
        )


# The kinds a signature records, in its order after the two dictionaries: (option, its
# values in index order). A signature saved before a kind was recorded holds its first value.
SIGNED_KINDS = (
    ("bottleneck", tuple(BOTTLENECKS)),
    ("latent_predictor_kind", ("autoregressive", "parallel")),
)


def signature(cfg, source_dictionary, target_dictionary) -> torch.Tensor:
    """(2 + kinds,) what a checkpoint's weights only make sense with and shapes do not show:
    the fingerprints of both dictionaries (symbols in order) and the ``SIGNED_KINDS``
    (the bottleneck, the latent predictor's: both have the same parameters either way)."""
    kinds = [values.index(str(getattr(cfg, name))) for name, values in SIGNED_KINDS]
    return torch.tensor(
        [
            dictionary_fingerprint(source_dictionary),
            dictionary_fingerprint(target_dictionary),
            *kinds,
        ]
    )


def dictionary_fingerprint(dictionary) -> int:
    digest = hashlib.sha256("\n".join(dictionary.symbols).encode("utf-8")).digest()
    return int.from_bytes(digest[:7], "big")  # fits an int64


def check_signature(ours: torch.Tensor, state_dict) -> None:
    """Refuse a checkpoint trained with other dictionaries (same size, other symbols), another
    --bottleneck or another --latent-predictor-kind (resuming would silently continue with the
    command line's)."""
    theirs = state_dict.get("signature")
    if theirs is None:  # saved before checkpoints had one: nothing to compare
        state_dict["signature"] = ours.clone()
        return
    for i, what in ((0, "source"), (1, "target")):
        if int(theirs[i]) != int(ours[i]):
            raise OptionError(
                f"dictionary mismatch: the data's {what} dictionary is not the one this "
                f"checkpoint was trained with (same size, other symbols or order); binarize "
                f"the data with the checkpoint's dictionaries (fairseq-preprocess --srcdict/--tgtdict)"
            )
    if len(theirs) < len(ours):  # saved before the later kinds were recorded
        theirs = torch.cat([theirs, ours.new_zeros(len(ours) - len(theirs))])
        state_dict["signature"] = theirs
    for i, (name, values) in enumerate(SIGNED_KINDS, start=2):
        if int(theirs[i]) != int(ours[i]):
            flag, was, now = (
                "--" + name.replace("_", "-"),
                values[int(theirs[i])],
                values[int(ours[i])],
            )
            raise OptionError(
                f"this checkpoint was trained with {flag} {was}, the command line says "
                f"{flag} {now}: resume with {flag} {was}, or train the other one in a new "
                f"--save-dir"
            )
