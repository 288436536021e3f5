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
from dataclasses import dataclass

import torch
from fairseq import metrics
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from . import batches
from .checkpoints import (
    checkpoint_options,
    install_atomic_checkpoint_copies,
    refuse_fresh_start,
)
from .checks import (
    check_candidate_count,
    check_generation_models,
    check_generation_options,
    check_nonempty_split,
    check_token_ids,
    unaligned_split,
)
from .codebook_updates import (
    bottlenecks,
    data_parallel_group,
    first_micro_batch,
    loss_scale,
    unwrap,
)
from .config import option
from .errors import OptionError
from .generator import VQVAENATGenerator
from .hypotheses import EOS_POLICIES, RESCORERS
from .parts import frozen_codebook
from .precision import check_autocast_optimizer, on_cuda, warn_if_bf16_is_emulated
from .quantize import quantize_int8
from .warm_start import init_from_autoregressive

logger = logging.getLogger(__name__)
install_atomic_checkpoint_copies()  # fairseq-train with this task: no truncated checkpoints


@dataclass
class TranslationVQVAENATConfig(TranslationConfig):
    gen_latent_beam: int = option(
        1,
        "beam size over latent codes at inference (1 = greedy, the paper's choice; >1 needs --num-slices 1); every beam is a candidate (--gen-rescore ranks them)",
    )
    gen_latent_samples: int = option(
        0,
        "further candidates per length with codes sampled from the latent predictor (noisy parallel decoding); 0 = none",
    )
    gen_length_beam: int = option(
        1,
        "candidate target lengths per sentence: the length classifier's best ones (needs --latent-length predict); 1 = the best only",
    )
    gen_rescore: ChoiceEnum(list(RESCORERS)) = option(
        "model",
        "how candidates are ranked: "
        + "; ".join(f"'{name}' = {text}" for name, text in RESCORERS.items()),
    )
    gen_oracle_latents: bool = option(
        False,
        "diagnostic: decode the codes the autoencoder gives each reference (and its length) instead of predicted ones; the BLEU a perfect latent predictor would reach",
    )
    gen_eos: ChoiceEnum(list(EOS_POLICIES)) = option(
        "first",
        "where a translation ends: "
        + "; ".join(f"'{name}' = {text}" for name, text in EOS_POLICIES.items()),
    )
    gen_dedup: bool = option(
        False,
        "drop every output token equal to the one before it (repeated words are the typical error of a one-pass decoder)",
    )
    gen_int8: bool = option(
        False,
        "decode on the CPU with int8 weights in the feed-forward layers, the up-sampling maps, the latent predictor's output and the vocabulary projection (dynamic quantization, fairseq_vqvae/quantize.py); attention, length classifier and codebook stay fp32",
    )
    bf16_autocast: bool = option(
        False,
        "training only: run forward passes under torch.autocast(bfloat16) on CPU or GPU; parameters, Adam state, codebook and EM statistics stay fp32, validation and inference fp32 (fairseq's own --bf16 needs a TPU when --cpu); about 1.7x faster on CPUs with AVX512-BF16 or AMX",
    )


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
            refuse_fresh_start(checkpoint_options(cfg))
        model = super().build_model(cfg, from_checkpoint)
        path = getattr(getattr(model, "cfg", None), "init_from_ar", "")
        # fairseq-train; checkpoints loaded for inference skip it
        if path and not from_checkpoint:
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
        check_nonempty_split(self.cfg.data, split, src, tgt)
        try:
            super().load_dataset(split, epoch, combine, **kwargs)
        except AssertionError as error:
            if "same number of examples" not in str(error):
                raise
            raise unaligned_split(split, src, tgt, self.cfg.data) from None
        dataset = self.datasets[split]
        check_token_ids(
            split,
            self.cfg.data,
            (src, getattr(dataset, "src", None), self.src_dict),
            (tgt, getattr(dataset, "tgt", None), self.tgt_dict),
        )

    def build_generator(
        self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs
    ):
        check_generation_models(models)
        # A generation option (hub: translate(..., gen_latent_beam=4)) wins over the task's,
        # as fairseq's IterativeRefinementGenerator reads iter_decode_* from ``args``.
        options = {
            name: getattr(args, name, None)
            if getattr(args, name, None) is not None
            else getattr(self.cfg, name)
            for name in GENERATION_OPTIONS
        }
        check_generation_options(models, args, options, GENERATION_OPTIONS)
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
        check_candidate_count(args, options)
        return generator

    def train_step(
        self, sample, model, criterion, optimizer, update_num, ignore_grad=False
    ):
        model_bottlenecks = bottlenecks(model)
        if first_micro_batch(model):
            # Statistics left from an update that never reached optimizer_step (e.g. skipped
            # on fp16 overflow) must not leak into this one.
            for bottleneck in model_bottlenecks:
                bottleneck.codebook.clear_pending_()
        precision = contextlib.nullcontext()
        if self.cfg.bf16_autocast:
            check_autocast_optimizer(optimizer)
            device = "cuda" if sample is not None and on_cuda(sample) else "cpu"
            if device == "cpu":
                warn_if_bf16_is_emulated()
            precision = torch.autocast(device, dtype=torch.bfloat16)
        with precision:
            result = super().train_step(
                sample, model, criterion, optimizer, update_num, ignore_grad
            )
        em_stats = unwrap(model).pop_em_statistics()
        if not ignore_grad:  # fairseq's dummy batches contribute nothing
            for bottleneck in model_bottlenecks:
                bottleneck.accumulate_(em_stats)
        return result

    def optimizer_step(self, optimizer, model, update_num):
        scale = loss_scale(optimizer)
        super().optimizer_step(optimizer, model, update_num)
        if scale is not None and loss_scale(optimizer) < scale:
            # --amp: the grad scaler skipped the step on an overflow (and lowered its scale),
            # and fairseq replays the batch: its EM statistics must not count, once or thrice.
            for bottleneck in bottlenecks(model):
                bottleneck.codebook.clear_pending_()
            return
        if frozen_codebook(getattr(unwrap(model), "cfg", None)):
            return  # a frozen codebook: an M-step without statistics would still decay it
        group = data_parallel_group()
        for bottleneck in bottlenecks(model):
            # a collective: every worker calls it
            bottleneck.update_(process_group=group)
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
        build = functools.partial(
            super().get_batch_iterator,
            dataset,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
        )
        if not training:
            return build(**kwargs)
        iterator = batches.as_uninterrupted(build, dataset, kwargs, self)
        if required_batch_size_multiple > 1:
            batches.log_pairs_in_no_batch(
                iterator, len(dataset), required_batch_size_multiple
            )
        return iterator


def log_codebook_health(model) -> list[str]:
    """Warn in the log about a diverged or collapsed codebook (``Codebook.health``); the
    warnings, for tests."""
    warnings = []
    for bottleneck in bottlenecks(model):
        problem = bottleneck.codebook.health()
        if problem is not None:
            warnings.append(problem)
            logger.warning("codebook: %s", problem)
    return warnings
