"""OptionError: a bad option or input the user can fix, reported in one line.

fairseq's command-line tools let an exception raised while building the model end in a Python
traceback. For this error type, the plugin's hook prints what argparse would:
``fairseq-train: error: --dropout must be in [0.0, 1.0), got 1.0`` and exits with status 2.
So do the fairseq failures whose fix is known (``known_errors``: an unreadable checkpoint, a
split never binarized, ``--max-tokens`` below the longest sentence, ...). Every other exception
keeps Python's traceback. Installed when the fairseq parts are imported
by one of fairseq's command-line tools (``fairseq-*``), never in a user's own Python process,
where an OptionError stays an ordinary exception.
"""

import os
import sys

__all__ = ["OptionError", "install_one_line_errors"]


class OptionError(ValueError):
    """A user-fixable problem with an option or input; its message says what to change."""


def _hook(previous):
    def hook(kind, value, traceback):
        error = value
        while error is not None and not isinstance(error, OptionError):
            error = (
                error.__cause__ or error.__context__
            )  # fairseq re-raises some as Exception
        if error is None:
            from .known_errors import explain  # fairseq failures with a known fix

            error = explain(value, traceback)
        if error is None:
            return previous(kind, value, traceback)
        sys.stderr.write(
            f"{os.path.basename(sys.argv[0]) or 'python'}: error: {error}\n"
        )
        sys.stderr.flush()
        os._exit(
            2
        )  # like argparse; skips fairseq's distributed tear-down, which has nothing to do

    hook.one_line_errors = True
    return hook


def install_one_line_errors() -> None:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if not (
        program.startswith("fairseq-")
        or "fairseq_cli" in (sys.argv[0] if sys.argv else "")
    ):
        return
    if not getattr(sys.excepthook, "one_line_errors", False):
        sys.excepthook = _hook(sys.excepthook)
    from .overrides import install  # and a misspelt --model-overrides key is refused

    install()
