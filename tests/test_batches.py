"""batches.as_uninterrupted: a run resumed in a later epoch trains on the batches an
uninterrupted run built in epoch 1 (the whole kill-and-resume check is reliability.py's
kill_loop)."""


def _training_iterator(task, epoch):
    return task.get_batch_iterator(
        task.dataset("train"),
        max_tokens=60,
        required_batch_size_multiple=1,
        seed=1,
        epoch=epoch,
        skip_remainder_batch=False,
    )


def test_resumed_epoch_gets_the_first_epochs_batches(build_vqvae):
    first = build_vqvae().task
    first.load_dataset("train")
    uninterrupted = _training_iterator(first, 1)

    resumed_task = build_vqvae().task
    resumed_task.load_dataset("train")
    resumed = _training_iterator(resumed_task, 4)
    assert resumed.epoch == 4
    assert [list(b) for b in resumed.frozen_batches] == [
        list(b) for b in uninterrupted.frozen_batches
    ]
    # fairseq's own order for epoch 4 differs here, so the test can tell the two apart
    plain = build_vqvae().task
    plain.load_dataset("train")
    own = plain.get_batch_iterator(
        plain.dataset("train"), max_tokens=60, seed=1, epoch=4
    )  # not the trainer's iterator: fairseq's batches as they are
    assert [list(b) for b in own.frozen_batches] != [
        list(b) for b in uninterrupted.frozen_batches
    ]
    # the next epoch reuses the iterator as it is, its epoch untouched
    resumed.next_epoch_itr()
    assert _training_iterator(resumed_task, 5) is resumed and resumed.epoch == 4
