"""Checkpoints that a kill cannot truncate, and that no run or script writes over by mistake.

fairseq 0.12's ``save_checkpoint`` writes the first checkpoint of an update atomically (a
``.tmp`` file, then a rename) but makes the others (``checkpoint_best.pt``,
``checkpoint_last.pt``, ...) with ``PathManager.copy``, a plain copy: a run killed during that
copy leaves a truncated ``checkpoint_last.pt``, and the next run fails with "PytorchStreamReader
failed reading zip archive" instead of resuming. ``install_atomic_checkpoint_copies`` makes
local copies atomic the same way (copy to ``.tmp``, then ``os.replace``), so that every
checkpoint name always holds a whole checkpoint, old or new. Remote paths (``scheme://``) keep
fairseq's own copy.

fairseq-train with no ``checkpoint_last.pt`` to resume from trains from scratch, and its first
validation replaces ``checkpoint_best.pt`` (issue 42): ``refuse_fresh_start`` stops such a
run in a save directory that holds checkpoints. ``output_refusal`` and ``save_atomically``
are the scripts' side: they never write over their inputs or fairseq-train's own files.
"""

import os
import re
import shutil
from pathlib import Path

from .errors import OptionError

# The names fairseq-train writes (checkpoint_utils.save_checkpoint), with any
# --checkpoint-suffix or shard suffix after them: it resumes from checkpoint_last.pt,
# replaces checkpoint_best.pt, deletes old checkpointEPOCH.pt and checkpoint_EPOCH_UPDATES.pt
# (--keep-last-epochs, --keep-interval-updates), which scripts/average_checkpoints.py averages.
FAIRSEQ_NAME = re.compile(r"checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.+).*\.pt")


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """``PathManager.copy`` for local files, through a temporary file and a rename."""
    if not overwrite and os.path.exists(dst_path):
        return False
    tmp = f"{dst_path}.tmp"
    try:
        shutil.copyfile(src_path, tmp)
        os.replace(tmp, dst_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def install_atomic_checkpoint_copies() -> None:
    """Route fairseq's local ``PathManager.copy`` through ``atomic_copy`` (once)."""
    from fairseq.file_io import PathManager

    original = PathManager.copy
    if getattr(original, "atomic", False):
        return

    def copy(src_path, dst_path, overwrite=False):
        if "://" in str(src_path) or "://" in str(dst_path):
            return original(src_path, dst_path, overwrite)
        return atomic_copy(str(src_path), str(dst_path), overwrite)

    copy.atomic = True
    PathManager.copy = staticmethod(copy)


def checkpoint_options(cfg):
    """fairseq-train's checkpoint options, seen from the model's: its argparse namespace
    holds every option, a hydra config has them in its root's ``checkpoint`` group."""
    if hasattr(cfg, "save_dir"):
        return cfg
    parent = cfg._get_parent() if hasattr(cfg, "_get_parent") else None
    return getattr(parent, "checkpoint", None)


def refuse_fresh_start(options) -> None:
    """Refuse to train from scratch into a save directory that holds checkpoints.

    ``options``: fairseq-train's checkpoint options (``save_dir``, ``restore_file``,
    ``finetune_from_model``, ``continue_once``, ``no_save``), as its argparse namespace or its
    ``checkpoint`` config. fairseq resumes from ``SAVE_DIR/checkpoint_last.pt``; without it
    (deleted, or never written under --no-last-checkpoints) it logs "No existing checkpoint
    found", starts again and replaces the directory's ``checkpoint_best.pt``. Allowed: an
    empty or new directory, a resume, ``--restore-file`` naming an existing file,
    ``--finetune-from-model``, ``--continue-once``, ``--no-save``.

    Raises:
        OptionError: the directory holds ``checkpoint*.pt`` files but no ``checkpoint_last*.pt``.
    """
    save_dir = getattr(options, "save_dir", None)
    if not save_dir or "://" in str(save_dir) or getattr(options, "no_save", False):
        return
    restore = getattr(options, "restore_file", "checkpoint_last.pt")
    if restore != "checkpoint_last.pt" and os.path.isfile(restore):
        return
    if getattr(options, "finetune_from_model", None) or getattr(
        options, "continue_once", None
    ):
        return
    directory = Path(save_dir)
    if not directory.is_dir() or any(directory.glob("checkpoint_last*.pt")):
        return
    found = sorted(p.name for p in directory.glob("checkpoint*.pt"))
    if not found:
        return
    what = (
        f"--restore-file {restore} does not exist and"
        if restore != "checkpoint_last.pt"
        else "no checkpoint_last.pt to resume from, but"
    )
    raise OptionError(
        f"--save-dir {save_dir}: {what} it holds {', '.join(found[:3])}"
        f"{f' and {len(found) - 3} more' if len(found) > 3 else ''}, which training from "
        f"scratch would overwrite: pass --restore-file PATH (resume from that checkpoint), "
        f"--finetune-from-model PATH (start from its weights) or another --save-dir"
    )


def output_refusal(
    output: Path, inputs: list[Path], force: bool, own_key: str
) -> str | None:
    """Why a script must not write the checkpoint ``output``; None when it may.

    Never one of ``inputs``, nor a name fairseq-train writes (``FAIRSEQ_NAME``: a resume
    would start from it, a training would replace it, a later average would include it). An
    existing file only with ``force``, or when it is this script's own earlier output (a
    checkpoint holding the key ``own_key``), which a rerun remakes.
    """
    if output.exists() and any(os.path.samefile(output, p) for p in inputs):
        return f"--output {output} is one of the checkpoints it reads: write a new file"
    if FAIRSEQ_NAME.fullmatch(output.name):
        return (
            f"--output {output}: {output.name} is a name fairseq-train writes (it resumes "
            f"from checkpoint_last.pt, replaces checkpoint_best.pt, averages and deletes "
            f"checkpointN.pt): give the output a name of its own (e.g. checkpoint_avg5.pt)"
        )
    if output.exists() and not force and not _holds_key(output, own_key):
        return (
            f"--output {output} exists and is not this script's output: pass --force to "
            f"replace it, or write a new file"
        )
    return None


def _holds_key(path: Path, key: str) -> bool:
    """Whether ``path`` is a torch checkpoint (a dict) with ``key`` (memory-mapped: cheap)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001  (anything unreadable is not ours)
        return False
    return isinstance(state, dict) and key in state


def save_atomically(state: dict, path: Path) -> None:
    """``torch.save`` through ``PATH.tmp`` and a rename: a killed run leaves the old file
    (or none), never half a checkpoint."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
