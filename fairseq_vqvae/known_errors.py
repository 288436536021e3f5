"""fairseq failures whose fix is known, told in one line instead of a traceback.

fairseq's command-line tools end these in a Python traceback whose last line rarely says what
to change: a checkpoint that is truncated or not a checkpoint, a split that was never
binarized, ``--max-tokens`` below the longest sentence, a sentence longer than the model's
positions, length filters that drop every pair, a ``--save-dir`` that cannot be made,
resuming with another architecture, an ``--input`` file that is not UTF-8, gradients that
diverged to NaN (which fairseq's NaN detector then fails to report). ``explain`` names
the fix for these (recognised by the exception and the fairseq function it was raised in);
every other exception keeps its traceback. ``errors.install_one_line_errors`` calls it.
"""

import os
import pickle
import re
from pathlib import Path

__all__ = ["explain"]


def _frames(trace):
    """(function name, locals) of every frame of a traceback, outermost first."""
    frames = []
    while trace is not None:
        frames.append((trace.tb_frame.f_code.co_name, trace.tb_frame.f_locals))
        trace = trace.tb_next
    return frames


def _local(frames, function, name):
    for frame, local in frames:
        if frame == function and name in local:
            return local[name]
    return None


def _splits(folder) -> str:
    names = sorted({p.name.split(".")[0] for p in Path(folder).glob("*.idx")})
    return ", ".join(names) or "none"


def _first_line(error) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return text if len(text) <= 160 else text[:157] + "..."


_UNREADABLE = (
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    KeyError,
    TypeError,
    ValueError,
)


def _checkpoint(error, frames):
    path = _local(frames, "load_checkpoint_to_cpu", "path")
    if path is None or not isinstance(error, _UNREADABLE):
        return None
    return (
        f"{path} is not a readable fairseq checkpoint (truncated, empty or another kind of "
        f"file: {type(error).__name__}); pass a checkpoint_*.pt written by fairseq-train, or "
        f"move this one out of --save-dir to resume from an older save"
    )


def _missing_split(error, frames):
    found = re.match(r"Dataset not found: (\S+) \((.+)\)$", str(error))
    if not isinstance(error, FileNotFoundError) or not found:
        return None
    split, folder = found.groups()
    return (
        f"{folder} has no split {split!r} (it has: {_splits(folder)}); binarize it with "
        f"fairseq-preprocess, or name one of those (--gen-subset, --valid-subset)"
    )


def _max_tokens(error, frames):
    found = re.match(
        r"Sentences lengths should not exceed max_tokens=(\d+)", str(error)
    )
    if not isinstance(error, AssertionError) or not found:
        return None
    return (
        f"--max-tokens {found.group(1)} is below the longest sentence of the split; raise "
        f"--max-tokens, or pass --skip-invalid-size-inputs-valid-test to drop longer ones"
    )


def _too_long(error, frames):
    if type(error) is not Exception or not str(error).startswith("Size of sample #"):
        return None
    return str(error)  # fairseq's own message names the fix


def _all_filtered(error, frames):
    if not isinstance(error, IndexError) or "batch_by_size" not in dict(frames):
        return None
    return (
        "the length filters dropped every sentence pair of a split (none fits "
        "--max-source-positions / --max-target-positions, or --max-tokens); raise them"
    )


def _save_dir(error, frames):
    folder = _local(frames, "verify_checkpoint_directory", "save_dir")
    if folder is None or not isinstance(error, OSError):
        return None
    return f"--save-dir {folder} cannot be created ({error.strerror}); pass a writable folder"


def _architecture(error, frames):
    found = re.match(
        r"Cannot load model parameters from checkpoint (.+); please ensure", str(error)
    )
    if not found:
        return None
    reason = error.__cause__ or error.__context__  # the state_dict's mismatch
    cause = f" ({_first_line(reason)})" if reason else ""
    return (
        f"{found.group(1)} holds another model than these flags build{cause}; resume with "
        f"the flags it was trained with, or pass another --save-dir"
    )


def _not_utf8(error, frames):
    if not isinstance(error, UnicodeDecodeError) or "buffered_read" not in dict(frames):
        return None
    name = _local(frames, "buffered_read", "input") or "--input"
    return (
        f"{name} is not UTF-8 ({error.reason} at byte {error.start}); re-encode it, for "
        f"example with iconv -f latin1 -t utf-8"
    )


def _diverged(error, frames):
    if not isinstance(error, FloatingPointError) or "Nan/Inf" not in str(error):
        return None
    return (
        "training diverged: the gradients are NaN or infinite; lower --lr or add "
        "--clip-norm 1.0, and resume from a checkpoint saved before it diverged"
    )


_KNOWN = (
    _diverged,
    _checkpoint,
    _missing_split,
    _max_tokens,
    _too_long,
    _all_filtered,
    _save_dir,
    _architecture,
    _not_utf8,
)


def explain(error: BaseException, trace) -> str | None:
    """The one-line message naming the fix for a known fairseq failure, or None."""
    frames = _frames(trace)
    chain = [
        error
    ]  # fairseq's NaN detector fails on our encoder's output while it reports
    while (
        chain[-1].__cause__ or chain[-1].__context__
    ):  # the divergence: the cause counts
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
        if len(chain) > 8:
            break
    for known in _KNOWN:
        for link in chain:
            try:
                message = known(link, frames)
            except Exception:  # explaining must never hide the real error
                message = None
            if message:
                return message.replace(os.linesep, " ")
    return None
