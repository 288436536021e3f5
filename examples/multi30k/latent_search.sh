#!/usr/bin/env bash
# BLEU against batch-1 latency of the search over latents (issue 14), one student checkpoint,
# every setting measured in one process by scripts/benchmark.py:
#
#   bash examples/multi30k/latent_search.sh CHECKPOINT OUT_DIR [SUBSET]
#
# SUBSET is valid (default: settings are chosen on it) or test. Rows: greedy (1 candidate);
# latent beams of 2-16 ranked by the predictor (latent) or by the model's joint score (model);
# 1 + 3/7/15 sampled code sequences (model); 2 lengths x 4 beams (model). With TEACHER=ckpt
# (an AR fairseq model on the same dictionary, e.g. run.sh's teacher) also teacher-rescored rows
# and the teacher's own greedy and beam-4 rows. Writes OUT_DIR/benchmark.{md,json,png}.
#
# Environment: WORK (runs/multi30k: data-bin and references from prepare_multi30k.sh),
#   THREADS (1), TEACHER (unset), ROWS (all; curve: only the greedy, model- and teacher-ranked
#   beams of 1-16 candidates, the length x beam rows and the AR rows, about half the time).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$ROOT/scripts/lib.sh"  # PY, log, die
LOG_NAME=latent_search

[[ $# -ge 2 ]] || { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
CKPT="$1" OUT="$2" SUBSET="${3:-valid}"
WORK="${WORK:-$ROOT/runs/multi30k}"
DATA="$WORK/data"
THREADS="${THREADS:-1}"
[[ -f "$CKPT" ]] || die "no checkpoint at $CKPT"
[[ "$SUBSET" == valid || "$SUBSET" == test ]] || die "SUBSET must be valid or test, got '$SUBSET'"
[[ -f "$DATA/raw/$SUBSET.de" ]] || die "no $DATA/raw/$SUBSET.de: run scripts/prepare_multi30k.sh --out $DATA"

ROWS="${ROWS:-all}"
[[ "$ROWS" == all || "$ROWS" == curve ]] || die "ROWS must be all or curve, got '$ROWS'"
S="translation_vqvae:$CKPT"
models=(--model "1 candidate (greedy)=$S")
[[ "$ROWS" == all ]] && models+=(
  --model "beam 2, latent=$S:gen_latent_beam=2,gen_rescore=latent"
  --model "beam 4, latent=$S:gen_latent_beam=4,gen_rescore=latent"
)
models+=(
  --model "beam 2, model=$S:gen_latent_beam=2,gen_rescore=model"
  --model "beam 4, model=$S:gen_latent_beam=4,gen_rescore=model"
  --model "beam 8, model=$S:gen_latent_beam=8,gen_rescore=model"
  --model "beam 16, model=$S:gen_latent_beam=16,gen_rescore=model"
)
[[ "$ROWS" == all ]] && models+=(
  --model "1 + 3 samples, model=$S:gen_latent_samples=3,gen_rescore=model"
  --model "1 + 7 samples, model=$S:gen_latent_samples=7,gen_rescore=model"
  --model "1 + 15 samples, model=$S:gen_latent_samples=15,gen_rescore=model"
)
models+=(--model "2 lengths x beam 4, model=$S:gen_length_beam=2,gen_latent_beam=4,gen_rescore=model")
if [[ -n "${TEACHER:-}" ]]; then
  [[ -f "$TEACHER" ]] || die "no teacher checkpoint at $TEACHER"
  T="teacher=$TEACHER"
  models+=(
    --model "AR beam 4=translation:$TEACHER:beam=4"
    --model "AR greedy=translation:$TEACHER:beam=1"
    --model "beam 2, teacher=$S:gen_latent_beam=2,gen_rescore=teacher,$T"
    --model "beam 4, teacher=$S:gen_latent_beam=4,gen_rescore=teacher,$T"
    --model "beam 8, teacher=$S:gen_latent_beam=8,gen_rescore=teacher,$T"
    --model "beam 16, teacher=$S:gen_latent_beam=16,gen_rescore=teacher,$T"
  )
  [[ "$ROWS" == all ]] && models+=(
    --model "beam 4 + 4 samples, teacher=$S:gen_latent_beam=4,gen_latent_samples=4,gen_rescore=teacher,$T"
  )
  models+=(
    --model "2 lengths x beam 8, teacher=$S:gen_length_beam=2,gen_latent_beam=8,gen_rescore=teacher,$T"
  )
fi
mkdir -p "$OUT"
log "$CKPT on $SUBSET, $THREADS thread(s) -> $OUT"
exec "$PY" "$ROOT/scripts/benchmark.py" --data "$DATA/data-bin" --subset "$SUBSET" \
  --ref-raw "$DATA/raw/$SUBSET.de" --ref-tok "$DATA/tok/$SUBSET.de" --threads "$THREADS" \
  --throughput-max-tokens 0 "${models[@]}" --out-dir "$OUT" --replace-results
