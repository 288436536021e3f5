"""Checkpoint copies that a kill cannot truncate.

fairseq 0.12's ``save_checkpoint`` writes the first checkpoint of an update atomically (a
``.tmp`` file, then a rename) but makes the others (``checkpoint_best.pt``,
``checkpoint_last.pt``, ...) with ``PathManager.copy``, a plain copy: a run killed during that
copy leaves a truncated ``checkpoint_last.pt``, and the next run fails with "PytorchStreamReader
failed reading zip archive" instead of resuming. ``install_atomic_checkpoint_copies`` makes
local copies atomic the same way (copy to ``.tmp``, then ``os.replace``), so that every
checkpoint name always holds a whole checkpoint, old or new. Remote paths (``scheme://``) keep
fairseq's own copy.
"""

import os
import shutil

from fairseq.file_io import PathManager


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
    original = PathManager.copy
    if getattr(original, "atomic", False):
        return

    def copy(src_path, dst_path, overwrite=False):
        if "://" in str(src_path) or "://" in str(dst_path):
            return original(src_path, dst_path, overwrite)
        return atomic_copy(str(src_path), str(dst_path), overwrite)

    copy.atomic = True
    PathManager.copy = staticmethod(copy)
