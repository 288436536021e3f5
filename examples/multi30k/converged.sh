#!/usr/bin/env bash
# The converged study (issue 13): the headline rows trained for MAX_UPDATE updates (4,000: about
# 2-4.5 hours each alone on the 2-core machine, whose speed drifts),
# then every trained row and the teacher measured in ONE process:
#
#   bash examples/multi30k/converged.sh [train|benchmark|all]     (default: all)
#
# train: each row of ROWS, one after the other, through ablate.sh (its result row and the
#   ablation table; a rerun resumes the unfinished row from its checkpoint_last.pt and skips
#   finished ones). benchmark: scripts/benchmark.py on test_2016_flickr at batch 1 (BENCH_THREADS,
#   1) with AR beam 4 and AR greedy of TEACHER and the best checkpoint of every trained row (one
#   table row per variant: mean ± std over its seeds) -> OUT/benchmark.{md,json,png}; and the
#   validation BLEU of every finished row against its updates -> OUT/curves.png.
#
# Environment: ROWS ("VARIANT:SEED ..." or "VARIANT:SEED:UPDATES" for a row of another budget,
#   such as a second stage; default below: soft EM + distill and hard EM + distill (two seeds
#   each), soft EM on raw data, n_c=4 + distill and the gradient-trained VQ-VAE + distill, in an
#   order that, two rows at a time (PARALLEL=2 on the 2 cores), gives the second seeds early),
#   MAX_UPDATE (4000), THREADS (2), KEEP_EPOCHS (5: each row also keeps its last 5 epoch
#   checkpoints and is measured averaged too, a second table row "VARIANT, average of last 5 epochs"),
#   BENCH_THREADS (1), WORK (runs/multi30k), TEACHER, OUT (examples/multi30k/results/converged),
#   PARALLEL (1: rows one after the other; N > 1: up to N rows train and are measured at once,
#   for a GPU, which one small row leaves mostly idle, the rows of another budget once all rows
#   of MAX_UPDATE are done; each row's output then goes to WORK/logs/converged_VARIANT_seedN.log),
#   DRY_RUN (1: print the commands).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, log, die
LOG_NAME=converged

STAGE="${1:-all}"
[[ "$STAGE" == train || "$STAGE" == benchmark || "$STAGE" == all ]] \
  || { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; die "unknown stage '$STAGE': train, benchmark or all"; }
ROWS="${ROWS:-fast_schedule_glance:1 fsg_hard_em:1 fsg_raw:1 fsg_hard_em:2 fsg_nc4:1 fast_schedule_glance:2 fsg_vqvae:1}"
MAX_UPDATE="${MAX_UPDATE:-4000}"
KEEP_EPOCHS="${KEEP_EPOCHS:-5}"
WORK="${WORK:-$ROOT/runs/multi30k}"
DATA="$WORK/data"
TEACHER="${TEACHER:-$WORK/teacher/checkpoint_best.pt}"
OUT="${OUT:-$HERE/results/converged}"
DRY_RUN="${DRY_RUN:-0}"
PARALLEL="${PARALLEL:-1}"
[[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]] || die "PARALLEL must be a positive integer (rows at once), got '$PARALLEL'"
[[ "$MAX_UPDATE" =~ ^[1-9][0-9]*$ ]] || die "MAX_UPDATE must be a positive integer, got '$MAX_UPDATE'"
[[ "$KEEP_EPOCHS" =~ ^[0-9]+$ ]] || die "KEEP_EPOCHS must be a non-negative integer (0: no average), got '$KEEP_EPOCHS'"
ROW_FORMAT='^([A-Za-z0-9_]+):([1-9][0-9]*)(:([1-9][0-9]*))?$'
for row in $ROWS; do
  [[ "$row" =~ $ROW_FORMAT ]] || die "ROWS entry '$row' is not VARIANT:SEED or VARIANT:SEED:UPDATES"
done
# parse_row VARIANT:SEED[:UPDATES] -> variant, seed, budget (MAX_UPDATE unless the row says)
parse_row() {
  [[ "$1" =~ $ROW_FORMAT ]]
  variant="${BASH_REMATCH[1]}" seed="${BASH_REMATCH[2]}" budget="${BASH_REMATCH[4]:-$MAX_UPDATE}"
}

train_row() {  # train_row VARIANT:SEED[:UPDATES]
  parse_row "$1"
  MAX_UPDATE="$budget" WORK="$WORK" DRY_RUN="$DRY_RUN" KEEP_EPOCHS="$KEEP_EPOCHS" \
    bash "$HERE/ablate.sh" "$variant" "$seed"
}
if [[ "$STAGE" != benchmark && $PARALLEL == 1 ]]; then
  for row in $ROWS; do
    parse_row "$row"
    log "row $variant seed $seed, $budget updates"
    train_row "$row"
  done
elif [[ "$STAGE" != benchmark ]]; then
  # The data first, once: rows started together would each prepare it.
  WORK="$WORK" DRY_RUN="$DRY_RUN" bash "$HERE/ablate.sh" --prepare
  mkdir -p "$WORK/logs"
  status_dir="$(mktemp -d)"
  first=() later=()  # rows of another budget (second stages) start once the others are done
  for row in $ROWS; do
    parse_row "$row"
    if [[ "$budget" == "$MAX_UPDATE" ]]; then first+=("$row"); else later+=("$row"); fi
  done
  start_rows() {
    for row in "$@"; do
      while [[ "$(jobs -rp | wc -l)" -ge $PARALLEL ]]; do sleep 5; done
      parse_row "$row"
      row_log="$WORK/logs/converged_${variant}_seed${seed}.log"
      log "row $variant seed $seed, $budget updates (log: $row_log)"
      { train_row "$row" > "$row_log" 2>&1; echo $? > "$status_dir/${row//:/_}"; } &
    done
    wait
  }
  start_rows "${first[@]}"
  [[ ${#later[@]} == 0 ]] || start_rows "${later[@]}"
  failed=()
  for row in $ROWS; do
    [[ "$(cat "$status_dir/${row//:/_}" 2>/dev/null)" == 0 ]] || failed+=("$row")
  done
  rm -rf "$status_dir"
  # Each row rewrote the table with the rows it saw; rows that finished together can miss one
  # another there: once more with all of them.
  [[ $DRY_RUN == 1 ]] || "$PY" "$ROOT/research/ablations.py" table "$HERE/results/ablations" > /dev/null
  [[ ${#failed[@]} == 0 ]] \
    || die "rows ${failed[*]} failed: see WORK/logs/converged_VARIANT_seedN.log (rerun to resume them)"
fi
[[ "$STAGE" == train ]] && exit 0

models=()
for row in $ROWS; do
  parse_row "$row"
  ckpt="$WORK/ablations/u$budget/$variant/seed$seed/checkpoint_best.pt"
  if [[ -f "$ckpt" || $DRY_RUN == 1 ]]; then
    models+=(--model "$variant=translation_vqvae:$ckpt")
    avg="${ckpt%/*}/checkpoint_avg$KEEP_EPOCHS.pt"
    [[ $KEEP_EPOCHS -gt 0 && ( -f "$avg" || $DRY_RUN == 1 ) ]] \
      && models+=(--model "$variant, average of last $KEEP_EPOCHS epochs=translation_vqvae:$avg")
  else
    log "no $ckpt yet: $variant seed $seed left out"
  fi
done
[[ ${#models[@]} -gt 0 ]] || die "no row of $MAX_UPDATE updates is trained yet: run '$0 train' first"
[[ -f "$TEACHER" || $DRY_RUN == 1 ]] || die "no teacher checkpoint at $TEACHER (scripts/train_teacher.sh, or set TEACHER=)"
cmd=("$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --ref-raw "$DATA/raw/test.de"
  --ref-tok "$DATA/tok/test.de" --threads "${BENCH_THREADS:-1}" --throughput-max-tokens 0
  --model "AR beam 4=translation:$TEACHER:beam=4" --model "AR greedy=translation:$TEACHER:beam=1"
  "${models[@]}" --out-dir "$OUT" --replace-results)
echo "+ ${cmd[*]}" >&2
[[ $DRY_RUN == 1 ]] || { mkdir -p "$OUT"; "${cmd[@]}"; }
curves=("$PY" "$ROOT/research/ablations.py" curves "$HERE/results/ablations" --budget "$MAX_UPDATE" --out "$OUT/curves.png")
echo "+ ${curves[*]}" >&2
[[ $DRY_RUN == 1 ]] || "${curves[@]}"
