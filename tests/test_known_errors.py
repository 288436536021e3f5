"""known_errors.explain: fairseq failures with a known fix become one line; others do not."""

import pytest

from fairseq_vqvae.known_errors import explain


def _caught(function, *args):
    try:
        function(*args)
    except BaseException as error:  # noqa: BLE001 - the point is to inspect it
        return error
    raise AssertionError("no exception")


def load_checkpoint_to_cpu(path):  # named as fairseq's checkpoint reader
    raise EOFError


def batch_by_size(indices):  # named as fairseq's batcher, given no pairs at all
    return indices[-1]


def verify_checkpoint_directory(save_dir):
    raise NotADirectoryError(20, "Not a directory", save_dir)


def buffered_read(input):
    return b"a\xff".decode("utf-8")


def _load_state_dict():
    try:
        raise RuntimeError("Error(s) in loading state_dict for M:\n\tMissing key(s): x")
    except RuntimeError:  # as fairseq's trainer does: the cause is the context
        raise Exception(  # noqa: B904
            "Cannot load model parameters from checkpoint ck.pt; please ensure that the "
            "architectures match."
        )


@pytest.mark.parametrize(
    "function, args, needle",
    [
        (
            load_checkpoint_to_cpu,
            ("x.pt",),
            "x.pt is not a readable fairseq checkpoint",
        ),
        (batch_by_size, ([],), "dropped every sentence pair"),
        (
            verify_checkpoint_directory,
            ("runs/x",),
            "--save-dir runs/x cannot be created",
        ),
        (buffered_read, ("in.txt",), "in.txt is not UTF-8"),
        (
            _load_state_dict,
            (),
            "ck.pt holds another model than these flags build (Missing",
        ),
    ],
)
def test_known_failure_is_explained(function, args, needle):
    error = _caught(function, *args)
    assert needle in explain(error, error.__traceback__)


def test_messages_and_other_errors():
    missing = FileNotFoundError("Dataset not found: train2 (nowhere)")
    assert "nowhere has no split 'train2' (it has: none)" in explain(missing, None)
    cap = AssertionError("Sentences lengths should not exceed max_tokens=3")
    assert "--max-tokens 3 is below" in explain(cap, None)
    elsewhere = _caught(lambda: [][0])  # an IndexError outside fairseq's batcher
    assert explain(elsewhere, elsewhere.__traceback__) is None
    assert explain(EOFError(), None) is None


def test_divergence_is_explained_through_the_nan_detectors_own_failure():
    def detect():
        try:
            raise FloatingPointError("gradients are Nan/Inf")
        except FloatingPointError:
            next(iter(()))  # fairseq's NaN detector, failing on a dict output

    error = _caught(detect)
    assert isinstance(error, StopIteration)
    assert "training diverged" in explain(error, error.__traceback__)


def test_a_model_override_no_option_has_is_refused_with_the_nearest():
    from argparse import Namespace

    from omegaconf import OmegaConf

    from fairseq_vqvae.errors import OptionError
    from fairseq_vqvae.overrides import check_overrides

    state = {
        "cfg": OmegaConf.create(
            {"task": {"gen_latent_beam": 1}, "model": Namespace(dropout=0.1)},
            flags={"allow_objects": True},
        ),
        "args": None,
    }
    check_overrides(state, {"gen_latent_beam": 4, "dropout": 0.0})  # known: accepted
    with pytest.raises(OptionError, match="did you mean 'gen_latent_beam'"):
        check_overrides(state, {"gen_latnet_beam": 4})
