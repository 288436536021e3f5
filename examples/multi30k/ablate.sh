#!/usr/bin/env bash
# The recipe ablation harness (issue 13): train one recipe variant of vqvae_nat_small on Multi30k
# for a fixed budget and write its result row; `--table` rebuilds the table of every row.
#
#   bash examples/multi30k/ablate.sh VARIANT [SEED ...]     train + measure (default seeds: 1 2)
#   bash examples/multi30k/ablate.sh --table                  rows -> results/ablations/README.md table
#   bash examples/multi30k/ablate.sh --list                   the variants and their flags
#   bash examples/multi30k/ablate.sh --prepare                the data of every variant, nothing else
#                                                             (before several runs start at once)
#
# A variant is a line of examples/multi30k/results/ablations/variants.tsv: id, data (distill|raw), one
# line of description, the fairseq-train flags it adds to the common student command below.
# Every variant of one budget shares everything else: data, batch, optimizer, seeds, and the
# benchmark (test_2016_flickr at batch 1, 1 thread, predicted and oracle latents).
#
# Data: `prepare_multi30k.sh` (about 1 min), and for `distill` the shared teacher's beam-4
# targets (../shared/data/multi30k-distilled, 35.1 greedy / 36.2 beam 4) tokenised and BPE'd
# like the raw data and binarised with its dictionary (about 1 min). The study's own teacher
# (run.sh) is not needed, so a variant can be measured on a fresh machine in one command.
#
# A row: examples/multi30k/results/ablations/rows/VARIANT__seedN__uBUDGET.json with validation BLEU
# (every epoch; decisions are taken on it), test BLEU, length ratio, oracle-latent BLEU, latent
# accuracy and codes in use at the last validation, updates, training wall time, the commit and
# the exact command. Training resumes from checkpoint_last.pt when rerun. With KEEP_EPOCHS=N
# the run keeps its last N epoch checkpoints, and the row adds their average
# (scripts/average_checkpoints.py) measured beside the best checkpoint on validation and test.
#
# A variant's flags may name {teacher}: the AR teacher checkpoint (TEACHER, default the one
# scripts/train_teacher.sh writes), for example `--post-norm --init-from-ar {teacher}`; and
# {best:uBUDGET/VARIANT}: the best checkpoint of that variant's run with the same seed, for a
# second training stage, for example `--latent-predictor-only --finetune-from-model
# {best:u1000/fsg_hard_em}` (MAX_UPDATE is then the second stage's own budget); and
# {fresh-predictor:uBUDGET/VARIANT}: the same checkpoint with a new latent predictor
# (scripts/fresh_latent_predictor.py, seeded by SEED, with the variant's --latent-layers), for
# a second stage that learns the predictor again from scratch.
#
# FROM_BUDGET=N (below MAX_UPDATE): a run with no checkpoint of its own starts from the
# checkpoint_last.pt of the same variant and seed's N-update run (with its best checkpoint, log
# and commits), when there is one and it was trained with the same command but for its budget,
# epoch checkpoints and save directory: every variant's schedule is independent of the budget
# (inverse-sqrt, glancing annealed over fixed updates), so that checkpoint is where this run
# stands at update N. A 4,000-update row then costs 3,000 updates after its 1,000-update row.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, BIN, log, die
LOG_NAME=ablate

WORK="${WORK:-$ROOT/runs/multi30k}"
ABL="${ABL:-$HERE/results/ablations}"
SRC_DIR="${SRC_DIR:-$ROOT/../shared/data/multi30k}"
DISTILLED="${DISTILLED:-$ROOT/../shared/data/multi30k-distilled/train.de.gz}"
MAX_UPDATE="${MAX_UPDATE:-1000}"
THREADS="${THREADS:-2}"
BENCH_THREADS="${BENCH_THREADS:-1}"
MAX_TOKENS="${MAX_TOKENS:-4096}"
KEEP_EPOCHS="${KEEP_EPOCHS:-0}"
FROM_BUDGET="${FROM_BUDGET:-}"
AUTOCAST="${AUTOCAST:-auto}"
DRY_RUN="${DRY_RUN:-0}"
PREPARE_ONLY=0
TEACHER="${TEACHER:-$WORK/teacher/checkpoint_best.pt}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

usage() {
  sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  cat >&2 <<EOF

Environment (default): WORK=$WORK  MAX_UPDATE=$MAX_UPDATE  THREADS=$THREADS
  BENCH_THREADS=$BENCH_THREADS  MAX_TOKENS=$MAX_TOKENS  DRY_RUN=0 (1: print the commands)
  KEEP_EPOCHS=$KEEP_EPOCHS (N > 0: keep the last N epoch checkpoints, average them and measure
    the average beside the best checkpoint, on validation and test)
  FROM_BUDGET= (N: a run with no checkpoint starts from the same variant and seed's N-update run)
  AUTOCAST=$AUTOCAST (--bf16-autocast: 1 always, 0 never, auto where it makes training faster:
    a GPU, or a CPU with native bfloat16; the row records the command it ran)
  SRC_DIR=$SRC_DIR  DISTILLED=$DISTILLED
  TEACHER=$TEACHER (for variants whose flags name {teacher})
EOF
}

# variant ID -> "data|description|flags" (dies when unknown)
variant() {
  local line
  line="$(awk -F'\t' -v id="$1" '$1 == id && !/^#/ {print $2 "|" $3 "|" $4; found = 1} END {exit !found}' "$ABL/variants.tsv")" \
    || die "unknown variant '$1': one of $(awk -F'\t' '!/^#/ && NF {printf "%s ", $1}' "$ABL/variants.tsv")(see --list)"
  echo "$line"
}

case "${1:-}" in
  -h|--help|"") usage; [[ -n "${1:-}" ]]; exit $? ;;
  --list) awk -F'\t' '!/^#/ && NF {printf "%-28s %-8s %s\n    flags: %s\n", $1, $2, $3, $4}' "$ABL/variants.tsv"; exit 0 ;;
  --table) exec "$PY" "$ROOT/research/ablations.py" table "$ABL" ;;
  --prepare) PREPARE_ONLY=1; set -- "" ;;
esac
ID="$1"; shift
SEEDS=("$@"); [[ ${#SEEDS[@]} -gt 0 ]] || SEEDS=(1 2)
for seed in "${SEEDS[@]}"; do [[ "$seed" =~ ^[0-9]+$ ]] || die "seed must be a non-negative integer, got '$seed'"; done
[[ "$MAX_UPDATE" =~ ^[1-9][0-9]*$ ]] || die "MAX_UPDATE must be a positive integer, got '$MAX_UPDATE'"
[[ "$KEEP_EPOCHS" =~ ^[0-9]+$ ]] || die "KEEP_EPOCHS must be a non-negative integer (0: no average), got '$KEEP_EPOCHS'"
[[ $PREPARE_ONLY == 1 || -z "$FROM_BUDGET" || ( "$FROM_BUDGET" =~ ^[1-9][0-9]*$ && "$FROM_BUDGET" -lt "$MAX_UPDATE" ) ]] \
  || die "FROM_BUDGET must be a positive integer below MAX_UPDATE ($MAX_UPDATE), got '$FROM_BUDGET'"
[[ $PREPARE_ONLY == 1 ]] || bf16_autocast_flag AUTOCAST
DATA_KIND=distill DESCRIPTION="" FLAGS=""  # --prepare: every kind of data, no variant
[[ $PREPARE_ONLY == 1 ]] || IFS='|' read -r DATA_KIND DESCRIPTION FLAGS <<< "$(variant "$ID")"
[[ "$DATA_KIND" == distill || "$DATA_KIND" == raw ]] || die "variant $ID: data must be 'distill' or 'raw', got '$DATA_KIND'"
TRAIN_FLAGS="$FLAGS"  # the row keeps {teacher}: the flags mean the same on every machine
if [[ "$FLAGS" == *"{teacher}"* ]]; then
  [[ $DRY_RUN == 1 || -f "$TEACHER" ]] \
    || die "variant $ID starts from the AR teacher, and there is none at $TEACHER: run scripts/train_teacher.sh or set TEACHER=path/to/checkpoint.pt"
  TRAIN_FLAGS="${FLAGS//\{teacher\}/$TEACHER}"
fi

# {best:uBUDGET/VARIANT} or {fresh-predictor:uBUDGET/VARIANT} -> that run's best checkpoint for
# SEED (dies when it is malformed)
SECOND_STAGE='^\{(best|fresh-predictor):u([1-9][0-9]*)/([A-Za-z0-9_]+)\}$'
parent_checkpoint() {
  [[ "$1" =~ $SECOND_STAGE ]] \
    || die "variant $ID: '$1' is not {best:uBUDGET/VARIANT} or {fresh-predictor:uBUDGET/VARIANT}, e.g. {best:u1000/fsg_hard_em}"
  echo "$WORK/ablations/u${BASH_REMATCH[2]}/${BASH_REMATCH[3]}/seed$2/checkpoint_best.pt"
}
# shellcheck disable=SC2206
for flag in $TRAIN_FLAGS; do  # a second stage needs its first: check before anything runs
  [[ "$flag" == "{best:"* || "$flag" == "{fresh-predictor:"* ]] || continue
  for seed in "${SEEDS[@]}"; do
    parent="$(parent_checkpoint "$flag" "$seed")" || exit 1
    [[ "$flag" =~ $SECOND_STAGE ]]; budget="${BASH_REMATCH[2]}"; first="${BASH_REMATCH[3]}"
    [[ $DRY_RUN == 1 || -f "$parent" || -f "$ABL/rows/${ID}__seed${seed}__u${MAX_UPDATE}.json" ]] \
      || die "variant $ID is a second stage, and its first is not there: $parent (run MAX_UPDATE=$budget bash examples/multi30k/ablate.sh $first $seed)"
  done
done

DATA="$WORK/data"
SHARED_DISTILL="$WORK/distill_shared"
run() { echo "+ $*" >&2; [[ $DRY_RUN == 1 ]] || "$@"; }

# ---- data ------------------------------------------------------------------------------------
# prepare_data KIND: the raw data, and for KIND=distill the shared distilled targets; sets databin.
prepare_data() {
  run bash "$ROOT/scripts/prepare_multi30k.sh" --out "$DATA" --src-dir "$SRC_DIR" --workers "$THREADS"
  databin="$DATA/data-bin"
  [[ "$1" == distill ]] || return 0
  databin="$SHARED_DISTILL/data-bin"
  [[ $DRY_RUN == 0 && ! -f "$SHARED_DISTILL/.done" ]] || return 0
  [[ -f "$DISTILLED" ]] || die "no distilled targets at $DISTILLED: set DISTILLED=path/to/train.de.gz"
  log "binarising the shared distilled targets $DISTILLED with $DATA's tokenisation, BPE and dictionary"
  rm -rf "$SHARED_DISTILL"; mkdir -p "$SHARED_DISTILL/text"
  gzip -dc "$DISTILLED" | sed 's/\r$//' > "$SHARED_DISTILL/text/raw.de"
  n="$(wc -l < "$SHARED_DISTILL/text/raw.de")"; expected="$(wc -l < "$DATA/raw/train.en")"
  [[ "$n" == "$expected" ]] || die "$DISTILLED has $n lines, the Multi30k training set $expected"
  "$PY" "$ROOT/scripts/moses.py" tokenize -l de -a -j "$THREADS" "$SHARED_DISTILL/text/raw.de" "$SHARED_DISTILL/text/tok.de"
  "$BIN/subword-nmt" apply-bpe -c "$DATA/bpe/codes" --num-workers "$THREADS" \
    --input "$SHARED_DISTILL/text/tok.de" --output "$SHARED_DISTILL/text/train.de"
  cp "$DATA/bpe/train.en" "$SHARED_DISTILL/text/train.en"
  "$BIN/fairseq-preprocess" --source-lang en --target-lang de --trainpref "$SHARED_DISTILL/text/train" \
    --srcdict "$DATA/data-bin/dict.en.txt" --tgtdict "$DATA/data-bin/dict.de.txt" \
    --destdir "$SHARED_DISTILL/data-bin" --workers "$THREADS" > "$SHARED_DISTILL/preprocess.log" 2>&1 \
    || die "fairseq-preprocess failed: see $SHARED_DISTILL/preprocess.log"
  cp "$DATA"/data-bin/valid.* "$DATA"/data-bin/test.* "$SHARED_DISTILL/data-bin/"
  echo "$DISTILLED" > "$SHARED_DISTILL/.done"
}
if [[ $PREPARE_ONLY == 1 ]]; then prepare_data distill; exit 0; fi
prepare_data "$DATA_KIND"

# ---- train and measure, one seed at a time ---------------------------------------------------
EPOCH_FLAGS=(--no-epoch-checkpoints)
[[ $KEEP_EPOCHS -gt 0 ]] && EPOCH_FLAGS=(--keep-last-epochs "$KEEP_EPOCHS")
AVERAGE_NAME="average of last $KEEP_EPOCHS epochs"
DEVICE_FLAGS=(--cpu)
have_cuda && DEVICE_FLAGS=()
COMMON=(
  "$databin" --user-dir "$ROOT/fairseq_vqvae" --task translation_vqvae --arch vqvae_nat_small
  --criterion vqvae_em --share-all-embeddings --optimizer adam --adam-betas '(0.9,0.98)'
  --lr-scheduler inverse_sqrt --warmup-init-lr 1e-07 --max-tokens "$MAX_TOKENS"
  --max-update "$MAX_UPDATE" "${EPOCH_FLAGS[@]}" --eval-bleu --eval-bleu-remove-bpe
  --eval-bleu-detok moses --best-checkpoint-metric bleu --maximize-best-checkpoint-metric
  --log-format simple --log-interval 50 --no-progress-bar "${BF16_AUTOCAST_FLAG[@]}" "${DEVICE_FLAGS[@]}"
)
# The bottleneck of vqvae_nat_small's preset until 2026-12-06, as flag/value pairs.
OLD_PRESET=(--bottleneck soft_em --compress-steps 3 --codebook-init uniform)
# recipe_of COMMAND_LINE: the command without its budget, epoch-checkpoint and save-dir flags
# and the plugin's location (--user-dir: a checkout or worktree of the same code elsewhere),
# and without the OLD_PRESET flags that DEFAULTS spells out (below): a command written before they
# were spelled out ran them implicitly, as vqvae_nat_small's preset defaults of the time
recipe_of() {
  local recipe i
  recipe="$(sed -E 's/ --max-update [0-9]+//; s/ --no-epoch-checkpoints//; s/ --keep-last-epochs [0-9]+//
    s/ --save-dir [^ ]+//; s/ --user-dir [^ ]+//' <<< "$1")"
  for ((i = 0; i < ${#OLD_PRESET[@]}; i += 2)); do
    recipe="$(sed -E "s/ ${OLD_PRESET[i]} ${OLD_PRESET[i + 1]}( |\$)/\1/" <<< "$recipe")"
  done
  printf '%s\n' "$recipe"
}
# start_from SHORTER_RUN SAVE CMD...: a run with no checkpoint of its own starts from the same
# variant and seed's FROM_BUDGET-update run, when there is one and it ran the same recipe
start_from() {
  local from="$1" save="$2" file
  shift 2
  if [[ ! -f "$from/checkpoint_last.pt" ]]; then
    log "  no $FROM_BUDGET-update run at $from: training from update 0"
    return 0
  fi
  [[ "$(recipe_of "$(cat "$from/command.txt" 2>/dev/null)")" == "$(recipe_of "$(printf '%q ' "$@")")" ]] \
    || die "FROM_BUDGET=$FROM_BUDGET: $from was not trained with this run's flags (its command.txt differs beyond budget, epoch checkpoints and save dir): unset FROM_BUDGET, or retrain it"
  log "  starting from the $FROM_BUDGET-update run's checkpoint: $from"
  run mkdir -p "$save"
  for file in checkpoint_last.pt checkpoint_best.pt train.log train_commits.txt; do
    [[ ! -f "$from/$file" ]] || run cp "$from/$file" "$save/$file"
  done
}
# The flags a variant does not set: the pre-issue-13 study's recipe (examples/multi30k/run.sh),
# and the bottleneck that vqvae_nat_small's preset gave every variant until 2026-12-06 (soft EM,
# n_c = 3, uniform codes: OLD_PRESET, above), so that each variant keeps its meaning under the
# preset of today.
DEFAULTS=(--lr 1e-3 --warmup-updates 500 "${OLD_PRESET[@]}")
mkdir -p "$ABL/rows"
for seed in "${SEEDS[@]}"; do
  save="$WORK/ablations/u$MAX_UPDATE/$ID/seed$seed"
  row="$ABL/rows/${ID}__seed${seed}__u${MAX_UPDATE}.json"
  if [[ -f "$row" ]]; then log "$ID seed $seed: row already in $row"; continue; fi
  # shellcheck disable=SC2206
  variant_flags=($TRAIN_FLAGS)
  flags=()
  for ((i = 0; i < ${#DEFAULTS[@]}; i += 2)); do  # a variant's own value wins
    [[ " ${variant_flags[*]} " == *" ${DEFAULTS[i]} "* ]] || flags+=("${DEFAULTS[i]}" "${DEFAULTS[i + 1]}")
  done
  for ((i = 0; i < ${#variant_flags[@]}; i++)); do
    case "${variant_flags[i]}" in
      "{best:"*) variant_flags[i]="$(parent_checkpoint "${variant_flags[i]}" "$seed")" ;;
      "{fresh-predictor:"*)  # the first stage's model with a new predictor, made once per seed
        parent="$(parent_checkpoint "${variant_flags[i]}" "$seed")"
        variant_flags[i]="$save/fresh_predictor.pt"
        layers=()
        for ((j = 0; j + 1 < ${#variant_flags[@]}; j++)); do
          [[ "${variant_flags[j]}" == --latent-layers ]] && layers=(--latent-layers "${variant_flags[j + 1]}")
        done
        # made again when the first stage has a newer best checkpoint, until the stage starts
        if [[ ! -f "$save/checkpoint_last.pt" && ( ! -f "$save/fresh_predictor.pt" || "$parent" -nt "$save/fresh_predictor.pt" ) ]]; then
          run "$PY" "$ROOT/scripts/fresh_latent_predictor.py" "$parent" --output "$save/fresh_predictor.pt" \
            --seed "$seed" "${layers[@]}" || die "could not give $parent a fresh latent predictor"
        fi ;;
    esac
  done
  cmd=("$BIN/fairseq-train" "${COMMON[@]}" "${flags[@]}" "${variant_flags[@]}" --seed "$seed" --save-dir "$save")
  log "$ID seed $seed: $DESCRIPTION ($MAX_UPDATE updates)"
  if [[ -n "$FROM_BUDGET" && ! -f "$save/checkpoint_last.pt" && ! -f "$save/train.done" ]]; then
    start_from "$WORK/ablations/u$FROM_BUDGET/$ID/seed$seed" "$save" "${cmd[@]}"
  fi
  if [[ ! -f "$save/train.done" ]]; then
    [[ -f "$save/checkpoint_last.pt" ]] && log "  resuming from $save/checkpoint_last.pt"
    echo "+ ${cmd[*]}" >&2
    if [[ $DRY_RUN == 0 ]]; then
      mkdir -p "$save"
      printf '%q ' "${cmd[@]}" > "$save/command.txt"
      # The code each training segment ran (a resumed run may continue on a later commit).
      echo "$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty)')" >> "$save/train_commits.txt"
      "${cmd[@]}" >> "$save/train.log" 2>&1 || die "training failed: see $save/train.log (rerun to resume)"
      touch "$save/train.done"
    fi
  fi
  average=() average_row=()
  if [[ $KEEP_EPOCHS -gt 0 ]]; then  # the average beside the best checkpoint, chosen on validation
    avg="$save/checkpoint_avg$KEEP_EPOCHS.pt"
    run "$PY" "$ROOT/scripts/average_checkpoints.py" "$save" --num-epoch-checkpoints "$KEEP_EPOCHS" --output "$avg"
    average=(--model "$ID, $AVERAGE_NAME=translation_vqvae:$avg")
    run "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --subset valid --ref-raw "$DATA/raw/valid.de" \
      --ref-tok "$DATA/tok/valid.de" --threads "$BENCH_THREADS" --throughput-max-tokens 0 \
      --model "$ID=translation_vqvae:$save/checkpoint_best.pt" "${average[@]}" --json "$save/benchmark_valid.json"
    average_row=(--benchmark-valid "$save/benchmark_valid.json" --average-epochs "$KEEP_EPOCHS")
  fi
  run "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --ref-raw "$DATA/raw/test.de" \
    --ref-tok "$DATA/tok/test.de" --threads "$BENCH_THREADS" --throughput-max-tokens 0 \
    --model "$ID=translation_vqvae:$save/checkpoint_best.pt" \
    --model "$ID, oracle latents=translation_vqvae:$save/checkpoint_best.pt:gen_oracle_latents=True" \
    "${average[@]}" --json "$save/benchmark.json"
  # the latent predictor's diagnostic columns: accuracy by position, free-running, its targets
  run "$PY" "$ROOT/research/latent_diagnostics.py" "$save/checkpoint_best.pt" "$databin" \
    --threads "$BENCH_THREADS" --json "$save/latent_diagnostics.json" > /dev/null
  run "$PY" "$ROOT/research/ablations.py" row --variant "$ID" --data "$DATA_KIND" --description "$DESCRIPTION" \
    --flags "$FLAGS" --seed "$seed" --max-update "$MAX_UPDATE" --train-dir "$save" \
    --benchmark "$save/benchmark.json" "${average_row[@]}" --diagnostics "$save/latent_diagnostics.json" --out "$row"
done
[[ $DRY_RUN == 1 ]] || "$PY" "$ROOT/research/ablations.py" table "$ABL"
