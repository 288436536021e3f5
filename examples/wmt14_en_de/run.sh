#!/usr/bin/env bash
# Paper-scale recipe: WMT14 En-De, 8 GPUs (Roy et al. 2018: VQ-VAE + soft EM + distillation).
# Not runnable on the 2-core development machine; see README.md in this folder for the cost.
#
#   1 prepare   download + sacremoses + 32k joint BPE + clean + binarize  (scripts/prepare_wmt14_en_de.sh)
#   2 teacher   transformer_wmt_en_de (base), 8 GPUs, fp16, 100k updates  (scripts/train_teacher.sh)
#   3 distill   teacher beam 4 over 4.5M training sentences, one shard per GPU in parallel (scripts/distill.sh)
#   4 nat       fairseq nonautoregressive_transformer on distilled data (the fairseq NAT recipe)
#   5 vqvae     vqvae_nat (paper base: d=512, 6 layers, K=4096, n_c=3), soft EM m=10, distilled data
#   6 benchmark batch-1 latency on one GPU + BLEU for every model in one process (scripts/benchmark.py)
#
# Usage: bash examples/wmt14_en_de/run.sh [--dry-run] [--stages LIST]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, BIN, log, die, parse_run_args, want, run
LOG_NAME=wmt14

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") [--dry-run] [--stages LIST]

  --dry-run       print the commands, run nothing
  --stages LIST   comma-separated subset of prepare,teacher,distill,nat,vqvae,benchmark (default: all)

Environment (default): WORK=$ROOT/runs/wmt14_en_de  GPUS=8 (workers for training and distillation)
  MAX_TOKENS=8192 (per GPU; x GPUS x UPDATE_FREQ = tokens per update, 64k by default)  UPDATE_FREQ=1
  TEACHER_MAX_UPDATE=100000  NAT_MAX_UPDATE=300000  VQVAE_MAX_UPDATE=300000  BOTTLENECK=soft_em
  NUM_SAMPLES=10  COMPRESS_STEPS=3  SEED=1  FP16=1  LOCAL="" (a folder for prepare --local, no download)
EOF
}

STAGES="prepare,teacher,distill,nat,vqvae,benchmark"
parse_run_args "$@"
for stage in ${STAGES//,/ }; do
  [[ " prepare teacher distill nat vqvae benchmark " == *" $stage "* ]] || die "unknown stage '$stage'"
done

WORK="${WORK:-$ROOT/runs/wmt14_en_de}"
GPUS="${GPUS:-8}"
MAX_TOKENS="${MAX_TOKENS:-8192}"
UPDATE_FREQ="${UPDATE_FREQ:-1}"
TEACHER_MAX_UPDATE="${TEACHER_MAX_UPDATE:-100000}"
NAT_MAX_UPDATE="${NAT_MAX_UPDATE:-300000}"
VQVAE_MAX_UPDATE="${VQVAE_MAX_UPDATE:-300000}"
BOTTLENECK="${BOTTLENECK:-soft_em}"
NUM_SAMPLES="${NUM_SAMPLES:-10}"
COMPRESS_STEPS="${COMPRESS_STEPS:-3}"
SEED="${SEED:-1}"
FP16="${FP16:-1}"
LOCAL="${LOCAL:-}"
DATA="$WORK/data"
TEACHER_CKPT="$WORK/teacher/checkpoint_best.pt"
DIST=(--distributed-world-size "$GPUS" --ddp-backend legacy_ddp)
PREC=()
[[ "$FP16" == 1 ]] && PREC=(--fp16)

train() {  # train SAVE_DIR ARGS...: fairseq-train, resumed from checkpoint_last.pt when rerun
  local save="$1"; shift
  if [[ -f "$save/train.done" ]]; then log "  already trained: $save"; return 0; fi
  run mkdir -p "$save"
  echo "+ fairseq-train $(printf '%q ' "$@") --save-dir $save" >&2
  [[ $DRY_RUN == 1 ]] && return 0
  [[ -d "$1" ]] || die "no training data at $1: run the earlier stages first (--stages prepare,teacher,distill)"
  local devices
  devices="$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
  [[ "$devices" -gt 0 ]] || die "this machine has no CUDA device: the WMT14 recipe trains on GPUs (GPUS=$GPUS); run it on a GPU machine"
  [[ "$devices" -ge "$GPUS" ]] || die "GPUS=$GPUS but this machine has $devices CUDA device(s): set GPUS=$devices (and UPDATE_FREQ to keep the batch size)"
  "$BIN/fairseq-train" "$@" --save-dir "$save" 2>&1 | tee -a "$save/train.log"
  [[ ${PIPESTATUS[0]} == 0 ]] || die "fairseq-train failed; see $save/train.log (rerun to resume)"
  touch "$save/train.done"
}

if want prepare; then
  log "1/6 prepare (download about 1.5 GB, 4.5M sentence pairs)"
  prep=(bash "$ROOT/scripts/prepare_wmt14_en_de.sh" --out "$DATA" --bpe-merges 32000)
  [[ -n "$LOCAL" ]] && prep+=(--local "$LOCAL")
  run "${prep[@]}"
fi

if want teacher; then
  log "2/6 teacher: transformer_wmt_en_de (base) on $GPUS GPUs"
  # fairseq's transformer-base recipe (examples/scaling_nmt) with the standard base sizes.
  run env ARCH=transformer_wmt_en_de ENCODER_LAYERS=6 DECODER_LAYERS=6 EMBED_DIM=512 FFN_DIM=2048 HEADS=8 \
    DROPOUT=0.1 LR=7e-4 WARMUP_UPDATES=4000 MAX_TOKENS="$MAX_TOKENS" UPDATE_FREQ="$UPDATE_FREQ" MAX_EPOCH=0 \
    MAX_UPDATE="$TEACHER_MAX_UPDATE" DEVICE=cuda NUM_WORKERS=4 LOG_INTERVAL=100 \
    bash "$ROOT/scripts/train_teacher.sh" "$DATA/data-bin" "$WORK/teacher" -- \
    --distributed-world-size "$GPUS" "${PREC[@]}" --weight-decay 0.0001 --save-interval-updates 5000 \
    --keep-interval-updates 5
fi

if want distill; then
  log "3/6 distill: beam 4 over the training set, $GPUS GPUs in parallel"
  devices="$(seq -s, 0 $((GPUS - 1)))"
  run bash "$ROOT/scripts/distill.sh" --data "$DATA/data-bin" --checkpoint "$TEACHER_CKPT" --out "$WORK/distill" \
    --beam 4 --max-tokens 16000 --num-shards $((GPUS * 8)) --devices "$devices" --workers 16 \
    --generate-args "${PREC[*]} --max-len-a 1.2 --max-len-b 10"
fi

if want nat; then
  log "4/6 fairseq NAT baseline (examples/nonautoregressive_translation/scripts.md)"
  train "$WORK/nat" "$WORK/distill/data-bin" --user-dir "$ROOT/fairseq_vqvae" --task translation_lev \
    --criterion nat_loss --arch nonautoregressive_transformer --noise full_mask --share-all-embeddings \
    --optimizer adam --adam-betas '(0.9,0.98)' --lr 0.0005 --lr-scheduler inverse_sqrt --stop-min-lr 1e-09 \
    --warmup-updates 10000 --warmup-init-lr 1e-07 --label-smoothing 0.1 --dropout 0.3 --weight-decay 0.01 \
    --decoder-learned-pos --encoder-learned-pos --pred-length-offset --length-loss-factor 0.1 --apply-bert-init \
    --fixed-validation-seed 7 --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" \
    --save-interval-updates 10000 --keep-interval-updates 5 --max-update "$NAT_MAX_UPDATE" \
    --log-format simple --log-interval 100 "${DIST[@]}" "${PREC[@]}"
fi

if want vqvae; then
  log "5/6 vqvae_nat ($BOTTLENECK, n_c=$COMPRESS_STEPS) on distilled data"
  samples=()
  [[ "$BOTTLENECK" == soft_em ]] && samples=(--num-samples "$NUM_SAMPLES")
  train "$WORK/vqvae_${BOTTLENECK}_nc${COMPRESS_STEPS}_seed$SEED" "$WORK/distill/data-bin" --user-dir "$ROOT/fairseq_vqvae" \
    --task translation_vqvae --arch vqvae_nat --criterion vqvae_em --bottleneck "$BOTTLENECK" "${samples[@]}" \
    --compress-steps "$COMPRESS_STEPS" --codebook-size 4096 --bottleneck-warmup-updates 10000 \
    --share-all-embeddings --optimizer adam --adam-betas '(0.9,0.98)' --lr 5e-4 --lr-scheduler inverse_sqrt \
    --warmup-updates 10000 --warmup-init-lr 1e-07 --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" \
    --max-update "$VQVAE_MAX_UPDATE" --save-interval-updates 10000 --keep-interval-updates 5 --seed "$SEED" \
    --eval-bleu --eval-bleu-remove-bpe --eval-bleu-detok moses --best-checkpoint-metric bleu \
    --maximize-best-checkpoint-metric --log-format simple --log-interval 100 "${DIST[@]}" "${PREC[@]}"
fi

if want benchmark; then
  log "6/6 benchmark on one GPU (batch-1 latency over newstest2014)"
  run env CUDA_VISIBLE_DEVICES=0 "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" \
    --ref-raw "$DATA/raw/test.de" --ref-tok "$DATA/tok/test.de" --device cuda --threads 1 \
    --model "AR beam 4=translation:$TEACHER_CKPT:beam=4" --model "AR greedy=translation:$TEACHER_CKPT:beam=1" \
    --model "NAT one pass + distill=translation_lev:$WORK/nat/checkpoint_best.pt" \
    --model "vqvae_nat $BOTTLENECK n_c=$COMPRESS_STEPS + distill=translation_vqvae:$WORK/vqvae_${BOTTLENECK}_nc${COMPRESS_STEPS}_seed$SEED/checkpoint_best.pt" \
    --throughput-max-tokens 8000 --out-dir "$HERE/results" --save-hyps "$WORK/hypotheses"
fi
