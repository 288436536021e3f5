"""Checkpoint copies that a kill cannot truncate (fairseq_vqvae.checkpoints)."""

import shutil

import pytest
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

import fairseq_vqvae.task  # noqa: F401  (installs the atomic copies, as --user-dir does)
from fairseq_vqvae import checkpoints


class Killed(BaseException):
    """Stands for SIGKILL (pytest treats a real KeyboardInterrupt as the user's)."""


def _interrupted_copyfile(src, dst):
    """A copy killed halfway: half the bytes are written, then the process is gone."""
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2])
    raise Killed("killed while copying")


def test_fairseq_save_checkpoint_copies_through_the_atomic_copy():
    assert checkpoint_utils.PathManager.copy is PathManager.copy
    assert getattr(PathManager.copy, "atomic", False)


def test_a_copy_killed_halfway_leaves_the_previous_checkpoint_whole(
    tmp_path, monkeypatch
):
    src, dst = tmp_path / "checkpoint_best.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old" * 1000)
    monkeypatch.setattr(checkpoints.shutil, "copyfile", _interrupted_copyfile)
    with pytest.raises(Killed):
        PathManager.copy(str(src), str(dst), overwrite=True)
    assert (
        dst.read_bytes() == b"old" * 1000
    )  # fairseq's plain copy leaves 1,500 bytes here
    assert not (tmp_path / "checkpoint_last.pt.tmp").exists()
    monkeypatch.undo()
    assert PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b"new" * 1000


def test_fairseqs_plain_copy_is_what_truncated_checkpoints(tmp_path, monkeypatch):
    """Why the copy is replaced: the same kill through shutil.copyfile truncates."""
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old" * 1000)
    monkeypatch.setattr(shutil, "copyfile", _interrupted_copyfile)
    with pytest.raises(Killed):
        shutil.copyfile(str(src), str(dst))
    assert len(dst.read_bytes()) == 1500


def test_copy_without_overwrite_keeps_an_existing_file(tmp_path):
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    assert checkpoints.atomic_copy(str(src), str(dst), overwrite=False) is False
    assert dst.read_bytes() == b"old"
