#!/usr/bin/env bash
# CIFAR-10 VQ-VAE with an EM-trained bottleneck: the exact commands of README.md.
# Usage: bash examples/cifar10/run.sh [DATA_DIR]   (default: ../shared/data/cifar10-subset)
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $# -le 1 && "${1:-}" != -* ]] || {
  echo "usage: bash examples/cifar10/run.sh [DATA_DIR] (no options; got '$*')" >&2; exit 2; }
DATA="${1:-../shared/data/cifar10-subset}"
[[ -d "$DATA" ]] || { echo "error: no CIFAR-10 folder at '$DATA' (the python pickle layout: data_batch_*, test_batch)" >&2; exit 1; }
PY=.venv/bin/python
[[ -x "$PY" ]] || { echo "error: $PY not found: set up the environment first (bash scripts/setup_env.sh)" >&2; exit 1; }

# 1. Train one model (about 5 minutes on one CPU thread); rerunning resumes.
$PY -m fairseq_vqvae.image.train --data "$DATA" --bottleneck soft_em --max-updates 1000 \
    --threads 1 --save-dir runs/cifar10_soft_em

# 2. Evaluate it, fit the latent prior and sample (about 2 minutes).
$PY -m fairseq_vqvae.image.evaluate --checkpoint runs/cifar10_soft_em/checkpoint_last.pt \
    --data "$DATA" --prior-updates 600 --threads 1

# 3. The benchmark: vqvae / hard_em / soft_em x 3 seeds (about an hour on one thread).
$PY scripts/image_benchmark.py --data "$DATA" --threads 1 --out-dir runs/image_benchmark
