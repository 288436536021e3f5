"""Two fairseq-train workers on gloo keep bit-identical codebooks at every update.

Runs the real trainer (fairseq_cli.train) in two processes with --distributed-world-size 2,
--ddp-backend legacy_ddp, --update-freq 2 and uneven shards (so dummy batches happen), and
records each worker's bottleneck buffers after every optimizer step.
"""

import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

WORKER = textwrap.dedent(
    """
    import sys, torch
    from fairseq_cli import train
    import fairseq  # noqa: F401  (so the plugin registers its fairseq parts)
    from fairseq_vqvae import task as vq_task
    from fairseq_vqvae.codebook_updates import bottlenecks

    dump_path = sys.argv.pop(1)
    states = []
    original = vq_task.TranslationVQVAENATTask.optimizer_step

    def recording_step(self, optimizer, model, update_num):
        original(self, optimizer, model, update_num)
        codebook = bottlenecks(model)[0].codebook
        states.append({k: v.clone() for k, v in codebook.state_dict().items()})
        torch.save(states, dump_path)

    vq_task.TranslationVQVAENATTask.optimizer_step = recording_step
    sys.argv[0] = "fairseq-train"
    train.cli_main()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_data")
    rng = random.Random(0)
    for split, n in (("train", 61), ("valid", 8)):  # 61: shards of unequal size
        src, tgt = [], []
        for _ in range(n):
            words = [rng.choice("abcdefgh") for _ in range(rng.randint(2, 9))]
            src.append(" ".join(words))
            tgt.append(" ".join(w.upper() for w in reversed(words)))
        (root / f"{split}.src").write_text("\n".join(src) + "\n")
        (root / f"{split}.tgt").write_text("\n".join(tgt) + "\n")
    cmd = [
        str(BIN / "fairseq-preprocess"),
        "--source-lang",
        "src",
        "--target-lang",
        "tgt",
        "--trainpref",
        str(root / "train"),
        "--validpref",
        str(root / "valid"),
        "--destdir",
        str(root / "bin"),
        "--joined-dictionary",
        "--workers",
        "1",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return root / "bin"


@pytest.mark.parametrize("bottleneck", ["hard_em", "soft_em"])
def test_two_workers_hold_identical_codebooks(tmp_path, data_bin, bottleneck):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = []
    for rank in (0, 1):
        cmd = [
            sys.executable,
            str(script),
            str(tmp_path / f"rank{rank}.pt"),
            str(data_bin),
            "--user-dir",
            str(REPO / "fairseq_vqvae"),
            "--task",
            "translation_vqvae",
            "--arch",
            "vqvae_nat_tiny",
            "--criterion",
            "vqvae_em",
            "--bottleneck",
            bottleneck,
            "--num-samples",
            "3",
            "--codebook-decay",
            "0.9",
            "--dead-code-threshold",
            "0.5",
            "--share-all-embeddings",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--max-tokens",
            "120",
            "--update-freq",
            "2",
            "--max-update",
            "4",
            "--cpu",
            "--num-workers",
            "0",
            "--no-save",
            "--disable-validation",
            "--seed",
            "3",
            "--distributed-world-size",
            "2",
            "--distributed-rank",
            str(rank),
            "--device-id",
            str(rank),
            "--distributed-no-spawn",
            "--distributed-backend",
            "gloo",
            "--distributed-init-method",
            f"tcp://127.0.0.1:{port}",
            "--ddp-backend",
            "legacy_ddp",
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("distributed fairseq-train did not finish in 240 s")
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert (
        len(rank0) == len(rank1) == 4
    )  # one M-step per optimizer update, on both workers
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        for key in a:
            assert torch.equal(a[key], b[key]), (
                f"update {step + 1}: {key} differs across workers"
            )
    assert int(rank0[-1]["num_updates"]) == 4
    # The codebook really moved (the comparison above is not between two untouched buffers).
    assert not torch.equal(rank0[0]["weight"], rank0[-1]["weight"])
