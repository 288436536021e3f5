"""Issue 42: no command writes over a run's checkpoints or another run's results.

fairseq-train with --task translation_vqvae refuses to start from scratch in a save directory
that holds checkpoints (fairseq_vqvae.checkpoints.refuse_fresh_start); scripts/benchmark.py
adds a second run to its results file and writes over nothing else.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_vqvae.errors import OptionError

REPO = Path(__file__).resolve().parents[1]


def _save_dir(tmp_path, *names) -> Path:
    save = tmp_path / "ck"
    save.mkdir(parents=True)
    for name in names:
        (save / name).write_bytes(f"a good {name}".encode())
    return save


def test_a_fresh_start_over_a_save_dirs_checkpoints_is_refused(tmp_path, build_vqvae):
    """checkpoint_last.pt deleted: fairseq would train from scratch and replace the best."""
    save = _save_dir(tmp_path, "checkpoint_best.pt", "checkpoint3.pt")
    with pytest.raises(
        OptionError,
        match=r"no checkpoint_last.pt to resume from, but it holds checkpoint3.pt, "
        r"checkpoint_best.pt, .*--restore-file PATH .*--finetune-from-model PATH .*"
        r"another --save-dir",
    ):
        build_vqvae("--save-dir", str(save))
    missing = tmp_path / "gone.pt"
    with pytest.raises(OptionError, match=f"--restore-file {missing} does not exist"):
        build_vqvae("--save-dir", str(save), "--restore-file", str(missing))
    assert (save / "checkpoint_best.pt").read_bytes() == b"a good checkpoint_best.pt"


def test_the_normal_starts_are_not_refused(tmp_path, build_vqvae):
    save = _save_dir(tmp_path, "checkpoint_best.pt")
    other = _save_dir(tmp_path / "o", "checkpoint_best.pt")
    for flags in (
        ("--save-dir", str(tmp_path / "new")),  # a new directory
        ("--save-dir", str(_save_dir(tmp_path / "e", "train.log"))),  # no checkpoints
        ("--save-dir", str(save), "--restore-file", str(other / "checkpoint_best.pt")),
        ("--save-dir", str(save), "--finetune-from-model", str(other / "x.pt")),
        ("--save-dir", str(save), "--continue-once", str(other / "x.pt")),
        ("--save-dir", str(save), "--no-save"),
    ):
        build_vqvae(*flags)
    built = build_vqvae("--save-dir", str(tmp_path / "new"))
    built.task.build_model(built.args, from_checkpoint=True)  # generate, interactive
    args = build_vqvae("--save-dir", str(tmp_path / "new")).args
    args.save_dir = str(save)
    built.task.build_model(args, from_checkpoint=True)
    (save / "checkpoint_last.pt").write_bytes(b"the resume point")
    build_vqvae("--save-dir", str(save))  # a resume


def test_fairseq_train_stops_before_replacing_the_best_checkpoint(
    tmp_path, tiny_databin
):
    """The command line: a one-line error (status 2), the checkpoint untouched."""
    save = _save_dir(tmp_path, "checkpoint_best.pt")
    train = Path(sys.executable).parent / "fairseq-train"
    result = subprocess.run(
        [
            str(train),
            str(tiny_databin),
            "--user-dir",
            str(REPO / "fairseq_vqvae"),
            "--task",
            "translation_vqvae",
            "--arch",
            "vqvae_nat_tiny",
            "--criterion",
            "vqvae_em",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--max-tokens",
            "1000",
            "--max-update",
            "1",
            "--cpu",
            "--num-workers",
            "0",
            "--save-dir",
            str(save),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "fairseq-train: error: --save-dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert (save / "checkpoint_best.pt").read_bytes() == b"a good checkpoint_best.pt"
    assert sorted(p.name for p in save.iterdir()) == ["checkpoint_best.pt"]
