#!/usr/bin/env bash
# The deployed-engine table (issue 44), every system in ONE process by scripts/benchmark.py: the
# teacher under fairseq (greedy, beam 4) and converted to CTranslate2 (int8 and float32 greedy,
# int8 beam 4), fairseq's one-pass NAT, and a vqvae_nat student under fairseq (fp32, --gen-int8)
# and exported to ONNX Runtime (fp32, int8; int8 with 4 and 16 latent beams ranked by the
# CTranslate2 int8 teacher); batch-1 latency over test_2016_flickr and large-batch throughput
# (--max-tokens 8000):
#
#   usage: bash examples/multi30k/engines.sh STUDENT_CHECKPOINT OUT_DIR [THREADS]
#
# Environment: WORK (runs/multi30k: data/ from prepare_multi30k.sh, teacher/ from
#   train_teacher.sh, nat/ from run.sh --stages nat), TEACHER, NAT (their checkpoints),
#   DEVICE (cpu; cuda: every fairseq row in fp16, CTranslate2 in float16, no ONNX rows).
# Needs `pip install -e .[benchmark]` (ctranslate2, onnxruntime). Run it on a quiet machine.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, log, die
LOG_NAME=engines

[[ $# -ge 2 ]] || { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
CKPT="$1" OUT="$2" THREADS="${3:-1}"
WORK="${WORK:-$ROOT/runs/multi30k}"
DATA="$WORK/data"
TEACHER="${TEACHER:-$WORK/teacher/checkpoint_best.pt}"
NAT="${NAT:-$WORK/nat/checkpoint_best.pt}"
DEVICE="${DEVICE:-cpu}"
[[ "$DEVICE" == cpu || "$DEVICE" == cuda ]] || die "DEVICE must be cpu or cuda, got '$DEVICE'"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$THREADS'"
for f in "$CKPT" "$TEACHER" "$NAT"; do
  [[ -f "$f" ]] || die "no checkpoint at $f (set TEACHER=/NAT= or train it first)"
done
[[ -f "$DATA/raw/test.de" ]] || die "no $DATA/raw/test.de: run scripts/prepare_multi30k.sh --out $DATA"

T="$TEACHER" S="onnx:$CKPT:int8=True"
R="rescore=teacher,teacher=$T,teacher_compute_type=int8"
AR="fairseq AR"
if [[ "$DEVICE" == cuda ]]; then
  # The GPU rows: fp16 everywhere (fairseq-generate's --fp16; CTranslate2's float16; the AR
  # rows keep the CPU's names, the speed-ups' references). ONNX Runtime's rows are CPU only.
  ROWS=(
    "$AR greedy=translation:$T:beam=1,dtype=float16"
    "$AR beam 4=translation:$T:beam=4,dtype=float16"
    "CTranslate2 float16 greedy=ctranslate2:$T:compute_type=float16,beam=1"
    "CTranslate2 float16 beam 4=ctranslate2:$T:compute_type=float16,beam=4"
    "CTranslate2 int8_float16 greedy=ctranslate2:$T:compute_type=int8_float16,beam=1"
    "fairseq NAT one pass fp16=translation_lev:$NAT:dtype=float16"
    "student fp32=translation_vqvae:$CKPT"
    "student fp16=translation_vqvae:$CKPT:dtype=float16"
    "student fp16, 4 latent beams, teacher=translation_vqvae:$CKPT:dtype=float16,gen_latent_beam=4,gen_rescore=teacher,teacher=$T"
    "student fp16, 16 latent beams, teacher=translation_vqvae:$CKPT:dtype=float16,gen_latent_beam=16,gen_rescore=teacher,teacher=$T"
  )
else
  ROWS=(
    "$AR greedy=translation:$T:beam=1"
    "$AR beam 4=translation:$T:beam=4"
    "CTranslate2 int8 greedy=ctranslate2:$T:compute_type=int8,beam=1"
    "CTranslate2 float32 greedy=ctranslate2:$T:compute_type=float32,beam=1"
    "CTranslate2 int8 beam 4=ctranslate2:$T:compute_type=int8,beam=4"
    "fairseq NAT one pass=translation_lev:$NAT"
    "student fp32=translation_vqvae:$CKPT"
    "student --gen-int8=translation_vqvae:$CKPT:gen_int8=True"
    "student ONNX Runtime fp32=onnx:$CKPT"
    "student ONNX Runtime int8=$S"
    "student ONNX int8, 4 beams, teacher=$S,latent_beam=4,$R"
    "student ONNX int8, 16 beams, teacher=$S,latent_beam=16,$R"
  )
fi
MODELS=()
for row in "${ROWS[@]}"; do MODELS+=(--model "$row"); done
mkdir -p "$OUT"
log "$CKPT, $THREADS thread(s), $DEVICE -> $OUT"
exec "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --subset test \
  --ref-raw "$DATA/raw/test.de" --ref-tok "$DATA/tok/test.de" --threads "$THREADS" \
  --device "$DEVICE" --throughput-max-tokens 8000 --throughput-passes 1 \
  --ar-greedy-row "$AR greedy" --ar-beam-row "$AR beam 4" \
  "${MODELS[@]}" --out-dir "$OUT" --replace-results
