"""The codebook: code vectors, their EMA state, and the one place that state changes.

Roy et al. 2018 (https://arxiv.org/abs/1805.11063), section 2.2 (EMA updates, eqs. 4-5).
"""

import logging

import torch
import torch.distributed as dist
from torch import nn

from . import em
from .restarts import INITS, initialize_from_data_, restart_dead_codes_

logger = logging.getLogger(__name__)

__all__ = ["Codebook"]

# Buffers that hold EM state; they stay fp32 even when fairseq casts the model with
# --fp16 (model.half()) or --bf16 (model.to(bfloat16)), which would otherwise round them.
_FP32_BUFFERS = (
    "weight",
    "ema_counts",
    "ema_sums",
    "pending_counts",
    "pending_sums",
    "pending_candidates",
    "pending_num_candidates",
)


class Codebook(nn.Module):
    """S independent codebooks of K codes of dimension D.

    With ``ema=True`` (hard and soft EM) the codes are buffers updated only by
    :meth:`update_`; they are in ``state_dict`` and outside the optimizer. With ``ema=False``
    (VQ-VAE with a codebook loss) ``weight`` is an ``nn.Parameter`` trained by gradient.

    Statistics flow: ``accumulate_(counts, sums, candidates)`` adds one micro-batch's
    statistics to ``pending_*`` buffers; ``update_()`` all-reduces them across workers, applies
    one EMA M-step, optionally restarts dead codes, and clears them.

    Args:
        num_slices: S (1 = plain VQ).
        codebook_size: K, codes per slice.
        code_dim: D, dimension of one slice's code.
        ema: True for EM-trained codes (buffers), False for gradient-trained codes.
        decay: EMA decay lambda in [0, 1).
        epsilon: Laplace smoothing epsilon > 0.
        dead_code_threshold: restart codes whose bias-corrected EMA count (about: uses per
            update) falls below this, from vectors of the current update (0 = never).
        restart_grace: M-steps after its restart in which a code is not restarted again
            (0 = none: a restarted code starts at the threshold and, unless used at once,
            falls below it and is drawn again at the next M-step).
        init: one of ``INITS``. With ``"data"`` the first :meth:`update_` replaces the codes
            (and their EMA state, as if every code had been used equally) by vectors of that
            update instead of applying an M-step; the ``initialized`` buffer, saved in
            ``state_dict``, records that it happened.
    """

    def __init__(
        self,
        num_slices: int,
        codebook_size: int,
        code_dim: int,
        ema: bool = True,
        decay: float = 0.999,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        init: str = "uniform",
        restart_grace: int = 0,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if min(num_slices, codebook_size, code_dim) < 1:
            raise ValueError("num_slices, codebook_size and code_dim must all be >= 1")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.num_slices, self.codebook_size = num_slices, codebook_size
        self.code_dim = code_dim
        self.ema, self.decay, self.epsilon = ema, decay, epsilon
        self.dead_code_threshold = dead_code_threshold
        self.restart_grace = restart_grace
        self.restarts = 0  # codes restarted by the last M-step (logged by the task)
        # tensor2tensor's uniform_unit_scaling init: U(+-sqrt(3 / K)).
        bound = (3.0 / codebook_size) ** 0.5
        init_codes = torch.empty(num_slices, codebook_size, code_dim)
        init_codes.uniform_(-bound, bound)
        self.init = init
        # False until a data initialisation happened; checkpoints without it were trained.
        self.register_buffer("initialized", torch.tensor(init == "uniform"))
        # Up to K batch vectors per slice kept as restart (and data-init) candidates.
        self.register_buffer(
            "pending_candidates",
            torch.zeros(codebook_size, num_slices, code_dim),
            persistent=False,
        )
        self.register_buffer("pending_num_candidates", torch.zeros(1), persistent=False)
        if not ema:
            self.weight = nn.Parameter(init_codes)
            return
        self.register_buffer("weight", init_codes)  # (S, K, D)
        # (S, K) counts and (S, K, D) sums; t2t: the sums start as a copy of the codes
        self.register_buffer("ema_counts", torch.zeros(num_slices, codebook_size))
        self.register_buffer("ema_sums", init_codes.clone())
        # Statistics of the current optimizer update; not saved (a checkpoint is written
        # between updates, when they are zero).
        zeros = torch.zeros
        self.register_buffer(
            "pending_counts", zeros(num_slices, codebook_size), persistent=False
        )
        self.register_buffer(
            "pending_sums", zeros(num_slices, codebook_size, code_dim), persistent=False
        )
        # M-steps applied so far; saved, so restarts and usage debiasing survive a resume.
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # The M-step at which each code was last restarted (-1: never); saved, so a resumed
        # run keeps the grace periods.
        self.register_buffer(
            "restarted_at",
            torch.full((num_slices, codebook_size), -1, dtype=torch.long),
        )

    def _apply(self, fn, recurse=True):
        # Keep EM state in fp32 through .half()/.to(bfloat16); still follow device moves.
        buffers = self._buffers
        saved = {n: buffers[n] for n in _FP32_BUFFERS if buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for name, original in saved.items():
            moved = self._buffers[name]
            self._buffers[name] = original.to(device=moved.device, dtype=torch.float32)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before --codebook-init hold trained codes: initialized.
        state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        if self.ema:  # from before --restart-grace-updates: no code restarted yet
            state_dict.setdefault(
                prefix + "restarted_at", torch.full_like(self.restarted_at, -1)
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def awaits_data(self) -> bool:
        """True until a ``data`` initialisation has replaced the starting codes."""
        return not bool(self.initialized)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S, D) vectors -> (N, S, K) fp32 squared distances to this slice's codes."""
        return em.squared_distances(x, self.weight)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``codes`` (..., S) int64 -> (..., S, D)."""
        slice_index = torch.arange(self.num_slices, device=codes.device)
        return self.weight[slice_index, codes]

    def mix(self, responsibilities: torch.Tensor) -> torch.Tensor:
        """Responsibility-weighted code vectors, (..., S, K) -> (..., S, D)."""
        weight = self.weight.to(responsibilities.dtype)
        return torch.einsum("...sk,skd->...sd", responsibilities, weight)

    @torch.no_grad()
    def accumulate_(
        self,
        counts: torch.Tensor,
        sums: torch.Tensor,
        candidates: torch.Tensor | None = None,
    ) -> None:
        """Add one micro-batch's statistics (S, K), (S, K, D) and candidate vectors (N, S, D)."""
        awaits_data = self.awaits_data
        if not (self.ema or awaits_data):
            return
        if self.ema:
            self.pending_counts += counts.float()
            self.pending_sums += sums.float()
        if candidates is not None and (
            awaits_data or (self.ema and self.dead_code_threshold > 0)
        ):
            self._keep_candidates_(candidates.detach().float())

    def _keep_candidates_(self, candidates: torch.Tensor) -> None:
        have = int(self.pending_num_candidates.item())
        room = self.codebook_size - have
        if room > 0 and candidates.shape[0] > 0:
            order = torch.randperm(candidates.shape[0], device=candidates.device)
            take = candidates[order[:room]]
            self.pending_candidates[have : have + take.shape[0]] = take
            self.pending_num_candidates += take.shape[0]

    @torch.no_grad()
    def update_(self, process_group=None) -> None:
        """All-reduce the pending statistics, apply one EMA M-step, restart dead codes.

        Every worker must call this the same number of times (it is a collective when
        torch.distributed is initialised), also with empty statistics. The first call of a
        ``data``-initialised codebook sets the codes from the update's vectors instead.
        """
        distributed = dist.is_available() and dist.is_initialized()
        if self.awaits_data:
            initialize_from_data_(self, distributed, process_group)
            return
        if not self.ema:
            return
        if distributed:
            dist.all_reduce(self.pending_counts, group=process_group)
            dist.all_reduce(self.pending_sums, group=process_group)
        if not (
            self.pending_counts.isfinite().all() and self.pending_sums.isfinite().all()
        ):
            # NB: one NaN/inf in the statistics would poison the codebook for good. Every
            # worker sees the same reduced values, so every worker skips together.
            logger.warning(
                "non-finite EM statistics (NaN/inf latents?): codebook update skipped"
            )
            self.clear_pending_()
            return
        self.ema_counts, self.ema_sums = em.ema_update(
            self.ema_counts,
            self.ema_sums,
            self.pending_counts,
            self.pending_sums,
            self.decay,
        )
        # NB: until some vector was assigned, all EMA counts are 0 and the M-step would divide
        # by 0 (codes * 1e12, all dead); keep a slice's codes until its counts are non-zero.
        has_counts = (self.ema_counts.sum(-1) > 0)[:, None, None]  # (S, 1, 1)
        new_weight = em.codebook_from_ema(self.ema_counts, self.ema_sums, self.epsilon)
        self.weight.copy_(torch.where(has_counts, new_weight, self.weight))
        if self.dead_code_threshold > 0:
            restart_dead_codes_(self, distributed, process_group)
        self.num_updates += 1
        self.clear_pending_()

    def clear_pending_(self) -> None:
        """Drop statistics that will not be applied (e.g. an update skipped on overflow)."""
        if self.ema:
            self.pending_counts.zero_()
            self.pending_sums.zero_()
        self.pending_num_candidates.zero_()

    def ema_perplexity(self) -> torch.Tensor:
        """(S,) perplexity of the EMA counts of the codes in use: long-run codebook usage
        (0 before any update).

        With restarts, a code counts only above the restart threshold (bias-corrected, the
        test ``restarts.restart_dead_codes_`` applies): a restarted code starts at the threshold and
        unused codes sit below it. Counting them reported 58,928 codes of 65,536 in use
        when the batches used 58.
        """
        if not self.ema:
            return torch.zeros(self.num_slices)
        counts = self.ema_counts
        if self.dead_code_threshold > 0:
            correction = 1.0 - self.decay ** max(int(self.num_updates), 1)
            counts = counts * (
                counts > self.dead_code_threshold * correction * 1.000001
            )
        return em.perplexity(counts)

    @torch.no_grad()
    def health(self, min_updates: int = 100) -> str | None:
        """What is wrong with the codebook, in words, or None: codes in use whose norm
        exploded (10x the sqrt(D) of layer-normalised latents: a diverged run), or, after ``min_updates``
        M-steps, EMA usage collapsed onto fewer than 2 codes in a slice."""
        norms = self.weight.float().norm(dim=-1)  # (S, K)
        if not bool(norms.isfinite().all()):
            return "the codebook holds NaN or inf: the run diverged"
        if self.ema and int(self.num_updates) > 0:
            # Unused codes grow without bound under plain EMA (their smoothed counts go to 0,
            # as in tensor2tensor): judge the codes in use only.
            counts = self.ema_counts
            in_use = counts >= 0.01 * counts.mean(-1, keepdim=True)
            norms = norms.masked_fill(~in_use, 0.0)
        limit = 10 * self.code_dim**0.5
        if float(norms.max()) > limit:
            return (
                f"code norms up to {float(norms.max()):.3g}, over {limit:.3g} (10 sqrt(D)): "
                f"the run is diverging; lower --lr or raise --warmup-updates"
            )
        if self.ema and int(self.num_updates) >= min_updates:
            used = float(self.ema_perplexity().min())
            if used < 2:
                return (
                    f"codebook collapsed: its EMA usage perplexity is {used:.2f} (all mass "
                    f"on one code); raise --dead-code-threshold or lower --codebook-decay"
                )
        return None

    def extra_repr(self) -> str:
        return (
            f"num_slices={self.num_slices}, codebook_size={self.codebook_size}, "
            f"code_dim={self.code_dim}, ema={self.ema}, decay={self.decay}, "
            f"epsilon={self.epsilon}, dead_code_threshold={self.dead_code_threshold}, "
            f"init={self.init}"
        )
