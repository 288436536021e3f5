#!/usr/bin/env bash
# Set up the environment (first run only, about 5 minutes), lint, and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# Lint and format first (ruff.toml): a style failure fails the run before the tests.
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check .
exec "$ROOT/.venv/bin/python" -m pytest -q "$@" tests
