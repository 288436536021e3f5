"""Checks of vqvae_nat's options, task, precision flags, datasets and generation options, each
failing with one line that says what to change (``errors.OptionError``); a checkpoint's are in
``checkpoint_checks``."""

import os

import numpy as np
from fairseq.models import MODEL_REGISTRY
from fairseq.tasks import TASK_REGISTRY

from .errors import OptionError

# fairseq generation options that only its autoregressive search reads, with their defaults:
# another value is refused rather than silently ignored. (--beam is not among them: the hub
# always passes beam=5; vqvae_nat ignores it, as it ignores --nbest's limit on candidates.)
BEAM_SEARCH_OPTIONS = {
    "sampling": False,
    "sampling_topk": -1,
    "sampling_topp": -1.0,
    "match_source_len": False,
    "no_repeat_ngram_size": 0,
    "diverse_beam_groups": -1,
    "diversity_rate": -1.0,
    "lenpen": 1,
    "unkpen": 0,
    "prefix_size": 0,
    "min_len": 1,
    "temperature": 1.0,
}

# fairseq-generate outputs that need what a one-pass decoder does not have, with the reason.
UNSUPPORTED_OUTPUTS = {
    "print_alignment": "its decoder attends to the source in every layer, no one alignment",
    "retain_iter_history": "it decodes in one pass, with no iterations to keep",
}


def check_option_combinations(cfg) -> None:
    """Refuse options of ``cfg`` (a ``VQVAENATConfig``) that do not fit together; their ranges
    are ``config.validate``'s."""
    if cfg.encoder_embed_dim % cfg.encoder_attention_heads:
        raise OptionError(
            f"--encoder-embed-dim ({cfg.encoder_embed_dim}) must be divisible by "
            f"--encoder-attention-heads ({cfg.encoder_attention_heads})"
        )
    ratio = 2**cfg.compress_steps
    if ratio > cfg.max_target_positions:
        raise OptionError(
            f"--compress-steps {cfg.compress_steps} compresses 2^{cfg.compress_steps} = {ratio} "
            f"tokens into one latent, more than --max-target-positions {cfg.max_target_positions}; "
            f"lower --compress-steps or raise --max-target-positions"
        )
    code_dim = cfg.code_dim or cfg.encoder_embed_dim
    if code_dim % cfg.num_slices:
        raise OptionError(
            f"--code-dim ({code_dim}) must be divisible by --num-slices ({cfg.num_slices})"
        )
    if cfg.latent_length_condition and cfg.latent_length != "predict":
        raise OptionError(
            "--latent-length-condition tells the latent predictor the length the length "
            "classifier predicts: it needs --latent-length predict, not "
            f"--latent-length {cfg.latent_length}"
        )
    if cfg.latent_predictor_only and cfg.token_decoder_only:
        raise OptionError(
            "--latent-predictor-only and --token-decoder-only are two separate stages: pass "
            "one (train the predictor first, then the token decoder from its checkpoint)"
        )
    check_latent_predictor_kind(cfg)


def check_latent_predictor_kind(cfg) -> None:
    """Refuse the latent predictor's training options its kind has no use for."""
    parallel = cfg.latent_predictor_kind == "parallel"
    if cfg.latent_glance_ratio > 0 and not parallel:
        raise OptionError(
            "--latent-glance-ratio glances the parallel latent predictor: add "
            "--latent-predictor-kind parallel, or drop it (the autoregressive one is "
            "teacher-forced)"
        )
    if cfg.latent_self_inputs > 0 and parallel:
        raise OptionError(
            "--latent-self-inputs feeds an autoregressive predictor its own codes; the parallel "
            "one reads no codes (glance at gold ones with --latent-glance-ratio): drop it"
        )


def check_precision(args):
    """fairseq's --fp16 and --bf16 fail deep inside fairseq under --cpu (a CUDA assertion, an
    XLA attribute error); say what works instead, before they are reached."""
    if not getattr(args, "cpu", False):
        return
    for name in ("fp16", "memory_efficient_fp16", "bf16", "memory_efficient_bf16"):
        if getattr(args, name, False):
            flag = "--" + name.replace("_", "-")
            raise OptionError(
                f"{flag} needs a GPU ({flag} with --cpu fails inside fairseq); on a CPU, "
                f"drop {flag} and train in mixed precision with --bf16-autocast"
            )


def check_task(cfg, task):
    """Refuse a task that would train or decode the model wrongly, and options that do not
    fit the task's data."""
    if not isinstance(task, TASK_REGISTRY.get("translation_vqvae", ())):
        # Another task would train an EM codebook that never updates (the M-step runs in this
        # task's optimizer_step) and could not decode the codes.
        raise OptionError(
            f"--arch vqvae_nat needs --task translation_vqvae (it applies the codebook's EM "
            f"updates and decodes the latent codes); got a {type(task).__name__}"
        )
    if cfg.share_all_embeddings and task.source_dictionary != task.target_dictionary:
        raise OptionError(
            "--share-all-embeddings needs a joined dictionary (fairseq-preprocess --joined-dictionary)"
        )


# Datasets ---------------------------------------------------------------------------------


def check_nonempty_split(data: str, split: str, src: str, tgt: str) -> None:
    """Refuse an empty split (fairseq: "cannot mmap an empty file") in any of the ``data``
    folders (``:``-separated)."""
    for folder in data.split(":"):
        for lang in (src, tgt):
            for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
                path = os.path.join(folder, f"{split}.{pair}.{lang}.bin")
                if os.path.isfile(path) and os.path.getsize(path) == 0:
                    raise OptionError(
                        f"the {split} set is empty ({path} holds no sentences): "
                        f"binarize a non-empty {split} set with fairseq-preprocess"
                    )


def unaligned_split(split: str, src: str, tgt: str, data: str) -> OptionError:
    """The error for source and target files of different lengths (fairseq: an
    AssertionError)."""
    return OptionError(
        f"the {split} set's {src} and {tgt} files hold different numbers of sentences "
        f"(in {data}): binarize both sides from line-aligned text files"
    )


def check_token_ids(split: str, data: str, *sides) -> None:
    """Refuse a split binarized with another dictionary: ``sides`` are (language, its mmap
    tokens, its dictionary) triples."""
    for side, tokens, dictionary in sides:
        largest = largest_token_id(tokens)
        if largest is not None and largest >= len(dictionary):
            raise OptionError(
                f"the {split} set's {side} side holds token id {largest}, the dictionary "
                f"dict.{side}.txt in {data} has {len(dictionary)} entries: the "
                f"split was binarized with another dictionary; rerun fairseq-preprocess "
                f"with --srcdict/--tgtdict set to this data's dictionaries"
            )


def largest_token_id(tokens) -> int | None:
    """The largest id in an mmap-binarized split (one pass over the file, no copy); None for
    other dataset kinds, which are left to fairseq."""
    buffer = getattr(tokens, "_bin_buffer", None)
    index = getattr(tokens, "_index", None)
    if buffer is None or index is None or len(buffer) == 0:
        return None
    return int(np.frombuffer(buffer, dtype=index.dtype).max())


# Generation options -----------------------------------------------------------------------


def check_generation_models(models) -> None:
    """Refuse a first checkpoint that is not a vqvae_nat model."""
    vqvae_nat = MODEL_REGISTRY["vqvae_nat"]
    if not models or not isinstance(models[0], vqvae_nat):
        name = type(models[0]).__name__ if models else "nothing"
        raise OptionError(
            f"--task translation_vqvae needs a vqvae_nat checkpoint, got a {name}; decode that "
            f"one with the task it was trained with (e.g. --task translation)"
        )


def check_generation_options(models, args, options, known_options) -> None:
    """Refuse generation options vqvae_nat cannot honour: a vqvae_nat teacher, fairseq's
    --score-reference and its autoregressive search's options, and misspelt ones
    (``known_options``: the task's ``gen_*`` options, whose values are ``options``)."""
    vqvae_nat = MODEL_REGISTRY["vqvae_nat"]
    if (
        options["gen_rescore"] == "teacher"
        and len(models) == 2
        and isinstance(models[1], vqvae_nat)
    ):
        raise OptionError(
            "--gen-rescore teacher: the second checkpoint must be an autoregressive model "
            "(e.g. the distillation teacher, --arch transformer), got a vqvae_nat one"
        )
    if getattr(args, "score_reference", False):
        raise OptionError(
            "--score-reference is not supported by vqvae_nat (its score of a given "
            "translation needs the latents of that translation); drop it"
        )
    for name, what in UNSUPPORTED_OUTPUTS.items():
        if getattr(args, name, None) not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise OptionError(f"{flag} is not supported by vqvae_nat ({what}); drop it")
    refuse_unknown_generation_options(args, known_options)
    for name, default in BEAM_SEARCH_OPTIONS.items():
        if getattr(args, name, default) not in (default, None):
            flag = "--" + name.replace("_", "-")
            raise OptionError(
                f"{flag} is an option of fairseq's autoregressive search, which vqvae_nat "
                f"does not use; drop it (vqvae_nat searches with --gen-latent-beam, "
                f"--gen-length-beam and --gen-latent-samples)"
            )


def refuse_unknown_generation_options(args, own_options) -> None:
    """A misspelt key (hub: translate(..., gen_latnet_beam=4); --eval-bleu-args) would be
    ignored: name it and the nearest known option."""
    import difflib

    from fairseq.dataclass.configs import GenerationConfig

    keys = option_keys(args)
    # a whole command line's namespace: every fairseq option is in it
    if "seed" in keys:
        return
    known = set(GenerationConfig.__dataclass_fields__) | set(own_options)
    for key in keys:
        if key in known or key.startswith("_"):
            continue
        near = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise OptionError(
            f"unknown generation option {key!r}{hint} (vqvae_nat's own: "
            f"{', '.join(own_options)})"
        )


def option_keys(args) -> list[str]:
    """The keys a generation configuration holds: a fairseq GenerationConfig (or DictConfig),
    the hub's copy with its keyword arguments, or --eval-bleu-args' Namespace."""
    if hasattr(args, "keys"):
        return list(args.keys())
    return list(vars(args)) if hasattr(args, "__dict__") else []


def check_candidate_count(args, options) -> None:
    """--nbest N needs N candidates per sentence; the one-pass decoder gives one by default."""
    nbest = getattr(args, "nbest", 1) or 1
    candidates = options["gen_length_beam"] * (
        options["gen_latent_beam"] + options["gen_latent_samples"]
    )
    if nbest > candidates and not options["gen_oracle_latents"]:
        raise OptionError(
            f"--nbest {nbest} asks for more hypotheses than the {candidates} candidate(s) per "
            f"sentence: add --gen-latent-beam {nbest} (or --gen-latent-samples / "
            f"--gen-length-beam), or drop --nbest"
        )
