#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything into it.
#
# Order matters: torch (the pinned CPU wheel) and fairseq's runtime dependencies first, then
# fairseq-fixed==0.12.3.1 with --no-deps --no-build-isolation (so its build compiles against the
# torch and numpy already installed and never pulls torchaudio or a CUDA torch), then this package.
# A second run finds the stamp file and returns in well under a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
FAIRSEQ_SPEC="fairseq-fixed==0.12.3.1"

stamp_key() {
  cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" "$ROOT/setup.py"
  echo "$FAIRSEQ_SPEC"
}
KEY="$(stamp_key | sha256sum | cut -d' ' -f1)"
STAMP="$VENV/.fairseq_vqvae-installed"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
  exit 0
fi

echo "[setup] creating environment in $VENV (first run takes about 5 minutes)" >&2
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=23" "setuptools<81" wheel
"${PIP[@]}" install -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt"
if ! "$VENV/bin/python" -c "import fairseq" 2>/dev/null; then
  echo "[setup] building $FAIRSEQ_SPEC from source (about 3 minutes)" >&2
  "${PIP[@]}" install --no-deps --no-build-isolation "$FAIRSEQ_SPEC"
fi
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
# Guard against the two ways a CUDA stack sneaks in.
"$VENV/bin/python" - <<'PY'
import importlib.util, sys, torch
if torch.version.cuda is not None:
    sys.exit(f"[setup] a CUDA torch ({torch.__version__}) was installed; expected the 2.13.0 CPU wheel")
if importlib.util.find_spec("torchaudio") is not None:
    sys.exit("[setup] torchaudio is installed; fairseq_vqvae never needs it, remove it")
PY
echo "$KEY" > "$STAMP"
echo "[setup] environment ready: $VENV" >&2
