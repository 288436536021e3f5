"""The README's first command: examples/quickstart/run.sh end to end, on a small corpus."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end_and_translates_every_test_sentence(tmp_path):
    env = dict(
        os.environ,
        WORK=str(tmp_path),
        MAX_UPDATE="3",
        TRAIN_PAIRS="300",
        TEST_PAIRS="25",
        THREADS="1",
        PYTHON=sys.executable,
    )
    proc = subprocess.run(
        ["bash", str(REPO / "examples/quickstart/run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["sentences"] == 25 and result["hypotheses"] == 25
    # The reported BLEU is sacreBLEU of the 25 printed translations against their references
    # (3 updates learn nothing: a floor belongs to tests/test_learning.py).
    log = (tmp_path / "generate.log").read_text()
    hyps = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", log, flags=re.M))
    refs = dict(re.findall(r"^T-(\d+)\t(.*)$", log, flags=re.M))
    assert len(hyps) == len(refs) == 25
    ids = sorted(refs, key=int)
    expected = sacrebleu.corpus_bleu([hyps[i] for i in ids], [[refs[i] for i in ids]])
    assert result["bleu"] == pytest.approx(expected.score, abs=0.01)
    assert "ms/sentence" in proc.stdout and "BLEU" in proc.stdout
    assert (tmp_path / "checkpoints" / "checkpoint_last.pt").exists()
