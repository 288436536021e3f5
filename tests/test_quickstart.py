"""The README's first command: examples/quickstart/run.sh end to end, on a small corpus."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end_and_translates_every_test_sentence(tmp_path):
    env = dict(
        os.environ, WORK=str(tmp_path), MAX_UPDATE="3", TRAIN_PAIRS="300", TEST_PAIRS="25",
        THREADS="1", PYTHON=sys.executable,
    )
    proc = subprocess.run(
        ["bash", str(REPO / "examples/quickstart/run.sh")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["sentences"] == 25 and result["hypotheses"] == 25
    assert 0.0 <= result["bleu"] <= 100.0
    assert "ms/sentence" in proc.stdout and "BLEU" in proc.stdout
    assert (tmp_path / "checkpoints" / "checkpoint_last.pt").exists()
