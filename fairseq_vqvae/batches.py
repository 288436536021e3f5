"""The training set's batches as an uninterrupted run has them, also when a run resumes.

fairseq sorts the training pairs by length with ties broken at random, under the seed plus the
epoch in which the trainer first builds its batch iterator, and then reuses those batches in
every epoch (shuffling their order with the seed plus each epoch). An uninterrupted run builds
them in epoch 1; a run resumed in epoch 5 built them under another seed, so it trained on
other batches from there on, and its weights and codebook parted from the uninterrupted run's
(fairseq's own ``transformer`` resumes the same way). ``as_uninterrupted`` builds them as
epoch 1 does and then sets the iterator to the resumed epoch, so that a run killed at any
moment and resumed ends with the same weights and codebook (``research/reliability.py``,
``kill_loop``; torch's random state is fairseq's seed plus the update, set every update).
"""

import logging

__all__ = ["as_uninterrupted", "log_pairs_in_no_batch"]

logger = logging.getLogger(__name__)


def as_uninterrupted(build, dataset, kwargs: dict, task):
    """``build(**kwargs)``, fairseq's training-set iterator, with its batches from epoch 1's
    order when fairseq builds them now (not when it reuses the iterator of an earlier epoch,
    nor with --rebuild-batches, which orders every epoch afresh)."""
    epoch = kwargs.get("epoch", 1)
    reused = dataset in task.dataset_to_epoch_iter
    if reused or epoch == 1 or getattr(task.cfg, "rebuild_batches", False):
        return build(**kwargs)
    iterator = build(**dict(kwargs, epoch=1))
    iterator.epoch = epoch
    dataset.set_epoch(epoch)
    return iterator


def log_pairs_in_no_batch(iterator, total: int, multiple: int) -> None:
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
