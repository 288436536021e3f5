#!/usr/bin/env bash
# How the latent predictor scales with its training pairs: the predictor-only second stage of
# the converged study's row 2 (`hem_lp_fresh`: a fresh 2-layer predictor with dropout 0.3,
# trained alone for 1,400 updates on the frozen model's codes), on a random fraction of the
# distilled training pairs; validation (BLEU with predicted codes, latent accuracy and loss)
# every 140 updates, on the full validation set. The 100% point is the `hem_lp_fresh` row.
#
#   bash examples/multi30k/predictor_scaling.sh [train|table]
#
# Environment: FRACTIONS ("0.125 0.25 0.5"), SEED (1), PARENT (row 2's best checkpoint of that seed),
# MAX_UPDATE (1400), THREADS (1), WORK (runs/multi30k), OUT (examples/multi30k/results/predictor_scaling),
# PYTHON (.venv/bin/python).
# Resumable: a rerun goes on from each fraction's checkpoint_last.pt and skips finished ones.
# The subsets are the same for every SEED (their own seed is 1): seeds vary the training only.
set -euo pipefail
# shellcheck source=../../scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"  # ROOT, PY, BIN, log, die
LOG_NAME=predictor_scaling
WORK="${WORK:-$ROOT/runs/multi30k}"
OUT="${OUT:-$ROOT/examples/multi30k/results/predictor_scaling}"
FRACTIONS="${FRACTIONS:-0.125 0.25 0.5}"
SEED="${SEED:-1}"
PARENT="${PARENT:-$WORK/ablations/u4000/fsg_hard_em/seed$SEED/checkpoint_best.pt}"
MAX_UPDATE="${MAX_UPDATE:-1400}"
THREADS="${THREADS:-1}"
STAGE="${1:-train}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
DATA="$WORK/distill_shared/data-bin"

case "$STAGE" in train | table) ;; *) die "usage: $0 [train|table]" ;; esac
if [[ $STAGE == train ]]; then
  [[ -f $PARENT ]] || die "no parent checkpoint $PARENT: train row 2 first (examples/multi30k/converged.sh)"
  [[ -d $DATA ]] || die "no distilled data $DATA: bash examples/multi30k/ablate.sh --prepare"
  fresh="$WORK/scaling/fresh_predictor_seed$SEED.pt"
  [[ -f $fresh ]] || "$PY" "$ROOT/scripts/fresh_latent_predictor.py" "$PARENT" --output "$fresh" \
    --seed "$SEED" --latent-layers 2
  for fraction in $FRACTIONS; do
    name="frac$("$PY" -c "print(round($fraction * 1000))")"
    databin="$WORK/scaling/$name/data-bin"
    save="$WORK/scaling/$name/seed$SEED"
    [[ -f $databin/subset.json ]] ||
      "$PY" "$ROOT/research/subset_data_bin.py" "$DATA" "$databin" --fraction "$fraction" --seed 1
    if [[ -f $save/train.done ]]; then log "$name: done"; continue; fi
    mkdir -p "$save"
    cmd=("$BIN/fairseq-train" "$databin" --user-dir "$ROOT/fairseq_vqvae" --task translation_vqvae
      --arch vqvae_nat_small --criterion vqvae_em --share-all-embeddings --optimizer adam
      --adam-betas '(0.9,0.98)' --lr-scheduler inverse_sqrt --warmup-init-lr 1e-07 --max-tokens 4096
      --max-update "$MAX_UPDATE" --no-epoch-checkpoints --eval-bleu --eval-bleu-remove-bpe
      --eval-bleu-detok moses --best-checkpoint-metric bleu --maximize-best-checkpoint-metric
      --log-format simple --log-interval 50 --no-progress-bar --cpu --lr 1e-3 --dropout 0.1
      --warmup-updates 200 --glance-ratio 0.5 --glance-ratio-end 0.3 --glance-anneal-updates 1000
      --bottleneck hard_em --compress-steps 3 --codebook-init uniform --latent-predictor-only
      --finetune-from-model "$fresh"
      --latent-predictor-dropout 0.3 --latent-layers 2 --seed "$SEED" --save-dir "$save"
      # every 140 updates (an epoch of the full set), not at every shorter epoch
      --validate-interval 100000 --save-interval 100000 --validate-interval-updates 140
      --save-interval-updates 140 --keep-interval-updates 1)
    log "$name: $fraction of the training pairs, $MAX_UPDATE updates -> $save"
    printf '%q ' "${cmd[@]}" > "$save/command.txt"
    "${cmd[@]}" >> "$save/train.log" 2>&1 || die "training failed: see $save/train.log (rerun to resume)"
    touch "$save/train.done"
  done
fi
mkdir -p "$OUT"
runs=()
for fraction in $FRACTIONS; do
  name="frac$("$PY" -c "print(round($fraction * 1000))")"
  [[ -f $WORK/scaling/$name/seed$SEED/train.log ]] && runs+=(--run "$fraction=$WORK/scaling/$name/seed$SEED")
done
full="$WORK/ablations/u1400/hem_lp_fresh/seed$SEED"
[[ -f $full/train.log ]] && runs+=(--run "1=$full")
(( ${#runs[@]} )) || die "no scaling runs under $WORK/scaling: run 'bash $0 train' first"
"$PY" "$ROOT/research/ablations.py" scaling "${runs[@]}" --out "$OUT"
