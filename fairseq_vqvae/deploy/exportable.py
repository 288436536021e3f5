"""What the ONNX export (``deploy.export``) can export, and the one-line refusal of the
rest: the generator's default search, and the model configurations its graphs compute.
"""

from fairseq.modules import SinusoidalPositionalEmbedding

from ..errors import OptionError
from ..hypotheses import EOS_LENGTH_NEEDS_A_LENGTH_HEAD, EOS_POLICIES
from ..latent_search import CachedSteps

__all__ = ["check_exportable", "RUNTIME_OPTIONS", "SEARCH_DEFAULTS", "RANKING"]

# The runtime's options and their defaults where the checkpoint's task has none: fairseq-generate's
# length cap (GenerationConfig), --gen-eos and --gen-dedup as the task declares them.
RUNTIME_OPTIONS = {
    "gen_eos": "first",
    "gen_dedup": False,
    "max_len_a": 0,
    "max_len_b": 200,
}
# The default search only: each option's only exportable value.
SEARCH_DEFAULTS = {
    "gen_latent_beam": 1,
    "gen_latent_samples": 0,
    "gen_length_beam": 1,
    "gen_oracle_latents": False,
    "gen_int8": False,
}
RANKING = (
    "gen_rescore"  # one candidate: nothing to rank, but 'teacher' needs a second model
)


def check_exportable(model, options: dict) -> None:
    """Raise OptionError (one line) for a model configuration or generation option that the
    exported graphs do not compute."""
    _check_options(options)
    if options.get("gen_eos") == "length" and model.length_head is None:
        raise OptionError(EOS_LENGTH_NEEDS_A_LENGTH_HEAD)
    _check_model(model)


def _check_options(options: dict) -> None:
    for name, value in options.items():
        if name in SEARCH_DEFAULTS:
            if value != SEARCH_DEFAULTS[name]:
                hint = " (export with --int8 instead)" if name == "gen_int8" else ""
                raise OptionError(
                    f"--{name.replace('_', '-')} {value}: the ONNX export decodes the default "
                    f"search only (greedy codes, one length){hint}"
                )
        elif name == RANKING:
            if value == "teacher":
                raise OptionError(
                    "--gen-rescore teacher needs a second (AR) model: the ONNX export "
                    "decodes one candidate per sentence, with nothing to rank"
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
