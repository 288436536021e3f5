"""Codebook.update_ under torch.distributed: two gloo processes on localhost, CPU only.

Each rank quantizes its own part of a fixed batch; after update_() both ranks must hold the
same EM state, equal to one process updating on the union of the parts.
"""

import datetime
import os
import socket
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fairseq_vqvae.bottleneck import BottleneckConfig, Codebook, VQBottleneck, em

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)

WORLD_SIZE = 2
TIMEOUT_S = 60
CONFIG = dict(codebook_size=6, code_dim=4, num_slices=2, decay=0.7)


def fixed_batches(num_updates=2):
    generator = torch.Generator().manual_seed(42)
    return [
        torch.randn(10, CONFIG["code_dim"], generator=generator)
        for _ in range(num_updates)
    ]


def make_vq(bottleneck, dead_code_threshold=0.0, codebook_init="uniform"):
    torch.manual_seed(0)  # the same initial codebook in every process
    return VQBottleneck(
        BottleneckConfig(
            bottleneck=bottleneck,
            dead_code_threshold=dead_code_threshold,
            codebook_init=codebook_init,
            **CONFIG,
        )
    )


def soft_step(codebook, x):
    """Soft EM with fixed (exact softmax) responsibilities, so ranks do not sample."""
    flat = x.reshape(x.shape[0], codebook.num_slices, codebook.code_dim)  # (N, S, D/S)
    r = em.soft_responsibilities(codebook.distances(flat), temperature=2.0)
    codebook.accumulate_(*em.em_statistics(flat, r))
    codebook.update_()


def run_scenarios(parts):
    """Train every scenario on ``parts(batch)``, this process's rows; returns its state."""
    results = {}
    for name, threshold, split, init in [
        ("hard_em", 0.0, "halves", "uniform"),
        ("hard_em_empty_rank", 0.0, "all_on_rank_0", "uniform"),
        ("hard_em_restart", 2.5, "halves", "uniform"),
        ("hard_em_data_init", 0.0, "halves", "data"),
    ]:
        vq = make_vq("hard_em", threshold, init)
        for step, batch in enumerate(fixed_batches()):
            torch.manual_seed(
                11
            )  # restart candidates are drawn with the global generator
            vq.step_(vq(parts(batch, split)).em_stats)
            if step == 0 and init == "data":
                results[f"{name}_first"] = {
                    k: v.clone() for k, v in vq.codebook.state_dict().items()
                }
        results[name] = {k: v.clone() for k, v in vq.codebook.state_dict().items()}
    for name, split in [("soft_em", "halves"), ("soft_em_empty_rank", "all_on_rank_0")]:
        codebook = make_vq("soft_em").codebook
        for batch in fixed_batches():
            soft_step(codebook, parts(batch, split))
        results[name] = {k: v.clone() for k, v in codebook.state_dict().items()}
    return results


def _rank_rows(rank):
    def parts(batch, split):
        if split == "halves":
            return batch[rank::WORLD_SIZE]
        return batch if rank == 0 else batch[:0]  # rank 1: a zero-length (dummy) batch

    return parts


def _worker(rank, port, out_dir):
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )
    try:
        torch.save(
            run_scenarios(_rank_rows(rank)), os.path.join(out_dir, f"rank{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(out_dir):
    context = mp.start_processes(
        _worker,
        args=(_free_port(), str(out_dir)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S + 30
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("distributed workers did not finish in time")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    _spawn(out_dir)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def single_process_results():
    assert not dist.is_initialized()
    return run_scenarios(lambda batch, split: batch)  # the union of both ranks' rows


SCENARIOS = [
    "hard_em",
    "hard_em_empty_rank",
    "hard_em_restart",
    "hard_em_data_init",
    "soft_em",
    "soft_em_empty_rank",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ranks_hold_identical_buffers(rank_results, scenario):
    rank0, rank1 = (r[scenario] for r in rank_results)
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert int(rank0["num_updates"]) == 2


# Restarts and the data initialisation draw from the gathered vectors in rank order.
@pytest.mark.parametrize(
    "scenario",
    [s for s in SCENARIOS if s not in ("hard_em_restart", "hard_em_data_init")],
)
def test_distributed_update_equals_single_process_on_union(
    rank_results, single_process_results, scenario
):
    for name, expected in single_process_results[scenario].items():
        torch.testing.assert_close(rank_results[0][scenario][name], expected, msg=name)
    # Not a tautology: one rank's half alone gives a different codebook.
    if scenario in ("hard_em", "soft_em"):
        alone = run_scenarios(lambda batch, split: batch[0::WORLD_SIZE])[scenario]
        assert not torch.allclose(
            alone["weight"], single_process_results[scenario]["weight"]
        )


def test_restarted_codes_are_vectors_of_the_last_batch(rank_results):
    state = rank_results[0]["hard_em_restart"]
    # Codes restarted in update 2 have their EMA count reset to the threshold times the bias
    # correction 1 - 0.7^2 = 0.51, i.e. 2.5 * 0.51 = 1.275, and their sums to 1.275 * code.
    # (A non-integer threshold: no surviving code can have exactly this count.)
    restarted = torch.isclose(
        state["ema_counts"], torch.tensor(1.275), rtol=0, atol=1e-6
    )
    assert restarted.any(), "threshold 2.5 should restart some of the 6 codes"
    last = fixed_batches()[-1].reshape(10, CONFIG["num_slices"], -1)  # (N, S, D/S)
    for s, k in restarted.nonzero().tolist():
        assert (state["weight"][s, k] == last[:, s]).all(-1).any(), (s, k)
        torch.testing.assert_close(
            state["ema_sums"][s, k], 1.275 * state["weight"][s, k]
        )


def test_data_init_draws_the_same_codes_from_both_ranks_vectors(rank_results):
    """Rank 0 holds rows 0, 2, ... of the first batch and rank 1 rows 1, 3, ...; after the
    first update both hold the same 6 codes, each a distinct row of either rank."""
    first = [r["hard_em_data_init_first"] for r in rank_results]
    assert torch.equal(first[0]["weight"], first[1]["weight"])
    assert bool(first[0]["initialized"]) and int(first[0]["num_updates"]) == 1
    rows = fixed_batches()[0].reshape(10, CONFIG["num_slices"], -1)  # (N, S, D/S)
    for s in range(CONFIG["num_slices"]):
        matches = (first[0]["weight"][s][:, None] == rows[None, :, s]).all(-1)  # (K, N)
        assert (matches.sum(1) == 1).all() and (matches.sum(0) <= 1).all()
        source_rows = matches.float().argmax(1)
        assert {int(r) % WORLD_SIZE for r in source_rows} == {0, 1}  # from both ranks


def test_codebook_without_distributed_is_unchanged_by_empty_update():
    codebook = Codebook(1, 3, 2)
    before = codebook.weight.clone()
    codebook.update_()
    assert torch.equal(codebook.weight, before)
