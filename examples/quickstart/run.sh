#!/usr/bin/env bash
# End-to-end demo on an embedded synthetic language pair (no download):
#   corpus -> fairseq-preprocess -> fairseq-train (vqvae_nat_tiny) -> fairseq-generate (batch 1).
# Prints BLEU and per-sentence latency. About 9 minutes on 2 idle CPU cores.
#
# Environment knobs: WORK (output folder, default runs/quickstart), MAX_UPDATE (default 800),
# THREADS (torch threads, default 2), BOTTLENECK (vqvae|hard_em|soft_em, default soft_em),
# TRAIN_PAIRS / TEST_PAIRS (corpus size, default 20000 / 500).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${WORK:-$ROOT/runs/quickstart}"
MAX_UPDATE="${MAX_UPDATE:-800}"
THREADS="${THREADS:-2}"
BOTTLENECK="${BOTTLENECK:-soft_em}"
TRAIN_PAIRS="${TRAIN_PAIRS:-20000}"
TEST_PAIRS="${TEST_PAIRS:-500}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="$(dirname "$PY")"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
mkdir -p "$WORK"
step() { echo "[quickstart $(date +%H:%M:%S)] $*" >&2; }

step "1/4 writing the synthetic corpus to $WORK/text"
"$PY" "$ROOT/scripts/make_synthetic_corpus.py" --out-dir "$WORK/text" --train "$TRAIN_PAIRS" --valid 300 --test "$TEST_PAIRS"

step "2/4 binarizing with fairseq-preprocess (joined dictionary)"
rm -rf "$WORK/data-bin"
"$BIN/fairseq-preprocess" --source-lang en --target-lang de \
  --trainpref "$WORK/text/train" --validpref "$WORK/text/valid" --testpref "$WORK/text/test" \
  --destdir "$WORK/data-bin" --joined-dictionary --workers 1 > "$WORK/preprocess.log" 2>&1

step "3/4 training vqvae_nat_tiny ($BOTTLENECK) for $MAX_UPDATE updates; log: $WORK/train.log"
rm -rf "$WORK/checkpoints"
"$BIN/fairseq-train" "$WORK/data-bin" --user-dir "$ROOT/fairseq_vqvae" \
  --task translation_vqvae --arch vqvae_nat_tiny --criterion vqvae_em --bottleneck "$BOTTLENECK" \
  --share-all-embeddings --encoder-embed-dim 128 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 \
  --codebook-decay 0.99 --num-samples 5 --dead-code-threshold 0.05 \
  --optimizer adam --adam-betas '(0.9,0.98)' --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 200 \
  --max-tokens 4096 --max-update "$MAX_UPDATE" --validate-interval 5 --no-epoch-checkpoints \
  --save-dir "$WORK/checkpoints" --cpu --num-workers 0 --seed 1 \
  --log-format simple --log-interval 100 2>&1 | tee "$WORK/train.log" | grep --line-buffered -E "train_inner|valid on|done training" >&2

step "4/4 translating the $TEST_PAIRS test sentences one at a time (--batch-size 1)"
"$BIN/fairseq-generate" "$WORK/data-bin" --user-dir "$ROOT/fairseq_vqvae" --task translation_vqvae \
  --path "$WORK/checkpoints/checkpoint_last.pt" --gen-subset test --batch-size 1 --cpu \
  --scoring sacrebleu > "$WORK/generate.log" 2>&1
"$PY" "$ROOT/scripts/parse_generate.py" "$WORK/generate.log" --json "$WORK/result.json"
