#!/usr/bin/env bash
# Your own parallel text, end to end with one command: DIR holds train / valid / test for both
# languages (DIR/train.SRC, DIR/train.TGT, DIR/valid.*, DIR/test.*; plain or .gz), one sentence
# per line, untokenized.
#
#   1 prepare    sacremoses + joint BPE + fairseq-preprocess --joined-dictionary  (scripts/prepare_corpus.sh)
#   2 teacher    fairseq `transformer`                                 (scripts/train_teacher.sh)
#   3 distill    teacher beam 4 over the training set, re-binarized    (scripts/distill.sh)
#   4 student    vqvae_nat_small on the distilled data                 (fairseq-train, translation_vqvae)
#   5 average    the student's last AVERAGE epoch checkpoints          (scripts/average_checkpoints.py)
#   6 benchmark  teacher (beam 4, greedy) and student: BLEU, batch-1 latency, throughput (scripts/benchmark.py)
#
# Every stage writes into its own folder of WORK and records WORK/.done.STAGE when it finished:
# a rerun skips it (an interrupted training resumes from its checkpoint_last.pt, a distillation
# from its finished shards). A marker records the stage's settings and the markers of the stages
# it read, so a stage made with other settings, or from other inputs, is refused, never
# silently reused or overwritten. A stage folder holding files this recipe did not make is
# refused too.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, BIN, log, die, claim_dir, train_fairseq, parse_run_args, ...
LOG_NAME=translate_your_data

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") SRC_LANG TGT_LANG DIR [--stages LIST] [--dry-run] [-h]

Trains a teacher and a VQ-VAE student on DIR/{train,valid,test}.{SRC_LANG,TGT_LANG} (plain or
.gz) and benchmarks them side by side; rerun the same command to continue after an interruption.

  --stages LIST   comma-separated subset of: prepare,teacher,distill,student,average,benchmark
                  (default: all; a stage whose input stage never ran fails clearly)
  --dry-run       print the commands, run nothing

Environment (default):
  WORK=runs/SRC_LANG-TGT_LANG   output folder: data/ teacher/ distill/ student/ average/ benchmark/
  DEVICE=auto                   auto (a GPU when torch sees one), cpu or cuda
  THREADS=nproc                 torch CPU threads for training and distillation
  BENCH_THREADS=1               torch CPU threads for every latency measurement
  BPE_MERGES=10000              joint BPE merges
  TEACHER_LAYERS=3 TEACHER_DIM=256 TEACHER_FFN=1024 TEACHER_HEADS=4 (encoder and decoder)
  TEACHER_MAX_EPOCH=12 TEACHER_MAX_UPDATE=0 (0: no limit) TEACHER_MAX_TOKENS=4096
  TEACHER_WARMUP=500            TEACHER_EXTRA=""  (extra fairseq-train flags)
  DISTILL_SHARDS=4              DISTILL_GENERATE_ARGS="" (extra fairseq-generate flags)
  TEACHER_DECODE=""             extra KEY=VALUE,... for the teacher's benchmark rows (max_len_b=50)
  STUDENT_DATA=distill          distill, or raw: the student trains on DIR's own targets
  STUDENT_ARCH=vqvae_nat_small  STUDENT_MAX_UPDATE=3000 STUDENT_MAX_TOKENS=4096
  STUDENT_LR=1e-3               STUDENT_WARMUP=200 STUDENT_SEED=1
  STUDENT_AUTOCAST=auto         --bf16-autocast: 1 always, 0 never, auto where it is faster
  STUDENT_EXTRA=""              extra fairseq-train flags for the student
  AVERAGE=5                     epoch checkpoints to average (0: no average stage)
  BENCH_EXTRA=""                extra scripts/benchmark.py flags (--warmup 2, ...)
EOF
}

[[ "${1:-}" == -h || "${1:-}" == --help ]] && { usage; exit 0; }
[[ $# -ge 3 && "$1" != -* && "$2" != -* && "$3" != -* ]] || { usage; die "need SRC_LANG TGT_LANG DIR"; }
SRC="$1"; TGT="$2"; CORPUS="$3"; shift 3
ALL_STAGES=(prepare teacher distill student average benchmark)
STAGES="$(IFS=,; echo "${ALL_STAGES[*]}")"
parse_run_args "$@"
for stage in ${STAGES//,/ }; do
  [[ " ${ALL_STAGES[*]} " == *" $stage "* ]] || die "unknown stage '$stage' in --stages"
done
[[ -d "$CORPUS" ]] || die "corpus folder '$CORPUS' not found"
CORPUS="$(cd "$CORPUS" && pwd)"

WORK="${WORK:-runs/$SRC-$TGT}"
DEVICE="${DEVICE:-auto}"
THREADS="${THREADS:-$(nproc 2>/dev/null || echo 1)}"
BENCH_THREADS="${BENCH_THREADS:-1}"
BPE_MERGES="${BPE_MERGES:-10000}"
TEACHER_LAYERS="${TEACHER_LAYERS:-3}"
TEACHER_DIM="${TEACHER_DIM:-256}"
TEACHER_FFN="${TEACHER_FFN:-1024}"
TEACHER_HEADS="${TEACHER_HEADS:-4}"
TEACHER_MAX_EPOCH="${TEACHER_MAX_EPOCH:-12}"
TEACHER_MAX_UPDATE="${TEACHER_MAX_UPDATE:-0}"
TEACHER_MAX_TOKENS="${TEACHER_MAX_TOKENS:-4096}"
TEACHER_WARMUP="${TEACHER_WARMUP:-500}"
TEACHER_EXTRA="${TEACHER_EXTRA:-}"
TEACHER_DECODE="${TEACHER_DECODE:-}"
DISTILL_SHARDS="${DISTILL_SHARDS:-4}"
DISTILL_GENERATE_ARGS="${DISTILL_GENERATE_ARGS:-}"
STUDENT_DATA="${STUDENT_DATA:-distill}"
STUDENT_ARCH="${STUDENT_ARCH:-vqvae_nat_small}"
STUDENT_MAX_UPDATE="${STUDENT_MAX_UPDATE:-3000}"
STUDENT_MAX_TOKENS="${STUDENT_MAX_TOKENS:-4096}"
STUDENT_LR="${STUDENT_LR:-1e-3}"
STUDENT_WARMUP="${STUDENT_WARMUP:-200}"
STUDENT_SEED="${STUDENT_SEED:-1}"
STUDENT_AUTOCAST="${STUDENT_AUTOCAST:-auto}"
STUDENT_EXTRA="${STUDENT_EXTRA:-}"
AVERAGE="${AVERAGE:-5}"
BENCH_EXTRA="${BENCH_EXTRA:-}"
[[ "$STUDENT_DATA" == distill || "$STUDENT_DATA" == raw ]] || die "STUDENT_DATA must be distill or raw, got '$STUDENT_DATA'"
[[ "$AVERAGE" =~ ^[0-9]+$ ]] || die "AVERAGE must be a number of checkpoints (0: none), got '$AVERAGE'"
case "$DEVICE" in
  auto) DEVICE=cpu; if have_cuda; then DEVICE=cuda; fi ;;
  cpu|cuda) ;;
  *) die "DEVICE must be auto, cpu or cuda, got '$DEVICE'" ;;
esac
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
WORK="$(realpath -m "$WORK")"
DATA="$WORK/data"
TEACHER_CKPT="$WORK/teacher/checkpoint_best.pt"
AVERAGE_CKPT="$WORK/average/checkpoint_avg$AVERAGE.pt"
[[ $DRY_RUN == 1 ]] || claim_dir "$WORK" .done.prepare

# Stage markers: WORK/.done.STAGE holds PARAMS, the stage's settings and its inputs' markers.
# settings STAGE WORDS... [-- INPUT_STAGE...]: PARAMS <- WORDS and a checksum of each input
# stage's marker (in --dry-run, an input that never ran counts as 'not yet').
settings() {
  local stage="$1"; shift
  local words=() input
  while [[ $# -gt 0 && "$1" != -- ]]; do words+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  PARAMS="$stage: ${words[*]}"
  for input in "$@"; do
    if [[ -f "$WORK/.done.$input" ]]; then
      PARAMS+=" | $input $(cksum < "$WORK/.done.$input" | cut -d' ' -f1)"
    elif [[ $DRY_RUN == 1 ]]; then
      PARAMS+=" | $input not yet"
    else
      die "the $stage stage needs the $input stage's output: run it first (--stages $input,$stage)"
    fi
  done
}
# begin N STAGE DIR: succeeds when STAGE must run (DIR claimed for it); fails when it is done with
# these PARAMS (skipped); dies when it was done with other settings or from other inputs.
begin() {
  local marker="$WORK/.done.$2"
  log "stage $1/6 $2"
  if [[ -f "$marker" ]]; then
    if [[ "$(cat "$marker")" == "$PARAMS" ]]; then
      log "  done with these settings ($marker), skipping"
      return 1
    fi
    die "the $2 stage in $WORK was made with other settings or from other inputs:
  was: $(cat "$marker")
  now: $PARAMS
to redo it, delete $3 and $marker (the later stages are then refused until redone); or use another WORK"
  fi
  [[ $DRY_RUN == 1 ]] || claim_dir "$3"
}
finish() { [[ $DRY_RUN == 1 ]] || echo "$PARAMS" > "$WORK/.done.$1"; }

start=$(date +%s)
log "$SRC -> $TGT from $CORPUS into $WORK on $DEVICE, stages $STAGES$([[ $DRY_RUN == 1 ]] && echo ' (dry run)')"

# ---- 1. prepare: its script skips what is done, and redoes all when a file of DIR changed ----
if want prepare; then
  log "stage 1/6 prepare"
  [[ $DRY_RUN == 1 ]] || claim_dir "$DATA"
  run bash "$ROOT/scripts/prepare_corpus.sh" --src-dir "$CORPUS" --src-lang "$SRC" --tgt-lang "$TGT" \
    --out "$DATA" --bpe-merges "$BPE_MERGES" --workers "$THREADS"
  PARAMS="prepare: merges=$BPE_MERGES sources=$(cat "$DATA/.sources" 2>/dev/null || echo none)"
  finish prepare
fi

# ---- 2. teacher -------------------------------------------------------------------------------
if want teacher; then
  settings teacher "layers=$TEACHER_LAYERS dim=$TEACHER_DIM ffn=$TEACHER_FFN heads=$TEACHER_HEADS" \
    "epochs=$TEACHER_MAX_EPOCH updates=$TEACHER_MAX_UPDATE tokens=$TEACHER_MAX_TOKENS" \
    "warmup=$TEACHER_WARMUP extra=$TEACHER_EXTRA" -- prepare
  if begin 2 teacher "$WORK/teacher"; then
    # shellcheck disable=SC2086
    run env ENCODER_LAYERS="$TEACHER_LAYERS" DECODER_LAYERS="$TEACHER_LAYERS" EMBED_DIM="$TEACHER_DIM" \
      FFN_DIM="$TEACHER_FFN" HEADS="$TEACHER_HEADS" MAX_EPOCH="$TEACHER_MAX_EPOCH" \
      MAX_UPDATE="$TEACHER_MAX_UPDATE" MAX_TOKENS="$TEACHER_MAX_TOKENS" WARMUP_UPDATES="$TEACHER_WARMUP" \
      DEVICE="$DEVICE" THREADS="$THREADS" SRC_LANG="$SRC" TGT_LANG="$TGT" \
      bash "$ROOT/scripts/train_teacher.sh" "$DATA/data-bin" "$WORK/teacher" -- $TEACHER_EXTRA
    finish teacher
  fi
fi

# ---- 3. distill -------------------------------------------------------------------------------
if want distill; then
  settings distill "beam=4 generate_args=$DISTILL_GENERATE_ARGS" -- teacher
  if begin 3 distill "$WORK/distill"; then
    devices=cpu; [[ $DEVICE == cuda ]] && devices=0
    run bash "$ROOT/scripts/distill.sh" --data "$DATA/data-bin" --checkpoint "$TEACHER_CKPT" \
      --out "$WORK/distill" --beam 4 --num-shards "$DISTILL_SHARDS" --devices "$devices" \
      --threads "$THREADS" --workers "$THREADS" --generate-args "$DISTILL_GENERATE_ARGS"
    finish distill
  fi
fi

# ---- 4. student -------------------------------------------------------------------------------
STUDENT_BIN="$WORK/distill/data-bin"; STUDENT_INPUT=distill
[[ "$STUDENT_DATA" == raw ]] && { STUDENT_BIN="$DATA/data-bin"; STUDENT_INPUT=prepare; }
if want student; then
  flags=(
    "$STUDENT_BIN" --user-dir "$ROOT/fairseq_vqvae" --task translation_vqvae --arch "$STUDENT_ARCH"
    --criterion vqvae_em --share-all-embeddings --optimizer adam --adam-betas '(0.9,0.98)'
    --lr "$STUDENT_LR" --lr-scheduler inverse_sqrt --warmup-updates "$STUDENT_WARMUP"
    --warmup-init-lr 1e-07 --max-tokens "$STUDENT_MAX_TOKENS" --max-update "$STUDENT_MAX_UPDATE"
    --seed "$STUDENT_SEED" --eval-bleu --eval-bleu-remove-bpe --eval-bleu-detok moses
    --best-checkpoint-metric bleu --maximize-best-checkpoint-metric
    --log-format simple --log-interval 50 --no-progress-bar
  )
  if [[ $AVERAGE -gt 0 ]]; then flags+=(--keep-last-epochs "$AVERAGE"); else flags+=(--no-epoch-checkpoints); fi
  [[ $DEVICE == cpu ]] && flags+=(--cpu)
  bf16_autocast_flag STUDENT_AUTOCAST
  # shellcheck disable=SC2206
  flags+=("${BF16_AUTOCAST_FLAG[@]}" $STUDENT_EXTRA)
  settings student "$(printf '%q ' "${flags[@]:1}")" -- "$STUDENT_INPUT"
  if begin 4 student "$WORK/student"; then
    train_fairseq "$WORK/student" "${flags[@]}"
    finish student
  fi
fi

# ---- 5. average -------------------------------------------------------------------------------
if want average; then
  settings average "last=$AVERAGE" -- student
  if begin 5 average "$WORK/average"; then
    if [[ $AVERAGE -gt 0 ]]; then
      run "$PY" "$ROOT/scripts/average_checkpoints.py" "$WORK/student" \
        --num-epoch-checkpoints "$AVERAGE" --output "$AVERAGE_CKPT"
    else
      log "  AVERAGE=0: nothing to average"
    fi
    finish average
  fi
fi

# ---- 6. benchmark -----------------------------------------------------------------------------
if want benchmark; then
  inputs=(student); [[ $AVERAGE -gt 0 ]] && inputs+=(average)
  [[ "$STUDENT_DATA" == distill || -f "$WORK/.done.teacher" ]] && inputs+=(teacher)
  settings benchmark "threads=$BENCH_THREADS teacher_decode=$TEACHER_DECODE extra=$BENCH_EXTRA" -- "${inputs[@]}"
  if begin 6 benchmark "$WORK/benchmark"; then
    decode="${TEACHER_DECODE:+,$TEACHER_DECODE}"
    models=(--model "$STUDENT_ARCH student, best checkpoint=translation_vqvae:$WORK/student/checkpoint_best.pt")
    [[ $AVERAGE -gt 0 ]] && models+=(--model "the same, average of its last $AVERAGE epoch checkpoints=translation_vqvae:$AVERAGE_CKPT")
    if [[ " ${inputs[*]} " == *" teacher "* ]]; then
      models=(--model "AR beam 4=translation:$TEACHER_CKPT:beam=4$decode"
              --model "AR greedy=translation:$TEACHER_CKPT:beam=1$decode" "${models[@]}")
    fi
    # shellcheck disable=SC2086
    run "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --ref-raw "$DATA/raw/test.$TGT" \
      --ref-tok "$DATA/tok/test.$TGT" --threads "$BENCH_THREADS" --device "$DEVICE" "${models[@]}" \
      --out-dir "$WORK/benchmark" --save-hyps "$WORK/benchmark/hypotheses" $BENCH_EXTRA
    finish benchmark
  fi
fi
log "finished in $(( $(date +%s) - start ))s$(want benchmark && echo "; table: $WORK/benchmark/benchmark.md")"
