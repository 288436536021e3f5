"""translation_vqvae: fairseq's translation task with the EM bottleneck's bookkeeping.

Adds to ``translation``: the latent-predictor generator (``build_generator``), EM statistics
accumulated per micro-batch and applied once per optimizer update on every worker
(``train_step`` / ``optimizer_step``), and batching that never drops sentences at small
``--batch-size``; fairseq-train refuses to start from scratch in a ``--save-dir`` that holds
checkpoints but no ``checkpoint_last.pt`` (``checkpoints.refuse_fresh_start``). ``--eval-bleu``
works as in ``translation``.
"""

import contextlib
import functools
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from fairseq import metrics
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.dataclass import ChoiceEnum
from fairseq.models import MODEL_REGISTRY
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .bottleneck import VQBottleneck
from .checkpoints import install_atomic_checkpoint_copies, refuse_fresh_start
from .config import frozen_codebook
from .errors import OptionError
from .generator import EOS_POLICIES, RESCORERS, VQVAENATGenerator
from .precision import cpu_has_native_bf16
from .quantize import quantize_int8
from .warm_start import init_from_autoregressive

logger = logging.getLogger(__name__)
install_atomic_checkpoint_copies()  # fairseq-train with this task: no truncated checkpoints


@dataclass
class TranslationVQVAENATConfig(TranslationConfig):
    gen_latent_beam: int = field(
        default=1,
        metadata={
            "help": "beam size over latent codes at inference (1 = greedy, the paper's choice; >1 needs --num-slices 1); every beam is a candidate (--gen-rescore ranks them)"
        },
    )
    gen_latent_samples: int = field(
        default=0,
        metadata={
            "help": "further candidates per length with codes sampled from the latent predictor (noisy parallel decoding); 0 = none"
        },
    )
    gen_length_beam: int = field(
        default=1,
        metadata={
            "help": "candidate target lengths per sentence: the length classifier's best ones (needs --latent-length predict); 1 = the best only"
        },
    )
    gen_rescore: ChoiceEnum(list(RESCORERS)) = field(
        default="model",
        metadata={
            "help": "how candidates are ranked: "
            + "; ".join(f"'{name}' = {text}" for name, text in RESCORERS.items())
        },
    )
    gen_oracle_latents: bool = field(
        default=False,
        metadata={
            "help": "diagnostic: decode the codes the autoencoder gives each reference (and its length) instead of predicted ones; the BLEU a perfect latent predictor would reach"
        },
    )
    gen_eos: ChoiceEnum(list(EOS_POLICIES)) = field(
        default="first",
        metadata={
            "help": "where a translation ends: "
            + "; ".join(f"'{name}' = {text}" for name, text in EOS_POLICIES.items())
        },
    )
    gen_dedup: bool = field(
        default=False,
        metadata={
            "help": "drop every output token equal to the one before it (repeated words are the typical error of a one-pass decoder)"
        },
    )
    gen_int8: bool = field(
        default=False,
        metadata={
            "help": "decode on the CPU with int8 weights in the feed-forward layers, the up-sampling maps, the latent predictor's output and the vocabulary projection (dynamic quantization, fairseq_vqvae/quantize.py); attention, length classifier and codebook stay fp32"
        },
    )
    bf16_autocast: bool = field(
        default=False,
        metadata={
            "help": "training only: run forward passes under torch.autocast(bfloat16) on CPU or GPU; parameters, Adam state, codebook and EM statistics stay fp32, validation and inference fp32 (fairseq's own --bf16 needs a TPU when --cpu); about 1.7x faster on CPUs with AVX512-BF16 or AMX"
        },
    )


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
# fairseq-generate's length cap (GenerationConfig's defaults), also where the generator is
# built from --eval-bleu-args or the hub, which may not carry them.
LENGTH_CAP_DEFAULTS = {"max_len_a": 0, "max_len_b": 200}
HEALTH_INTERVAL = 100  # updates between checks of the codebook's health
GENERATION_OPTIONS = tuple(
    name
    for name in TranslationVQVAENATConfig.__dataclass_fields__
    if name.startswith("gen_")
)


@register_task("translation_vqvae", dataclass=TranslationVQVAENATConfig)
class TranslationVQVAENATTask(TranslationTask):
    cfg: TranslationVQVAENATConfig

    def build_model(self, cfg, from_checkpoint=False):
        if not from_checkpoint:  # fairseq-train: never retrain over a run's checkpoints
            refuse_fresh_start(_checkpoint_options(cfg))
        model = super().build_model(cfg, from_checkpoint)
        path = getattr(getattr(model, "cfg", None), "init_from_ar", "")
        if (
            path and not from_checkpoint
        ):  # fairseq-train; checkpoints loaded for inference skip it
            init_from_autoregressive(model, path)
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        vqvae_em = CRITERION_REGISTRY["vqvae_em"]
        if not isinstance(criterion, vqvae_em):
            raise OptionError(
                f"--task translation_vqvae trains vqvae_nat with --criterion vqvae_em (the EM "
                f"loss: words, latent codes, commitment, length); got {type(criterion).__name__}"
            )
        return criterion

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        """fairseq's, with one-line errors for an empty split and for source and target
        files of different lengths (fairseq: "cannot mmap an empty file", an AssertionError)."""
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        for data in self.cfg.data.split(":"):
            for lang in (src, tgt):
                for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
                    path = os.path.join(data, f"{split}.{pair}.{lang}.bin")
                    if os.path.isfile(path) and os.path.getsize(path) == 0:
                        raise OptionError(
                            f"the {split} set is empty ({path} holds no sentences): "
                            f"binarize a non-empty {split} set with fairseq-preprocess"
                        )
        try:
            super().load_dataset(split, epoch, combine, **kwargs)
        except AssertionError as error:
            if "same number of examples" not in str(error):
                raise
            raise OptionError(
                f"the {split} set's {src} and {tgt} files hold different numbers of sentences "
                f"(in {self.cfg.data}): binarize both sides from line-aligned text files"
            ) from None
        dataset = self.datasets[split]
        for side, tokens, dictionary in (
            (src, getattr(dataset, "src", None), self.src_dict),
            (tgt, getattr(dataset, "tgt", None), self.tgt_dict),
        ):
            largest = _largest_token_id(tokens)
            if largest is not None and largest >= len(dictionary):
                raise OptionError(
                    f"the {split} set's {side} side holds token id {largest}, the dictionary "
                    f"dict.{side}.txt in {self.cfg.data} has {len(dictionary)} entries: the "
                    f"split was binarized with another dictionary; rerun fairseq-preprocess "
                    f"with --srcdict/--tgtdict set to this data's dictionaries"
                )

    def build_generator(
        self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs
    ):
        vqvae_nat = MODEL_REGISTRY["vqvae_nat"]
        if not models or not isinstance(models[0], vqvae_nat):
            name = type(models[0]).__name__ if models else "nothing"
            raise OptionError(
                f"--task translation_vqvae needs a vqvae_nat checkpoint, got a {name}; decode that "
                f"one with the task it was trained with (e.g. --task translation)"
            )
        # A generation option (hub: translate(..., gen_latent_beam=4)) wins over the task's,
        # as fairseq's IterativeRefinementGenerator reads iter_decode_* from ``args``.
        options = {
            name: getattr(args, name, None)
            if getattr(args, name, None) is not None
            else getattr(self.cfg, name)
            for name in GENERATION_OPTIONS
        }
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
        _refuse_unknown_generation_options(args)
        for name, default in BEAM_SEARCH_OPTIONS.items():
            if getattr(args, name, default) not in (default, None):
                flag = "--" + name.replace("_", "-")
                raise OptionError(
                    f"{flag} is an option of fairseq's autoregressive search, which vqvae_nat "
                    f"does not use; drop it (vqvae_nat searches with --gen-latent-beam, "
                    f"--gen-length-beam and --gen-latent-samples)"
                )
        if options["gen_int8"]:
            quantize_int8(models[0])
        generator = VQVAENATGenerator(
            self.target_dictionary,
            latent_beam=options["gen_latent_beam"],
            oracle_latents=options["gen_oracle_latents"],
            eos=options["gen_eos"],
            dedup=options["gen_dedup"],
            latent_samples=options["gen_latent_samples"],
            length_beam=options["gen_length_beam"],
            rescore=options["gen_rescore"],
            **{
                name: default
                if getattr(args, name, None) is None
                else getattr(args, name)
                for name, default in LENGTH_CAP_DEFAULTS.items()
            },
        )
        generator.check_models(models)
        _refuse_more_hypotheses_than_candidates(args, options)
        return generator

    def train_step(
        self, sample, model, criterion, optimizer, update_num, ignore_grad=False
    ):
        bottlenecks = _bottlenecks(model)
        if _first_micro_batch(model):
            # Statistics left from an update that never reached optimizer_step (e.g. skipped
            # on fp16 overflow) must not leak into this one.
            for bottleneck in bottlenecks:
                bottleneck.codebook.clear_pending_()
        precision = contextlib.nullcontext()
        if self.cfg.bf16_autocast:
            _check_autocast_optimizer(optimizer)
            device = "cuda" if sample is not None and _on_cuda(sample) else "cpu"
            if device == "cpu":
                _warn_if_bf16_is_emulated()
            precision = torch.autocast(device, dtype=torch.bfloat16)
        with precision:
            result = super().train_step(
                sample, model, criterion, optimizer, update_num, ignore_grad
            )
        em_stats = _unwrap(model).pop_em_statistics()
        if not ignore_grad:  # fairseq's dummy batches contribute nothing
            for bottleneck in bottlenecks:
                bottleneck.accumulate_(em_stats)
        return result

    def optimizer_step(self, optimizer, model, update_num):
        scale = _loss_scale(optimizer)
        super().optimizer_step(optimizer, model, update_num)
        if scale is not None and _loss_scale(optimizer) < scale:
            # --amp: the grad scaler skipped the step on an overflow (and lowered its scale),
            # and fairseq replays the batch: its EM statistics must not count, once or thrice.
            for bottleneck in _bottlenecks(model):
                bottleneck.codebook.clear_pending_()
            return
        if frozen_codebook(getattr(_unwrap(model), "cfg", None)):
            return  # a frozen codebook: an M-step without statistics would still decay it
        group = _data_parallel_group()
        for bottleneck in _bottlenecks(model):
            bottleneck.update_(
                process_group=group
            )  # a collective: every worker calls it
            codebook = bottleneck.codebook
            if codebook.ema and codebook.dead_code_threshold > 0:
                # codes the M-step restarted (churn the latent predictor must follow)
                metrics.log_scalar("code_restarts", codebook.restarts, 1, round=1)
        # After the 100th, 200th, ... M-step (update_num counts the updates before this one).
        # NB: not after the first: with the uniform start (tensor2tensor's EMA state, sums =
        # codes, counts = 0) the first M-step sends codes that soft EM gave a sliver of mass to
        # norms of about 500, which dead-code restarts or disuse clear within a few updates; the
        # check warned "the run is diverging" at update 0 of every default run.
        if (update_num + 1) % HEALTH_INTERVAL == 0:
            log_codebook_health(model)

    def get_batch_iterator(
        self,
        dataset,
        max_tokens=None,
        max_sentences=None,
        required_batch_size_multiple=1,
        **kwargs,
    ):
        # NB: fairseq drops the last batch when its size is not a multiple of
        # --required-batch-size-multiple (default 8): 39 of 40 sentences at batch size 1, 16 of
        # 20 at batch size 8 or with --max-tokens. Only the trainer's own iterator over the
        # training set (it passes skip_remainder_batch) keeps the multiple; every split that
        # is evaluated or generated (fairseq-generate --gen-subset train too) keeps every
        # sentence.
        training = "skip_remainder_batch" in kwargs and dataset is self.datasets.get(
            self.cfg.train_subset
        )
        small_batches = (
            max_sentences is not None and max_sentences < required_batch_size_multiple
        )
        if small_batches or not training:
            required_batch_size_multiple = 1
        iterator = super().get_batch_iterator(
            dataset,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
            **kwargs,
        )
        if training and required_batch_size_multiple > 1:
            _log_pairs_in_no_batch(iterator, len(dataset), required_batch_size_multiple)
        return iterator


def log_codebook_health(model) -> list[str]:
    """Warn in the log about a diverged or collapsed codebook (``Codebook.health``); the
    warnings, for tests."""
    warnings = []
    for bottleneck in _bottlenecks(model):
        problem = bottleneck.codebook.health()
        if problem is not None:
            warnings.append(problem)
            logger.warning("codebook: %s", problem)
    return warnings


@functools.cache
def _warn_if_bf16_is_emulated() -> None:
    """Once per process: --bf16-autocast on a CPU that emulates bfloat16 is slower than fp32."""
    if not cpu_has_native_bf16():
        logger.warning(
            "--bf16-autocast: this CPU has no native bfloat16 (no AVX512-BF16 or AMX; torch "
            "reports %s), so bfloat16 is emulated and training is slower than in fp32: drop "
            "--bf16-autocast on this machine",
            torch.backends.cpu.get_cpu_capability(),
        )


def _check_autocast_optimizer(optimizer):
    from fairseq.optim import AMPOptimizer
    from fairseq.optim.fp16_optimizer import (
        _FP16OptimizerMixin,
        _MemoryEfficientFP16OptimizerMixin,
    )

    mixed = (AMPOptimizer, _FP16OptimizerMixin, _MemoryEfficientFP16OptimizerMixin)
    if isinstance(optimizer, mixed):
        raise OptionError(
            "--bf16-autocast is its own mixed precision: drop --fp16/--bf16/--amp (or drop "
            "--bf16-autocast and use fairseq's, on a GPU)"
        )


def _on_cuda(sample) -> bool:
    tokens = sample.get("net_input", {}).get("src_tokens")
    return tokens is not None and tokens.is_cuda


def _checkpoint_options(cfg):
    """fairseq-train's checkpoint options, seen from the model's: its argparse namespace
    holds every option, a hydra config has them in its root's ``checkpoint`` group."""
    if hasattr(cfg, "save_dir"):
        return cfg
    parent = cfg._get_parent() if hasattr(cfg, "_get_parent") else None
    return getattr(parent, "checkpoint", None)


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def _bottlenecks(model):
    return [m for m in _unwrap(model).modules() if isinstance(m, VQBottleneck)]


def _first_micro_batch(model) -> bool:
    """fairseq's trainer zeroes gradients (to None) before an update's first micro-batch."""
    for param in _unwrap(model).parameters():
        if param.requires_grad:
            return param.grad is None
    return True


def _data_parallel_group():
    if not (dist.is_available() and dist.is_initialized()):
        return None
    from fairseq.distributed import utils as distributed_utils

    return distributed_utils.get_data_parallel_group()


def _largest_token_id(tokens) -> int | None:
    """The largest id in an mmap-binarized split (one pass over the file, no copy); None for
    other dataset kinds, which are left to fairseq."""
    buffer = getattr(tokens, "_bin_buffer", None)
    index = getattr(tokens, "_index", None)
    if buffer is None or index is None or len(buffer) == 0:
        return None
    return int(np.frombuffer(buffer, dtype=index.dtype).max())


def _option_keys(args) -> list[str]:
    """The keys a generation configuration holds: a fairseq GenerationConfig (or DictConfig),
    the hub's copy with its keyword arguments, or --eval-bleu-args' Namespace."""
    if hasattr(args, "keys"):
        return list(args.keys())
    return list(vars(args)) if hasattr(args, "__dict__") else []


def _refuse_unknown_generation_options(args) -> None:
    """A misspelt key (hub: translate(..., gen_latnet_beam=4); --eval-bleu-args) would be
    ignored: name it and the nearest known option."""
    import difflib

    from fairseq.dataclass.configs import GenerationConfig

    keys = _option_keys(args)
    if (
        "seed" in keys
    ):  # a whole command line's namespace: every fairseq option is in it
        return
    known = set(GenerationConfig.__dataclass_fields__) | set(GENERATION_OPTIONS)
    for key in keys:
        if key in known or key.startswith("_"):
            continue
        near = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise OptionError(
            f"unknown generation option {key!r}{hint} (vqvae_nat's own: "
            f"{', '.join(GENERATION_OPTIONS)})"
        )


def _refuse_more_hypotheses_than_candidates(args, options) -> None:
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


def _loss_scale(optimizer) -> float | None:
    """The loss scale of fairseq's AMPOptimizer (--amp; a torch GradScaler, which lowers it
    when it skips a step on an overflow), or None for other optimizers: under --fp16 an
    overflow is raised before the task's optimizer step."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not hasattr(scaler, "get_scale"):
        return None
    if hasattr(scaler, "is_enabled") and not scaler.is_enabled():
        return None
    return float(scaler.get_scale())


def _log_pairs_in_no_batch(iterator, total: int, multiple: int) -> None:
    """Say how many training pairs no batch holds (too long, or dropped with the remainder
    that is not a multiple of --required-batch-size-multiple)."""
    batches = getattr(iterator, "frozen_batches", None)
    if batches is None:
        return
    missing = total - sum(len(batch) for batch in batches)
    if missing > 0:
        logger.info(
            "%d of %d training pairs are in no batch (too long for --max-positions, or left "
            "over by --required-batch-size-multiple %d; --required-batch-size-multiple 1 "
            "keeps them)",
            missing,
            total,
            multiple,
        )
