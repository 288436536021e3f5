"""Warm start of vqvae_nat from a fairseq autoregressive ``transformer`` (``--init-from-ar``).

Beyond the paper: the distillation teacher already has a trained source encoder, embeddings
(which are also the student's output projection with ``--share-all-embeddings``) and decoder
layers whose shapes match the student's one-pass token decoder. Copying them lets a short
CPU budget go into what is new: the autoencoder, the codebook and the latent predictor.
Initialising non-autoregressive decoders from an autoregressive model is common practice
(e.g. Guo et al. 2020, "Fine-tuning by curriculum learning for non-autoregressive NMT").

What is copied, by parameter name (fairseq checkpoint -> vqvae_nat):
    encoder.*                -> encoder.*           (embeddings and every encoder layer)
    decoder.embed_tokens     -> embed_target        (when the embeddings are not shared)
    decoder.layers.<i>.*     -> decoder_layers.<i>.* (the first min(both) layers)
    decoder.layer_norm.*     -> decoder_norm.*      (pre-norm models only)
The autoencoder, bottleneck, latent predictor and length head keep their initialisation.
"""

import logging
import os

import torch

from .errors import OptionError

logger = logging.getLogger(__name__)

__all__ = ["init_from_autoregressive"]


def init_from_autoregressive(model, path: str) -> int:
    """Copy the matching weights of the fairseq transformer checkpoint ``path`` into ``model``.

    Returns the number of tensors copied. Raises ``OptionError`` (a ``ValueError``) with what
    to change when the checkpoint is not a compatible fairseq transformer.
    """
    if not os.path.isfile(path):
        raise OptionError(f"--init-from-ar: no checkpoint file {path}")
    from . import compat  # noqa: F401  (fairseq checkpoints under torch >= 2.6)

    state = torch.load(path, map_location="cpu")
    theirs = state.get("model") if isinstance(state, dict) else None
    if (
        not theirs
        or "bottleneck.codebook.weight" in theirs
        or not _has(theirs, "decoder.layers.")
    ):
        raise OptionError(
            f"--init-from-ar needs a fairseq autoregressive transformer checkpoint (encoder.* and "
            f"decoder.layers.* weights, e.g. the teacher of scripts/train_teacher.sh); {path} is not one"
        )
    ours = model.state_dict()
    _check_norm_placement(ours, theirs, path)
    _check_encoder_extras(ours, theirs)
    pairs = _pairs(model, ours, theirs)
    _check_shapes(ours, theirs, pairs, path)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for ours_key, their_key in pairs:
            params[ours_key].copy_(theirs[their_key])
    copied_layers = _count_layers(pairs, "decoder_layers.")
    logger.info(
        "--init-from-ar: copied %d tensors from %s (encoder with %d layers, embeddings, %d of %d "
        "decoder layers)",
        len(pairs),
        path,
        _count_layers(pairs, "encoder.layers."),
        copied_layers,
        len(model.decoder_layers),
    )
    return len(pairs)


def _pairs(model, ours, theirs):
    """(our name, their name) for every tensor to copy."""
    pairs = []
    for key in ours:
        if (
            key.startswith("encoder.")
            and key in theirs
            and not key.endswith(".version")
        ):
            pairs.append((key, key))
        elif key == "embed_target.weight" and not model.cfg.share_all_embeddings:
            pairs.append((key, "decoder.embed_tokens.weight"))
        elif key.startswith("decoder_layers."):
            their_key = "decoder.layers." + key[len("decoder_layers.") :]
            if their_key in theirs:
                pairs.append((key, their_key))
        elif key.startswith("decoder_norm."):
            pairs.append((key, "decoder.layer_norm." + key[len("decoder_norm.") :]))
    missing = [their for _, their in pairs if their not in theirs]
    if "encoder.embed_tokens.weight" not in theirs or missing:
        raise OptionError(
            f"--init-from-ar: the checkpoint lacks {missing or ['encoder.embed_tokens.weight']}; "
            f"is it a fairseq transformer with --share-all-embeddings as this model?"
        )
    return pairs


def _check_encoder_extras(ours, theirs):
    unmatched = sorted(
        k
        for k in theirs
        if k.startswith("encoder.") and k not in ours and not _ignorable(k)
    )
    if unmatched:
        raise OptionError(
            f"--init-from-ar: the checkpoint's encoder has weights vqvae_nat's encoder does not "
            f"({', '.join(unmatched[:4])}{', ...' if len(unmatched) > 4 else ''}); vqvae_nat uses "
            f"sinusoidal positions and no embedding layer norm, so train the teacher without "
            f"--encoder-learned-pos/--layernorm-embedding"
        )


def _check_shapes(ours, theirs, pairs, path):
    for ours_key, their_key in pairs:
        if ours[ours_key].shape != theirs[their_key].shape:
            hint = (
                "binarize with the teacher's dictionary (fairseq-preprocess --srcdict/--tgtdict)"
                if "embed_tokens" in their_key
                else "give the student the teacher's --encoder-embed-dim and FFN dimensions"
            )
            raise OptionError(
                f"--init-from-ar: {their_key} has shape {tuple(theirs[their_key].shape)} in {path} "
                f"but {ours_key} has {tuple(ours[ours_key].shape)} here; {hint}"
            )


def _check_norm_placement(ours, theirs, path):
    """fairseq's pre-norm encoders end with encoder.layer_norm; post-norm ones do not."""
    ours_pre = "encoder.layer_norm.weight" in ours
    theirs_pre = "encoder.layer_norm.weight" in theirs
    if ours_pre != theirs_pre:
        fix = (
            "add --post-norm (fairseq's transformer is post-norm by default)"
            if not theirs_pre
            else "drop --post-norm (the checkpoint was trained with --encoder-normalize-before)"
        )
        raise OptionError(
            f"--init-from-ar: {path} has {'pre' if theirs_pre else 'post'}-norm layers, this model "
            f"{'pre' if ours_pre else 'post'}-norm ones; {fix}"
        )


def _ignorable(key):
    return key.endswith(".version") or key.endswith("_float_tensor")


def _has(state, prefix):
    return any(k.startswith(prefix) for k in state)


def _count_layers(pairs, prefix):
    return len(
        {
            ours[len(prefix) :].split(".")[0]
            for ours, _ in pairs
            if ours.startswith(prefix)
        }
    )
