"""scripts/plugin_options.py: the options fairseq's --help cannot show."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plugin_options.py"


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_lists_every_group_with_defaults_and_help():
    result = _run()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("--arch vqvae_nat*:", "--criterion vqvae_em:", "--task translation_vqvae"):
        assert heading in out
    assert "  --bottleneck (default: " in out and "  --num-samples (default: " in out
    assert "  --gen-eos (default: 'first')" in out and "'last-latent' = EOS only" in out
    assert "  --gen-dedup (default: False)" in out
    assert "  --source-lang" not in out  # fairseq's own translation options are not repeated


def test_only_one_group():
    result = _run("--only", "task")
    assert result.returncode == 0, result.stderr
    assert "--task translation_vqvae" in result.stdout and "--bottleneck" not in result.stdout
    bad = _run("--only", "optimizer")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
