#!/usr/bin/env bash
# Set up the environment (first run only, about 5 minutes) and run the end-to-end demo:
# synthetic corpus -> fairseq-preprocess -> fairseq-train vqvae_nat_tiny -> fairseq-generate.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
exec bash "$ROOT/examples/quickstart/run.sh" "$@"
