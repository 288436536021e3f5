#!/usr/bin/env bash
# The Multi30k study (Roy et al. 2018, Table 1 analogue) with one command, sized for a 2-core CPU:
#
#   1 prepare   Moses tokenization + 10k joint BPE + fairseq-preprocess   (scripts/prepare_multi30k.sh)
#   2 teacher   fairseq `transformer`, 3+3 layers, d=256, 12 epochs          (scripts/train_teacher.sh)
#               -> rows "AR beam 4", "AR greedy"
#   3 distill   teacher beam 4 over the training set, re-binarized         (scripts/distill.sh)
#   4 nat       fairseq `nonautoregressive_transformer` on the distilled data, one pass
#               -> row "NAT one pass + distill"
#   5 students  vqvae_nat_small: VQ-VAE, hard EM, soft EM (m=5 raw / m=10 distilled), each on raw
#               and distilled data, n_c=3, plus soft EM n_c=4; >= 2 seeds for the EM rows; beyond
#               the paper, soft EM + distill warm-started from the teacher (--init-from-ar)
#   6 benchmark every checkpoint in ONE process: BLEU, batch-1 latency, throughput (scripts/benchmark.py)
#
# Every stage is resumable: it is skipped when its output exists, and an interrupted training
# continues from its checkpoint_last.pt. After each model is trained its row's result JSON goes
# to examples/multi30k/results/paper_table/rows/ (commit them: the final table is rebuilt from them if the
# checkpoints are lost), and the final table to examples/multi30k/results/paper_table/benchmark.{md,json,png}.
#
# Usage: bash examples/multi30k/run.sh [--dry-run] [--stages LIST]    (see --help)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, BIN, log, die, parse_run_args, want, run, train_fairseq
LOG_NAME=multi30k

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") [--dry-run] [--stages LIST] [-h]

Runs the whole Multi30k study; rerun the same command to continue after an interruption.

  --dry-run       print the stages and the commands they would run, run nothing
  --stages LIST   comma-separated subset of: prepare,teacher,distill,nat,students,benchmark
                  (default: all, in that order; a stage whose input is missing fails clearly)

Environment (default):
  WORK=$ROOT/runs/multi30k     where data, checkpoints and logs go
  RESULTS=$HERE/results/paper_table  where the result JSONs and the final table go
  SRC_DIR=$ROOT/../shared/data/multi30k   the raw Multi30k files (DOWNLOAD=1: fetch them)
  THREADS=2                    torch threads for training and distillation
  BENCH_THREADS=1              torch threads for every latency measurement
  BPE_MERGES=10000             TEACHER_EPOCHS=12
  DISTILL_SHARDS=8             NAT_MAX_UPDATE=1000           STUDENT_MAX_UPDATE=1000
  DISTILL_GENERATE_ARGS=""     (extra fairseq-generate flags for the distillation)
  STUDENT_ARCH=vqvae_nat_small STUDENT_MAX_TOKENS=4096       STUDENT_LR=1e-3
  STUDENT_WARMUP=200           STUDENT_AUTOCAST=auto (--bf16-autocast: 1 always,
                               0 never, auto where it is faster: a GPU, a CPU with native bfloat16)
  STUDENT_EXTRA=""             (extra fairseq-train flags for every student)
  SEEDS_EM="1 2"               SEEDS_VQVAE="1"               SEEDS_NC4="1"
  SEEDS_AR_INIT="1"
  ROWS="all"                   or a space-separated subset of the student row ids, trained
                               in this order (first seeds of every row, then second seeds):
                               soft_em_distill soft_em_distill_ar_init hard_em_distill
                               vqvae_distill soft_em_raw hard_em_raw vqvae_raw
                               soft_em_distill_nc4
EOF
}

STAGES="prepare,teacher,distill,nat,students,benchmark"
parse_run_args "$@"
for stage in ${STAGES//,/ }; do
  [[ " prepare teacher distill nat students benchmark " == *" $stage "* ]] || die "unknown stage '$stage' in --stages"
done

WORK="${WORK:-$ROOT/runs/multi30k}"
RESULTS="${RESULTS:-$HERE/results/paper_table}"
SRC_DIR="${SRC_DIR:-$ROOT/../shared/data/multi30k}"
DOWNLOAD="${DOWNLOAD:-0}"
THREADS="${THREADS:-2}"
BENCH_THREADS="${BENCH_THREADS:-1}"
BPE_MERGES="${BPE_MERGES:-10000}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-12}"
DISTILL_SHARDS="${DISTILL_SHARDS:-8}"
DISTILL_GENERATE_ARGS="${DISTILL_GENERATE_ARGS:-}"
NAT_MAX_UPDATE="${NAT_MAX_UPDATE:-1000}"
STUDENT_MAX_UPDATE="${STUDENT_MAX_UPDATE:-1000}"
STUDENT_ARCH="${STUDENT_ARCH:-vqvae_nat_small}"
STUDENT_MAX_TOKENS="${STUDENT_MAX_TOKENS:-4096}"
STUDENT_LR="${STUDENT_LR:-1e-3}"
STUDENT_WARMUP="${STUDENT_WARMUP:-200}"
STUDENT_AUTOCAST="${STUDENT_AUTOCAST:-auto}"
STUDENT_EXTRA="${STUDENT_EXTRA:-}"
SEEDS_EM="${SEEDS_EM:-1 2}"
SEEDS_VQVAE="${SEEDS_VQVAE:-1}"
SEEDS_NC4="${SEEDS_NC4:-1}"
SEEDS_AR_INIT="${SEEDS_AR_INIT:-1}"
ROWS="${ROWS:-all}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

DATA="$WORK/data"
TEACHER="$WORK/teacher"
DISTILL="$WORK/distill"
TEACHER_CKPT="$TEACHER/checkpoint_best.pt"
ROW_DIR="$RESULTS/rows"
DEVICE_FLAGS=(--cpu)
if have_cuda; then DEVICE_FLAGS=(); fi

# Student rows: id | row name (as in the paper's table) | data | bottleneck | samples m | n_c |
# init (scratch, or teacher: --post-norm --init-from-ar the teacher) | seeds
# In training order: the headline comparison first, so that a partial study answers it.
STUDENT_ROWS=(
  "soft_em_distill|Soft EM m=10 n_c=3 + distill|distill|soft_em|10|3|scratch|$SEEDS_EM"
  "soft_em_distill_ar_init|Soft EM m=10 n_c=3 + distill, teacher init|distill|soft_em|10|3|teacher|$SEEDS_AR_INIT"
  "hard_em_distill|Hard EM n_c=3 + distill|distill|hard_em|1|3|scratch|$SEEDS_EM"
  "vqvae_distill|VQ-VAE n_c=3 + distill|distill|vqvae|1|3|scratch|$SEEDS_VQVAE"
  "soft_em_raw|Soft EM m=5 n_c=3|raw|soft_em|5|3|scratch|$SEEDS_EM"
  "hard_em_raw|Hard EM n_c=3|raw|hard_em|1|3|scratch|$SEEDS_EM"
  "vqvae_raw|VQ-VAE n_c=3|raw|vqvae|1|3|scratch|$SEEDS_VQVAE"
  "soft_em_distill_nc4|Soft EM m=10 n_c=4 + distill|distill|soft_em|10|4|scratch|$SEEDS_NC4"
)
if [[ "$ROWS" != all ]]; then
  for id in $ROWS; do
    known=0
    for row in "${STUDENT_ROWS[@]}"; do [[ "${row%%|*}" == "$id" ]] && known=1; done
    [[ $known == 1 ]] || die "unknown row id '$id' in ROWS (see --help)"
  done
fi
row_selected() { [[ "$ROWS" == all || " $ROWS " == *" $1 "* ]]; }

# train_wall DIR: training wall time (s) from the timestamps in DIR/train.log, summed over resumed
# segments (fairseq's own `wall` meter restarts on resume; see research/train_log.py).
train_wall() {
  "$PY" "$ROOT/research/train_log.py" wall "$1/train.log"
}

# row_result JSON_NAME TRAIN_DIR SPEC...: benchmark these models alone -> RESULTS/rows/JSON_NAME.json
row_result() {
  local name="$1" train_dir="$2"; shift 2
  local out="$ROW_DIR/$name.json"
  if [[ -f "$out" ]]; then log "  result already in $out"; return 0; fi
  local models=()
  for spec in "$@"; do models+=(--model "$spec"); done
  run "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --ref-raw "$DATA/raw/test.de" \
    --ref-tok "$DATA/tok/test.de" --threads "$BENCH_THREADS" "${models[@]}" --json "$out" \
    --meta "train_dir=$train_dir" --meta "train_wall_s=$( [[ $DRY_RUN == 1 ]] || train_wall "$train_dir")"
}

STUDENT_COMMON=(
  --user-dir "$ROOT/fairseq_vqvae" --task translation_vqvae --arch "$STUDENT_ARCH" --criterion vqvae_em
  --share-all-embeddings --optimizer adam --adam-betas '(0.9,0.98)' --lr "$STUDENT_LR"
  --lr-scheduler inverse_sqrt --warmup-updates "$STUDENT_WARMUP" --warmup-init-lr 1e-07
  --max-tokens "$STUDENT_MAX_TOKENS" --max-update "$STUDENT_MAX_UPDATE" --no-epoch-checkpoints
  --eval-bleu --eval-bleu-remove-bpe --eval-bleu-detok moses --best-checkpoint-metric bleu
  --maximize-best-checkpoint-metric --log-format simple --log-interval 50 --no-progress-bar
  "${DEVICE_FLAGS[@]}"
)
bf16_autocast_flag STUDENT_AUTOCAST
STUDENT_COMMON+=("${BF16_AUTOCAST_FLAG[@]}")
# shellcheck disable=SC2206
STUDENT_COMMON+=($STUDENT_EXTRA)

start=$(date +%s)
[[ $DRY_RUN == 1 ]] || mkdir -p "$WORK" "$ROW_DIR"
log "work folder $WORK, results $RESULTS, stages $STAGES$([[ $DRY_RUN == 1 ]] && echo ' (dry run)')"

# ---- 1. prepare (about 1 min; measured 50 s) -----------------------------------------------
if want prepare; then
  log "stage 1/6 prepare"
  prep=(bash "$ROOT/scripts/prepare_multi30k.sh" --out "$DATA" --bpe-merges "$BPE_MERGES" --workers "$THREADS")
  if [[ "$DOWNLOAD" == 1 ]]; then prep+=(--download); else prep+=(--src-dir "$SRC_DIR"); fi
  run "${prep[@]}"
fi

# ---- 2. teacher (measured: 56 min on 2 cores, + 5 min for its two result rows) ---------------
if want teacher; then
  log "stage 2/6 teacher (AR transformer, $TEACHER_EPOCHS epochs)"
  [[ $DRY_RUN == 1 || -d "$DATA/data-bin" ]] || die "no $DATA/data-bin: run the prepare stage first"
  run env MAX_EPOCH="$TEACHER_EPOCHS" THREADS="$THREADS" bash "$ROOT/scripts/train_teacher.sh" "$DATA/data-bin" "$TEACHER"
  row_result teacher "$TEACHER" "AR beam 4=translation:$TEACHER_CKPT:beam=4" "AR greedy=translation:$TEACHER_CKPT:beam=1"
fi

# ---- 3. distill (measured: 8 min for 29,000 sentences, beam 4) --------------------------------
if want distill; then
  log "stage 3/6 distill"
  [[ $DRY_RUN == 1 || -f "$TEACHER_CKPT" ]] || die "no teacher checkpoint $TEACHER_CKPT: run the teacher stage first"
  run bash "$ROOT/scripts/distill.sh" --data "$DATA/data-bin" --checkpoint "$TEACHER_CKPT" --out "$DISTILL" \
    --beam 4 --num-shards "$DISTILL_SHARDS" --threads "$THREADS" --generate-args "$DISTILL_GENERATE_ARGS"
fi

# ---- 4. nat baseline (estimate: 35-50 min for 1000 updates) -----------------------------------
if want nat; then
  log "stage 4/6 fairseq NAT baseline (nonautoregressive_transformer, distilled data, one pass)"
  [[ $DRY_RUN == 1 || -f "$DISTILL/.done" ]] || die "no distilled data in $DISTILL: run the distill stage first"
  # fairseq's NAT recipe (examples/nonautoregressive_translation/scripts.md) at the teacher's
  # size; no --src-embedding-copy (it copies padding with translation_lev's left-padded sources).
  train_fairseq "$WORK/nat" "$DISTILL/data-bin" --user-dir "$ROOT/fairseq_vqvae" \
    --task translation_lev --criterion nat_loss --arch nonautoregressive_transformer --noise full_mask \
    --share-all-embeddings --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 \
    --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 \
    --encoder-attention-heads 4 --decoder-attention-heads 4 \
    --optimizer adam --adam-betas '(0.9,0.98)' --lr 5e-4 --lr-scheduler inverse_sqrt \
    --warmup-updates 500 --warmup-init-lr 1e-07 --stop-min-lr 1e-09 --label-smoothing 0.1 \
    --dropout 0.3 --weight-decay 0.01 --decoder-learned-pos --encoder-learned-pos \
    --pred-length-offset --length-loss-factor 0.1 --apply-bert-init --fixed-validation-seed 7 \
    --max-tokens 4096 --max-update "$NAT_MAX_UPDATE" --no-epoch-checkpoints --seed 1 \
    --log-format simple --log-interval 50 --no-progress-bar "${DEVICE_FLAGS[@]}"
  row_result nat_distill "$WORK/nat" "NAT one pass + distill=translation_lev:$WORK/nat/checkpoint_best.pt"
fi

# trained_checkpoint DIR: DIR/checkpoint_best.pt once its training finished; before that a path
# that does not exist, so that the benchmark lists the row as missing instead of measuring a
# half-trained model.
trained_checkpoint() {
  if [[ -f "$1/train.done" || $DRY_RUN == 1 ]]; then echo "$1/checkpoint_best.pt"; else echo "$1/checkpoint_best.pt.unfinished"; fi
}

# ---- 5. students (measured: about 55-65 min each for 1000 updates; 12 runs by default) --------
BENCH_SPECS=(
  "AR beam 4=translation:$TEACHER_CKPT:beam=4"
  "AR greedy=translation:$TEACHER_CKPT:beam=1"
  "NAT one pass + distill=translation_lev:$(trained_checkpoint "$WORK/nat")"
)
# Jobs in training order: the first seed of every selected row, then the second seeds, ...
STUDENT_JOBS=()
for rank in 1 2 3 4 5 6 7 8 9; do
  for row in "${STUDENT_ROWS[@]}"; do
    IFS='|' read -r id _ _ _ _ _ _ seeds <<< "$row"
    row_selected "$id" || continue
    read -r -a seed_list <<< "$seeds"
    (( rank <= ${#seed_list[@]} )) && STUDENT_JOBS+=("$row|${seed_list[rank-1]}")
  done
done
for job in "${STUDENT_JOBS[@]}"; do
  IFS='|' read -r id name data bottleneck samples nc init _ seed <<< "$job"
  save="$WORK/students/$id/seed$seed"
  if want students; then
    log "stage 5/6 student $id seed $seed: $name"
    if [[ "$data" == distill ]]; then
      [[ $DRY_RUN == 1 || -f "$DISTILL/.done" ]] || die "row $id needs the distilled data: run the distill stage first"
      databin="$DISTILL/data-bin"
    else
      [[ $DRY_RUN == 1 || -d "$DATA/data-bin" ]] || die "row $id needs $DATA/data-bin: run the prepare stage first"
      databin="$DATA/data-bin"
    fi
    # uniform codes: the study's (vqvae_nat_small's default became data-initialised codes)
    flags=(--bottleneck "$bottleneck" --compress-steps "$nc" --codebook-init uniform)
    [[ "$bottleneck" == soft_em ]] && flags+=(--num-samples "$samples")
    if [[ "$init" == teacher ]]; then
      [[ $DRY_RUN == 1 || -f "$TEACHER_CKPT" ]] || die "row $id starts from the teacher: run the teacher stage first"
      flags+=(--post-norm --init-from-ar "$TEACHER_CKPT")
    fi
    train_fairseq "$save" "$databin" "${STUDENT_COMMON[@]}" "${flags[@]}" --seed "$seed"
    row_result "${id}__seed$seed" "$save" "$name=translation_vqvae:$save/checkpoint_best.pt"
  fi
  BENCH_SPECS+=("$name=translation_vqvae:$(trained_checkpoint "$save")")
done

# Diagnostic rows: the soft EM + distill students (every seed from scratch, the first from the
# teacher), each decoding the codes its autoencoder gives each reference
# (--gen-oracle-latents): the BLEU a perfect latent predictor would reach. They read the
# reference: their latency is not a translation's.
if row_selected soft_em_distill; then
  read -r -a em_seeds <<< "$SEEDS_EM"
  for seed in "${em_seeds[@]}"; do
    BENCH_SPECS+=("Soft EM m=10 n_c=3 + distill, oracle latents (diagnostic)=translation_vqvae:$(trained_checkpoint "$WORK/students/soft_em_distill/seed$seed"):gen_oracle_latents=True")
  done
fi
if row_selected soft_em_distill_ar_init; then
  read -r -a init_seeds <<< "$SEEDS_AR_INIT"
  BENCH_SPECS+=("Soft EM m=10 n_c=3 + distill, teacher init, oracle latents (diagnostic)=translation_vqvae:$(trained_checkpoint "$WORK/students/soft_em_distill_ar_init/seed${init_seeds[0]}"):gen_oracle_latents=True")
fi

# Decoding variant rows (beyond the paper): the soft EM students, raw and distilled, every seed,
# with --gen-dedup (repeated tokens dropped). scripts/benchmark.py takes any generation option
# this way; the full ablation of --gen-eos and --gen-dedup is in results/paper_table/decoding/.
for id in soft_em_distill soft_em_raw; do
  row_selected "$id" || continue
  read -r -a em_seeds <<< "$SEEDS_EM"
  for row in "${STUDENT_ROWS[@]}"; do
    IFS='|' read -r row_id name _ <<< "$row"
    [[ "$row_id" == "$id" ]] || continue
    for seed in "${em_seeds[@]}"; do
      BENCH_SPECS+=("$name, --gen-dedup=translation_vqvae:$(trained_checkpoint "$WORK/students/$id/seed$seed"):gen_dedup=True")
    done
  done
done

# ---- 6. benchmark (about 10 min with the 3 baselines: every model at batch 1 over 1,000 sentences)
if want benchmark; then
  log "stage 6/6 benchmark: ${#BENCH_SPECS[@]} checkpoints in one process -> $RESULTS/benchmark.{md,json,png}"
  models=()
  for spec in "${BENCH_SPECS[@]}"; do models+=(--model "$spec"); done
  # the first file that holds a checkpoint wins: the last final table before the per-row files
  run "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --ref-raw "$DATA/raw/test.de" \
    --ref-tok "$DATA/tok/test.de" --threads "$BENCH_THREADS" "${models[@]}" \
    --merge-json "$RESULTS/benchmark.json" --merge-json "$ROW_DIR" --out-dir "$RESULTS" \
    --save-hyps "$WORK/hypotheses"
fi
log "finished in $(( $(date +%s) - start ))s; table: $RESULTS/benchmark.md"
