#!/usr/bin/env bash
# Speed side by side (issue 14), every model in ONE process by scripts/benchmark.py: the teacher
# (AR beam 4, AR greedy), fairseq's one-pass NAT of the same size, and a vqvae_nat student (one
# candidate, and 4 latent beams ranked by the model); batch-1 latency over test_2016_flickr,
# large-batch throughput (--max-tokens 8000, median of 3 passes) and a torch.profiler breakdown
# of 30 sentences per model:
#
#   bash examples/multi30k/speed.sh STUDENT_CHECKPOINT OUT_DIR [THREADS]
#
# Environment: WORK (runs/multi30k: data/ from prepare_multi30k.sh, teacher/ from
#   train_teacher.sh, nat/ from run.sh --stages nat), TEACHER, NAT (their checkpoints).
# Run it on a quiet machine: pause trainings first (kill -STOP), every core counts.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, log, die
LOG_NAME=speed

[[ $# -ge 2 ]] || { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
CKPT="$1" OUT="$2" THREADS="${3:-1}"
WORK="${WORK:-$ROOT/runs/multi30k}"
DATA="$WORK/data"
TEACHER="${TEACHER:-$WORK/teacher/checkpoint_best.pt}"
NAT="${NAT:-$WORK/nat/checkpoint_best.pt}"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$THREADS'"
for f in "$CKPT" "$TEACHER" "$NAT"; do
  [[ -f "$f" ]] || die "no checkpoint at $f (set TEACHER=/NAT= or train it first)"
done
[[ -f "$DATA/raw/test.de" ]] || die "no $DATA/raw/test.de: run scripts/prepare_multi30k.sh --out $DATA"

S="translation_vqvae:$CKPT"
mkdir -p "$OUT"
log "$CKPT, $THREADS thread(s) -> $OUT"
exec "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --subset test \
  --ref-raw "$DATA/raw/test.de" --ref-tok "$DATA/tok/test.de" --threads "$THREADS" \
  --throughput-max-tokens 8000 --throughput-passes 3 --profile-sentences 30 \
  --model "AR beam 4=translation:$TEACHER:beam=4" \
  --model "AR greedy=translation:$TEACHER:beam=1" \
  --model "NAT one pass=translation_lev:$NAT" \
  --model "vqvae_nat, 1 candidate=$S" \
  --model "vqvae_nat, 4 latent beams=$S:gen_latent_beam=4,gen_rescore=model" \
  --out-dir "$OUT" --replace-results
