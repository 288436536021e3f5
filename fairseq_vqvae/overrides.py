"""A ``--model-overrides`` key that no option of the checkpoint has is refused, not ignored.

fairseq applies each key of ``--model-overrides "{...}"`` to the groups of the loaded
checkpoint's configuration that have it and ignores a key that none has, so a misspelt
``{'gen_latnet_beam': 4}`` decodes as if it were not there. In fairseq's command-line tools the
plugin wraps ``checkpoint_utils.load_checkpoint_to_cpu`` to refuse such a key in one line,
naming the nearest option (``install``; never in a user's own Python process).
"""

import difflib
import functools
from argparse import Namespace

from .errors import OptionError

__all__ = ["check_overrides", "install"]


def _keys(config) -> set[str]:
    """Every option name of a configuration: its groups' keys, recursively."""
    if isinstance(config, Namespace):
        config = vars(config)
    try:
        items = list(config.items())
    except AttributeError:
        return set()
    keys = set()
    for key, value in items:
        keys.add(str(key))
        if isinstance(value, Namespace) or hasattr(value, "items"):
            keys |= _keys(value)
    return keys


def check_overrides(state: dict, overrides: dict) -> None:
    """Refuse an override key that neither the checkpoint's cfg nor its args has."""
    known = _keys(state.get("cfg") or {}) | _keys(state.get("args") or {})
    for key in overrides:
        if key not in known:
            nearest = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {nearest[0]!r}? " if nearest else ""
            raise OptionError(
                f"--model-overrides key {key!r} is no option of this checkpoint, so fairseq "
                f"would ignore it; {hint}name one of its options"
            )


def install() -> None:
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "checks_overrides", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, arg_overrides=None, *args, **kwargs):
        if not arg_overrides:
            return original(path, arg_overrides, *args, **kwargs)
        # fairseq writes every override into the checkpoint's Namespace groups, known or not:
        # read the option names before, then override as fairseq does
        state = original(path, None, *args, **kwargs)
        if state.get("cfg") is None:  # a checkpoint older than fairseq's cfg: as it was
            return original(path, arg_overrides, *args, **kwargs)
        check_overrides(state, arg_overrides)
        if state.get("args") is not None:
            for name, value in arg_overrides.items():
                setattr(state["args"], name, value)
        checkpoint_utils.overwrite_args_by_name(state["cfg"], arg_overrides)
        return state

    load_checkpoint_to_cpu.checks_overrides = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
