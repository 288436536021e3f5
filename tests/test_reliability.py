"""The reliability benchmark's fast cases (research/reliability.py --fast): real fairseq CLIs
against a tiny model, SIGKILLs included. Each case fails when its fault is no longer handled."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_fast_fault_case_has_its_expected_outcome(tmp_path):
    rows_path = tmp_path / "rows.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "research/reliability.py"),
            "--fast",
            "--kills",
            "2",
        ]
        + ["--work", str(tmp_path / "work"), "--json", str(rows_path)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert rows_path.exists(), result.stderr[-3000:]
    rows = json.loads(rows_path.read_text())
    failed = [f"{row['case']}: {row['observed']}" for row in rows if not row["ok"]]
    assert not failed, failed
    assert result.returncode == 0, result.stdout[-3000:]
    names = {row["case"] for row in rows}
    assert {"kill_loop", "nan_codebook", "split_from_another_dictionary"} <= names
    assert "divergence" not in names  # slow: the full run only
    # one bad option of each kind; the other five take the same path (full run only)
    assert {"dropout_one", "fp16_on_cpu", "other_criterion"} <= names
    assert "zero_slices" not in names and "bf16_on_cpu" not in names
    kill = next(row for row in rows if row["case"] == "kill_loop")
    assert kill["observed"].startswith("2 kills (2 0-50 ms after a save)")


def test_cli_errors(tmp_path):
    script = [sys.executable, str(REPO / "research/reliability.py")]
    result = subprocess.run(
        script + ["--kills", "0"], capture_output=True, text=True, timeout=60
    )
    assert (
        result.returncode == 2 and "--kills must be at least 1, got 0" in result.stderr
    )
    result = subprocess.run(
        script + ["--jobs", "0"], capture_output=True, text=True, timeout=60
    )
    assert (
        result.returncode == 2 and "--jobs must be at least 1, got 0" in result.stderr
    )
    result = subprocess.run(
        script + ["--case", "nope"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
