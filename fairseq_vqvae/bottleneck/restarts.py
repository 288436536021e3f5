"""Codes from data: the data initialisation of the codes (``--codebook-init data``) and the
restarts of dead codes (``--dead-code-threshold``), from candidate vectors of the current update
kept by ``Codebook.accumulate_``; both are called by ``Codebook.update_``.
"""

import logging

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# How the codes start (--codebook-init).
INITS = {
    "uniform": "U(+-sqrt(3 / K)), tensor2tensor's uniform_unit_scaling (the paper's code)",
    "data": "K latents of the first update, drawn at random (duplicates jittered when it has fewer): the codes start where the latents are",
}


def initialize_from_data_(codebook, distributed: bool, process_group) -> None:
    """Codes of ``codebook`` <- K random candidate vectors of this update, the same on every
    worker."""
    candidates = gathered_candidates(codebook, distributed, process_group)
    candidates = candidates[candidates.flatten(1).isfinite().all(1)]
    if distributed and codebook.ema:  # the mean use per code, for the EMA state below
        dist.all_reduce(codebook.pending_counts, group=process_group)
    if candidates.shape[0] == 0:  # nothing seen yet (dummy batches only): next time
        codebook.clear_pending_()
        return
    # Same seed on every worker: every worker picks the same vectors.
    generator = torch.Generator().manual_seed(7_919)
    have, size = candidates.shape[0], codebook.codebook_size
    for s in range(codebook.num_slices):
        if have >= size:
            pick = torch.randperm(have, generator=generator)[:size]
        else:  # every vector once, then repeats
            pick = torch.cat(
                [
                    torch.arange(have),
                    torch.randint(have, (size - have,), generator=generator),
                ]
            )
        vectors = candidates[pick.to(candidates.device), s]
        if have < size:  # jitter the repeats so that they can part
            scale = 0.01 * float(vectors[:have].std()) if have > 1 else 0.01
            noise = torch.randn(size - have, codebook.code_dim, generator=generator)
            vectors[have:] += scale * noise.to(vectors.device)
        codebook.weight.data[s] = vectors.to(codebook.weight.dtype)
        if codebook.ema:
            # The EMA state of one M-step in which every code was used equally: the
            # next M-steps move the codes from here, unused ones stay put.
            count = (
                float(codebook.pending_counts[s].sum()) / size * (1.0 - codebook.decay)
            )
            count = max(count, codebook.epsilon)
            codebook.ema_counts[s] = count
            codebook.ema_sums[s] = vectors * count
    if codebook.ema:
        codebook.num_updates += 1
    codebook.initialized.fill_(True)
    logger.info("codebook initialised from %d latent vectors of the first update", have)
    codebook.clear_pending_()


def gathered_candidates(codebook, distributed: bool, process_group) -> torch.Tensor:
    """(N, S, D) the candidate vectors kept by every worker, in worker order."""
    candidates, valid = codebook.pending_candidates, codebook.pending_num_candidates
    if distributed:
        world = dist.get_world_size(process_group)
        gathered = [torch.empty_like(candidates) for _ in range(world)]
        counts = [torch.empty_like(valid) for _ in range(world)]
        dist.all_gather(gathered, candidates, group=process_group)
        dist.all_gather(counts, valid, group=process_group)
        return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)])
    return candidates[: int(valid.item())]


def restart_dead_codes_(codebook, distributed: bool, process_group) -> None:
    """Restart the codes whose bias-corrected EMA count fell below the threshold, from
    candidate vectors of this update, the same on every worker."""
    candidates = gathered_candidates(codebook, distributed, process_group)
    if candidates.shape[0] == 0:
        return
    # Same seed on every worker, so every worker picks the same replacements.
    generator = torch.Generator().manual_seed(
        1_000_003 * int(codebook.num_updates) + 17
    )
    # Compare bias-corrected counts: the EMA starts at 0, so for the first ~1/(1-decay)
    # updates raw counts are tiny and every code would look dead.
    correction = 1.0 - codebook.decay ** (int(codebook.num_updates) + 1)
    codebook.restarts = 0
    for s in range(codebook.num_slices):
        dead = codebook.ema_counts[s] < codebook.dead_code_threshold * correction
        if codebook.restart_grace > 0:
            since = codebook.num_updates - codebook.restarted_at[s]
            dead &= (codebook.restarted_at[s] < 0) | (since >= codebook.restart_grace)
        dead = dead.nonzero().squeeze(-1)
        if dead.numel() == 0:
            continue
        codebook.restarts += dead.numel()
        codebook.restarted_at[s, dead] = codebook.num_updates
        pick = torch.randint(candidates.shape[0], (dead.numel(),), generator=generator)
        vectors = candidates[pick.to(candidates.device), s]
        codebook.weight[s, dead] = vectors
        # Reset the EMA state of restarted codes too, or the stale sums would pull them
        # straight back (espnet PR #6284).
        codebook.ema_counts[s, dead] = codebook.dead_code_threshold * correction
        codebook.ema_sums[s, dead] = vectors * codebook.dead_code_threshold * correction
