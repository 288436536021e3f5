"""What the ONNX export (``deploy.export``) can export, and the one-line refusal of the
rest: the generator's search over lengths and a beam of codes (not sampled codes), and the
model configurations its graphs compute.
"""

from fairseq.modules import SinusoidalPositionalEmbedding

from ..errors import OptionError
from ..hypotheses import (
    EOS_LENGTH_NEEDS_A_LENGTH_HEAD,
    EOS_POLICIES,
    LENGTH_BEAM_NEEDS_A_LENGTH_HEAD,
    RESCORERS,
)
from ..latent_search import CachedSteps

__all__ = ["check_exportable", "latent_top_k", "RUNTIME_OPTIONS", "SEARCH_DEFAULTS"]

# The runtime's options (translator.json's defaults, which OnnxTranslator overrides) and their
# defaults where the checkpoint's task has none: fairseq-generate's length cap
# (GenerationConfig), the other ones as the task declares them.
RUNTIME_OPTIONS = {
    "gen_eos": "first",
    "gen_dedup": False,
    "max_len_a": 0,
    "max_len_b": 200,
    "gen_latent_beam": 1,
    "gen_length_beam": 1,
    "gen_rescore": "model",
}
# Not exported: each option's only exportable value.
SEARCH_DEFAULTS = {
    "gen_latent_samples": 0,
    "gen_oracle_latents": False,
    "gen_int8": False,
}
TOP_K = 16  # codes per latent step the export keeps by default (at most the codebook's)


def latent_top_k(model, top_k: int | None) -> int:
    """The latent step's k best codes (--latent-top-k; None: min(16, codebook size))."""
    size = model.latent_predictor.codebook_size
    if top_k is None:
        return min(TOP_K, size)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= size:
        raise OptionError(
            f"--latent-top-k must be an integer in [1, {size}] (the codebook), got {top_k!r}"
        )
    return top_k


def check_exportable(model, options: dict, top_k: int | None = None) -> None:
    """Raise OptionError (one line) for a model configuration or generation option that the
    exported graphs do not compute; ``top_k``: the export's --latent-top-k."""
    _check_options(options)
    if options.get("gen_eos") == "length" and model.length_head is None:
        raise OptionError(EOS_LENGTH_NEEDS_A_LENGTH_HEAD)
    _check_model(model)
    _check_search(model, options, latent_top_k(model, top_k))


def _check_search(model, options: dict, top_k: int) -> None:
    """The search options saved as the runtime's defaults, checked as the generator does."""
    beam, lengths = options.get("gen_latent_beam", 1), options.get("gen_length_beam", 1)
    for flag, value in (("--gen-latent-beam", beam), ("--gen-length-beam", lengths)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"{flag} must be an integer >= 1, got {value!r}")
    model.check_search(beam)
    if beam > top_k:
        raise OptionError(
            f"--gen-latent-beam {beam} is more than the {top_k} codes per step the export "
            f"keeps: export with --latent-top-k {beam}"
        )
    if lengths > 1 and model.length_head is None:
        raise OptionError(LENGTH_BEAM_NEEDS_A_LENGTH_HEAD)
    if lengths > 1 and lengths > model.length_classes:
        raise OptionError(
            f"--gen-length-beam {lengths} is more than the {model.length_classes} length "
            f"classes of the model"
        )
    if options.get("gen_rescore", "model") not in RESCORERS:
        raise OptionError(f"--gen-rescore must be one of {', '.join(RESCORERS)}")


def _check_options(options: dict) -> None:
    for name, value in options.items():
        if name in SEARCH_DEFAULTS:
            if value != SEARCH_DEFAULTS[name]:
                hint = " (export with --int8 instead)" if name == "gen_int8" else ""
                raise OptionError(
                    f"--{name.replace('_', '-')} {value}: the ONNX export decodes predicted "
                    f"codes (greedy or a beam: --gen-latent-beam), none sampled or given{hint}"
                )
        elif name not in RUNTIME_OPTIONS:
            raise OptionError(
                f"unknown option {name}: the ONNX export takes "
                f"{', '.join(RUNTIME_OPTIONS)} (and the default search's values)"
            )
    if options.get("gen_eos", "first") not in EOS_POLICIES:
        raise OptionError(f"--gen-eos must be one of {', '.join(EOS_POLICIES)}")


def _check_model(model) -> None:
    if getattr(model, "int8", False):
        raise OptionError(
            "this model was quantized by --gen-int8: export the fp32 checkpoint (with --int8)"
        )
    if model.cfg.latent_predictor_kind != "autoregressive":
        raise OptionError(
            "the ONNX export decodes an autoregressive latent predictor step by step; this "
            "checkpoint's is parallel (--latent-predictor-kind parallel): decode it with "
            "fairseq-generate"
        )
    if model.cfg.latent_tied_codes:
        raise OptionError(
            "the ONNX export does not support --latent-tied-codes (its predictor reads the "
            "codebook); decode this model with fairseq-generate"
        )
    encoder = model.encoder
    if not (
        isinstance(encoder.embed_positions, SinusoidalPositionalEmbedding)
        and encoder.layernorm_embedding is None
        and encoder.quant_noise is None
    ):
        raise OptionError(
            "the ONNX export supports the encoder this plugin builds (sinusoidal positions, "
            "no embedding layer norm, no quant-noise); this checkpoint's differs"
        )
    for name, layers in (
        ("latent predictor", model.latent_predictor),
        ("token decoder", _LayerStack(model.decoder_layers)),
    ):
        if not CachedSteps.supports(layers):
            raise OptionError(
                f"the ONNX export supports plain pre- or post-norm layers; this checkpoint's "
                f"{name} has others (e.g. cross-self-attention, extra layer norms)"
            )


class _LayerStack:
    """The two attributes ``CachedSteps.supports`` reads, for the token decoder's layers."""

    def __init__(self, layers):
        self.layers, self.training = layers, layers.training
