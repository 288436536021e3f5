#!/usr/bin/env bash
# Train the autoregressive teacher (fairseq `transformer`) used for sequence-level distillation
# and as the "AR beam 4" / "AR greedy" rows of the benchmark.
#
# Defaults = the recipe of ../shared/data/multi30k-distilled (36.2 BLEU beam 4, 35.1 greedy on
# Multi30k test_2016_flickr): 3+3 layers, d=256, FFN 1024, 4 heads, shared embeddings, dropout
# 0.3, label smoothing 0.1, Adam (0.9, 0.98), lr 1e-3 inverse-sqrt with 500 warm-up updates,
# 4096 tokens per batch, 12 epochs. Every value is an environment variable (below); any other
# fairseq-train flag can be appended after `--` (a later flag overrides an earlier one).
#
# Resumable: fairseq-train continues from SAVE_DIR/checkpoint_last.pt. When training finished
# with the same settings (SAVE_DIR/train.done), the script does nothing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, PY, BIN, log, die
LOG_NAME=train_teacher

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") DATA_BIN SAVE_DIR [-- extra fairseq-train flags]

Train fairseq's autoregressive transformer on DATA_BIN (fairseq-preprocess output with a joined
dictionary when SHARE_ALL_EMBEDDINGS=1), checkpoints and train.log in SAVE_DIR.

Environment variables (default):
  ARCH=transformer  ENCODER_LAYERS=3  DECODER_LAYERS=3  EMBED_DIM=256  FFN_DIM=1024  HEADS=4
  SHARE_ALL_EMBEDDINGS=1  DROPOUT=0.3  LABEL_SMOOTHING=0.1  LR=1e-3  WARMUP_UPDATES=500
  ADAM_BETAS='(0.9,0.98)'  CLIP_NORM=0.0  WEIGHT_DECAY=0.0  MAX_TOKENS=4096  UPDATE_FREQ=1
  MAX_EPOCH=12  MAX_UPDATE=0 (0 = no limit)  SEED=1  EVAL_BLEU=0 (1 = validate with BLEU and
  keep the best-BLEU checkpoint; slow on CPU)  DEVICE=auto (auto|cpu|cuda)  THREADS=nproc
  (torch CPU threads)  NUM_WORKERS=1  LOG_INTERVAL=50  SRC_LANG/TGT_LANG (default: from fairseq)

Example:
  bash scripts/train_teacher.sh runs/multi30k/data/data-bin runs/multi30k/teacher
  MAX_UPDATE=3 EMBED_DIM=32 FFN_DIM=64 bash scripts/train_teacher.sh bin ckpt -- --num-workers 0
EOF
}

[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { usage; exit 0; }
[[ $# -ge 2 ]] || { usage; die "need DATA_BIN and SAVE_DIR"; }
DATA="$1"; SAVE_DIR="$2"; shift 2
if [[ $# -gt 0 ]]; then
  [[ "$1" == "--" ]] || { usage; die "extra fairseq-train flags must follow '--' (got '$1')"; }
  shift
fi
EXTRA=("$@")

[[ -d "$DATA" ]] || die "data folder '$DATA' not found: run scripts/prepare_multi30k.sh (or fairseq-preprocess) first"
ls "$DATA"/dict.*.txt >/dev/null 2>&1 || die "'$DATA' has no dict.*.txt: it is not a fairseq-preprocess output folder"
ls "$DATA"/train.* >/dev/null 2>&1 || die "'$DATA' has no train.* files: binarize a training set first"
[[ -x "$BIN/fairseq-train" ]] || die "$BIN/fairseq-train not found: set up the environment (bash scripts/setup_env.sh) or set PYTHON"

ARCH="${ARCH:-transformer}"
ENCODER_LAYERS="${ENCODER_LAYERS:-3}"
DECODER_LAYERS="${DECODER_LAYERS:-3}"
EMBED_DIM="${EMBED_DIM:-256}"
FFN_DIM="${FFN_DIM:-1024}"
HEADS="${HEADS:-4}"
SHARE_ALL_EMBEDDINGS="${SHARE_ALL_EMBEDDINGS:-1}"
DROPOUT="${DROPOUT:-0.3}"
LABEL_SMOOTHING="${LABEL_SMOOTHING:-0.1}"
LR="${LR:-1e-3}"
WARMUP_UPDATES="${WARMUP_UPDATES:-500}"
ADAM_BETAS="${ADAM_BETAS:-(0.9,0.98)}"
CLIP_NORM="${CLIP_NORM:-0.0}"
WEIGHT_DECAY="${WEIGHT_DECAY:-0.0}"
MAX_TOKENS="${MAX_TOKENS:-4096}"
UPDATE_FREQ="${UPDATE_FREQ:-1}"
MAX_EPOCH="${MAX_EPOCH:-12}"
MAX_UPDATE="${MAX_UPDATE:-0}"
SEED="${SEED:-1}"
EVAL_BLEU="${EVAL_BLEU:-0}"
DEVICE="${DEVICE:-auto}"
THREADS="${THREADS:-$(nproc 2>/dev/null || echo 1)}"
NUM_WORKERS="${NUM_WORKERS:-1}"
LOG_INTERVAL="${LOG_INTERVAL:-50}"

if [[ "$DEVICE" == auto ]]; then
  DEVICE=cpu
  if have_cuda; then DEVICE=cuda; fi
fi
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

ARGS=(
  "$DATA" --user-dir "$ROOT/fairseq_vqvae"  # only for torch>=2.6 checkpoint loading (resume)
  --task translation --arch "$ARCH"
  --encoder-layers "$ENCODER_LAYERS" --decoder-layers "$DECODER_LAYERS"
  --encoder-embed-dim "$EMBED_DIM" --decoder-embed-dim "$EMBED_DIM"
  --encoder-ffn-embed-dim "$FFN_DIM" --decoder-ffn-embed-dim "$FFN_DIM"
  --encoder-attention-heads "$HEADS" --decoder-attention-heads "$HEADS"
  --dropout "$DROPOUT" --criterion label_smoothed_cross_entropy --label-smoothing "$LABEL_SMOOTHING"
  --optimizer adam --adam-betas "$ADAM_BETAS" --clip-norm "$CLIP_NORM" --weight-decay "$WEIGHT_DECAY"
  --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP_UPDATES" --warmup-init-lr 1e-07
  --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-epoch "$MAX_EPOCH" --max-update "$MAX_UPDATE"
  --seed "$SEED" --save-dir "$SAVE_DIR" --no-epoch-checkpoints --num-workers "$NUM_WORKERS"
  --log-format simple --log-interval "$LOG_INTERVAL" --no-progress-bar
)
[[ -n "${SRC_LANG:-}" ]] && ARGS+=(--source-lang "$SRC_LANG")
[[ -n "${TGT_LANG:-}" ]] && ARGS+=(--target-lang "$TGT_LANG")
[[ "$SHARE_ALL_EMBEDDINGS" == 1 ]] && ARGS+=(--share-all-embeddings)
[[ "$DEVICE" == cpu ]] && ARGS+=(--cpu)
if [[ "$EVAL_BLEU" == 1 ]]; then
  ARGS+=(--eval-bleu --eval-bleu-args '{"beam": 4}' --eval-bleu-detok moses --eval-bleu-remove-bpe
         --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)
fi
ARGS+=("${EXTRA[@]}")

mkdir -p "$SAVE_DIR"
SIGNATURE="$(printf '%q ' "${ARGS[@]}")"
if [[ -f "$SAVE_DIR/train.done" && "$(cat "$SAVE_DIR/train.done")" == "$SIGNATURE" && -f "$SAVE_DIR/checkpoint_last.pt" ]]; then
  log "already trained with these settings: $SAVE_DIR (delete $SAVE_DIR/train.done to train again)"
  exit 0
fi
rm -f "$SAVE_DIR/train.done"
if [[ -f "$SAVE_DIR/checkpoint_last.pt" ]]; then
  log "resuming from $SAVE_DIR/checkpoint_last.pt"
fi
echo "fairseq-train $SIGNATURE" > "$SAVE_DIR/command.txt"
log "training $ARCH on $DATA ($DEVICE, $THREADS threads, max epoch $MAX_EPOCH, max update $MAX_UPDATE); log: $SAVE_DIR/train.log"
set +e
"$BIN/fairseq-train" "${ARGS[@]}" 2>&1 | tee -a "$SAVE_DIR/train.log" \
  | grep --line-buffered -E "\| (train|valid) \||done training|Error|error:" >&2
status=${PIPESTATUS[0]}
set -e
[[ $status == 0 ]] || die "fairseq-train failed (exit $status); see the end of $SAVE_DIR/train.log"
[[ -f "$SAVE_DIR/checkpoint_last.pt" ]] || die "fairseq-train finished without writing $SAVE_DIR/checkpoint_last.pt"
echo "$SIGNATURE" > "$SAVE_DIR/train.done"
log "done: $SAVE_DIR/checkpoint_best.pt (best valid $( [[ "$EVAL_BLEU" == 1 ]] && echo BLEU || echo loss)), $SAVE_DIR/checkpoint_last.pt"
