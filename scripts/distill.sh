#!/usr/bin/env bash
# Sequence-level knowledge distillation (Kim & Rush 2016), the fairseq way (fairseq #1554,
# examples/nonautoregressive_translation): translate the TRAINING set with the AR teacher
# (beam 4), take the H- lines in the original order (BPE kept, so the student sees the same
# subwords), and re-binarize them with the TEACHER's dictionaries. valid/test are copied
# unchanged (students are validated and tested on the real references).
#
# Stages (resumable: finished work is never redone):
#   1. translate : fairseq-generate --gen-subset train in --num-shards shards; shard I is
#                  finished when OUT/shards/shard-I-of-N.tsv exists (written only after its
#                  sentence count was checked). NB: fairseq 0.12's generate.py ignores its own
#                  --num-shards/--shard-id flags and shards the batches by
#                  --distributed-world-size/--distributed-rank instead (single process, no
#                  process group), so those two select the shard here.
#   2. merge     : shards -> OUT/text/train.{SRC,TGT} sorted by sentence id; hard check that
#                  every id 0..N-1 occurs exactly once, N = the original training set's size
#   3. binarize  : fairseq-preprocess --srcdict/--tgtdict (teacher's) -> OUT/data-bin, plus the
#                  teacher data's valid*/test* files; the line count is checked once more
#
# fairseq pitfalls handled: --required-batch-size-multiple 1 (no dropped sentences), an
# explicit --distributed-world-size (= the shard count) and one visible GPU per process (never
# the default world size = number of visible GPUs, which silently translates only a part).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, PY, BIN, log, die
LOG_NAME=distill

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") --data DATA_BIN --checkpoint TEACHER.pt --out DIR [options]

Options:
  --data DIR            the teacher's fairseq-preprocess folder (train, valid, test, dicts)
  --checkpoint FILE     the teacher checkpoint (fairseq translation task)
  --out DIR             output folder: shards/, text/, data-bin/ (the student's data)
  --source-lang L       default: detected from DATA_BIN/train.L-M.L.idx
  --target-lang M       default: detected likewise
  --beam N              beam size (default: 4)
  --lenpen X            length penalty (default: 1.0)
  --max-tokens N        tokens per generation batch (default: 8000)
  --num-shards N        shards of the training set; an interrupted run redoes only
                        unfinished shards (default: 4)
  --devices LIST        comma-separated workers, each a GPU id or 'cpu': shard I runs on entry
                        I mod len(LIST), the entries in parallel (default: auto = '0' when a GPU
                        is visible, else 'cpu')
  --threads N           torch threads per CPU worker (default: nproc / number of cpu workers)
  --workers N           fairseq-preprocess workers (default: 1)
  --generate-args STR   extra fairseq-generate flags, e.g. "--fp16 --max-len-a 1.2 --max-len-b 10"
  --force               delete OUT and start again
  -h, --help            this message
EOF
}

DATA=""; CKPT=""; OUT=""; SRC=""; TGT=""
BEAM=4; LENPEN=1.0; MAX_TOKENS=8000; NUM_SHARDS=4; DEVICES=auto; THREADS=""; WORKERS=1
GEN_ARGS=""; FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="${2:?--data needs a value}"; shift 2 ;;
    --checkpoint) CKPT="${2:?--checkpoint needs a value}"; shift 2 ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --source-lang) SRC="${2:?}"; shift 2 ;;
    --target-lang) TGT="${2:?}"; shift 2 ;;
    --beam) BEAM="${2:?}"; shift 2 ;;
    --lenpen) LENPEN="${2:?}"; shift 2 ;;
    --max-tokens) MAX_TOKENS="${2:?}"; shift 2 ;;
    --num-shards) NUM_SHARDS="${2:?}"; shift 2 ;;
    --devices) DEVICES="${2:?}"; shift 2 ;;
    --threads) THREADS="${2:?}"; shift 2 ;;
    --workers) WORKERS="${2:?}"; shift 2 ;;
    --generate-args) GEN_ARGS="${2?}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument '$1'" ;;
  esac
done
[[ -n "$DATA" && -n "$CKPT" && -n "$OUT" ]] || { usage; die "--data, --checkpoint and --out are required"; }
[[ -d "$DATA" ]] || die "data folder '$DATA' not found (the teacher's fairseq-preprocess output)"
[[ -f "$CKPT" ]] || die "teacher checkpoint '$CKPT' not found: train it first (scripts/train_teacher.sh)"
[[ "$NUM_SHARDS" =~ ^[1-9][0-9]*$ ]] || die "--num-shards must be a positive integer, got '$NUM_SHARDS'"
[[ "$BEAM" =~ ^[1-9][0-9]*$ ]] || die "--beam must be a positive integer, got '$BEAM'"
for tool in fairseq-generate fairseq-preprocess; do
  [[ -x "$BIN/$tool" ]] || die "$BIN/$tool not found: set up the environment (bash scripts/setup_env.sh) or set PYTHON"
done
DATA="$(cd "$DATA" && pwd)"
CKPT="$(cd "$(dirname "$CKPT")" && pwd)/$(basename "$CKPT")"

# Language pair from the binarized training set.
if [[ -z "$SRC" || -z "$TGT" ]]; then
  shopt -s nullglob
  pairs=()
  for f in "$DATA"/train.*-*.idx; do
    name="$(basename "$f" .idx)"; pair="${name#train.}"; pair="${pair%.*}"; lang="${name##*.}"
    [[ "$lang" == "${pair%-*}" ]] && pairs+=("$pair")
  done
  shopt -u nullglob
  [[ ${#pairs[@]} == 1 ]] || die "cannot detect the language pair in $DATA (found: ${pairs[*]:-none}); pass --source-lang and --target-lang"
  SRC="${SRC:-${pairs[0]%-*}}"; TGT="${TGT:-${pairs[0]#*-}}"
fi
PREFIX="$DATA/train.$SRC-$TGT"
[[ -f "$PREFIX.$SRC.idx" ]] || PREFIX="$DATA/train.$TGT-$SRC"
for f in "$PREFIX.$SRC.idx" "$DATA/dict.$SRC.txt" "$DATA/dict.$TGT.txt"; do
  [[ -f "$f" ]] || die "missing $f: --data must be the fairseq-preprocess folder the teacher was trained on"
done

# Number of sentences in a binarized file (fairseq mmap index header: 9-byte magic, u64 version,
# u8 dtype, u64 count), without importing fairseq.
num_sentences() {
  local idx="$1.idx"
  if [[ "$(head -c 9 "$idx" | od -An -c | tr -d ' \n')" == 'MMIDIDX\0\0' ]]; then
    od -An -t u8 -j 18 -N 8 "$idx" | tr -d ' '
  else
    "$PY" -c "import sys; from fairseq.data import data_utils; print(len(data_utils.load_indexed_dataset(sys.argv[1], None)))" "$1"
  fi
}
EXPECTED="$(num_sentences "$PREFIX.$SRC")"
[[ "$EXPECTED" =~ ^[0-9]+$ && "$EXPECTED" -gt 0 ]] || die "could not read the number of training sentences from $PREFIX.$SRC.idx"

if [[ "$FORCE" == 1 ]]; then rm -rf "$OUT"; fi
mkdir -p "$OUT/shards" "$OUT/text"
OUT="$(cd "$OUT" && pwd)"
PARAMS="teacher=$CKPT data=$DATA pair=$SRC-$TGT beam=$BEAM lenpen=$LENPEN generate_args=$GEN_ARGS sentences=$EXPECTED"
if [[ -f "$OUT/params.txt" && "$(cat "$OUT/params.txt")" != "$PARAMS" ]]; then
  die "$OUT holds a distillation made with different settings:
  was: $(cat "$OUT/params.txt")
  now: $PARAMS
use another --out, or --force to start again"
fi
echo "$PARAMS" > "$OUT/params.txt"

if [[ -f "$OUT/.done" ]]; then
  log "already finished: $OUT/data-bin ($EXPECTED sentence pairs); nothing to do"
  exit 0
fi

# ---- 1. translate ---------------------------------------------------------------------------
if [[ "$DEVICES" == auto ]]; then
  DEVICES=cpu
  if have_cuda; then DEVICES=0; fi
fi
IFS=',' read -r -a DEVICE_LIST <<< "$DEVICES"
[[ ${#DEVICE_LIST[@]} -gt 0 ]] || die "--devices is empty"
n_cpu=0
for dev in "${DEVICE_LIST[@]}"; do
  [[ "$dev" == cpu || "$dev" =~ ^[0-9]+$ ]] || die "--devices entries must be GPU ids or 'cpu', got '$dev'"
  [[ "$dev" == cpu ]] && n_cpu=$((n_cpu + 1))
done
if [[ -z "$THREADS" ]]; then
  THREADS=$(( $(nproc 2>/dev/null || echo 1) / (n_cpu > 0 ? n_cpu : 1) ))
  [[ $THREADS -ge 1 ]] || THREADS=1
fi
read -r -a EXTRA_GEN <<< "$GEN_ARGS"

translate_shard() {  # translate_shard SHARD DEVICE
  local shard="$1" dev="$2"
  local name="shard-$shard-of-$NUM_SHARDS"
  local logf="$OUT/shards/$name.log" tsv="$OUT/shards/$name.tsv"
  local device_args=() env_args=()
  if [[ "$dev" == cpu ]]; then
    device_args=(--cpu); env_args=(CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS")
  else
    env_args=(CUDA_VISIBLE_DEVICES="$dev")
  fi
  log "  shard $shard/$NUM_SHARDS: translating on $dev (log: $logf)"
  if ! env "${env_args[@]}" "$BIN/fairseq-generate" "$DATA" --user-dir "$ROOT/fairseq_vqvae" \
      --task translation --source-lang "$SRC" --target-lang "$TGT" --path "$CKPT" \
      --gen-subset train --beam "$BEAM" --nbest 1 --lenpen "$LENPEN" --max-tokens "$MAX_TOKENS" \
      --required-batch-size-multiple 1 --num-workers 0 "${device_args[@]}" \
      --distributed-world-size "$NUM_SHARDS" --distributed-rank "$shard" \
      "${EXTRA_GEN[@]}" > "$logf" 2>&1; then
    # A shard with no batch (more shards than batches) makes generate.py divide by zero in its
    # final summary, after translating nothing: that is an empty shard, not a failure.
    if grep -q "num_sentences / gen_timer.sum" "$logf" && ! grep -q "^H-" "$logf"; then
      : > "$tsv"
      log "  shard $shard/$NUM_SHARDS: empty (more shards than batches)"
      return 0
    fi
    tail -15 "$logf" >&2
    echo "distill: error: fairseq-generate failed on shard $shard (full log: $logf)" >&2
    return 1
  fi
  # id <TAB> source (BPE) <TAB> hypothesis (BPE kept), from the S- and first H- line of each id.
  awk -F'\t' '
    /^S-[0-9]+\t/ { src[substr($1, 3)] = $2 }
    /^H-[0-9]+\t/ { id = substr($1, 3); if (!(id in seen)) { seen[id] = 1; print id "\t" src[id] "\t" $3 } }
  ' "$logf" > "$tsv.part"
  local translated hyps
  translated="$(sed -n 's/.*Translated \([0-9,]*\) sentences.*/\1/p' "$logf" | tr -d ',' | tail -1)"
  hyps="$(wc -l < "$tsv.part")"
  if [[ -z "$translated" || "$translated" != "$hyps" ]]; then
    echo "distill: error: shard $shard: fairseq-generate reported '${translated:-no}' translated sentences but $hyps hypotheses were found (log: $logf)" >&2
    return 1
  fi
  mv "$tsv.part" "$tsv"
  log "  shard $shard/$NUM_SHARDS: $hyps sentences"
}

run_device() {  # run_device INDEX: the shards assigned to DEVICE_LIST[INDEX], one after another
  local index="$1" dev="${DEVICE_LIST[$1]}" shard
  for ((shard = index; shard < NUM_SHARDS; shard += ${#DEVICE_LIST[@]})); do
    if [[ -f "$OUT/shards/shard-$shard-of-$NUM_SHARDS.tsv" ]]; then
      log "  shard $shard/$NUM_SHARDS: already translated, skipping"
      continue
    fi
    translate_shard "$shard" "$dev" || return 1
  done
}

if [[ -f "$OUT/text/train.$TGT" && -f "$OUT/text/train.$SRC" ]]; then
  log "1/3 translate: merged text already in $OUT/text, skipping"
else
  log "1/3 translating $EXPECTED training sentences with $CKPT (beam $BEAM, lenpen $LENPEN, $NUM_SHARDS shards on ${DEVICE_LIST[*]})"
  pids=()
  for ((i = 0; i < ${#DEVICE_LIST[@]}; i++)); do
    run_device "$i" &
    pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed == 0 ]] || die "translation failed (finished shards are kept: rerun the same command to continue)"

  # ---- 2. merge -----------------------------------------------------------------------------
  log "2/3 merging $NUM_SHARDS shards in sentence order -> $OUT/text/train.{$SRC,$TGT}"
  shopt -s nullglob
  others=("$OUT"/shards/shard-*.tsv)
  shopt -u nullglob
  for f in "${others[@]}"; do
    [[ "$f" == *"-of-$NUM_SHARDS.tsv" ]] || log "  note: ignoring $(basename "$f") (made with another --num-shards)"
  done
  for ((shard = 0; shard < NUM_SHARDS; shard++)); do
    [[ -f "$OUT/shards/shard-$shard-of-$NUM_SHARDS.tsv" ]] || die "shard $shard is missing after translation"
  done
  cat "$OUT"/shards/shard-*-of-"$NUM_SHARDS".tsv | sort -t$'\t' -k1,1n -s > "$OUT/text/merged.tsv.part"
  # Hard check: ids are exactly 0..EXPECTED-1, each once.
  if ! awk -F'\t' -v n="$EXPECTED" '
      $1 != NR - 1 { if (NR > 1 && $1 == prev) printf "sentence %d translated twice\n", $1 > "/dev/stderr";
                     else printf "sentence %d was not translated\n", NR - 1 > "/dev/stderr"; bad = 1; exit 1 }
      { prev = $1 }
      END { if (bad) exit 1
            if (NR != n) { printf "%d sentences translated, the training set has %d\n", NR, n > "/dev/stderr"; exit 1 } }
      ' "$OUT/text/merged.tsv.part"; then
    die "the distilled set does not match the original training set ($EXPECTED sentences): delete $OUT/shards and rerun"
  fi
  cut -f2 "$OUT/text/merged.tsv.part" > "$OUT/text/train.$SRC.part"
  cut -f3 "$OUT/text/merged.tsv.part" > "$OUT/text/train.$TGT.part"
  for lang in "$SRC" "$TGT"; do
    n="$(wc -l < "$OUT/text/train.$lang.part")"
    [[ "$n" == "$EXPECTED" ]] || die "train.$lang has $n lines, the original training set has $EXPECTED"
  done
  mv "$OUT/text/merged.tsv.part" "$OUT/text/merged.tsv"
  mv "$OUT/text/train.$SRC.part" "$OUT/text/train.$SRC"
  mv "$OUT/text/train.$TGT.part" "$OUT/text/train.$TGT"
  empty="$(grep -c '^$' "$OUT/text/train.$TGT" || true)"
  [[ "$empty" == 0 ]] || log "  note: $empty empty teacher translations (kept, to preserve the line count)"
fi

# ---- 3. binarize ----------------------------------------------------------------------------
log "3/3 fairseq-preprocess with the teacher's dictionaries -> $OUT/data-bin (log: $OUT/preprocess.log)"
rm -rf "$OUT/data-bin.part"
"$BIN/fairseq-preprocess" --source-lang "$SRC" --target-lang "$TGT" --trainpref "$OUT/text/train" \
  --srcdict "$DATA/dict.$SRC.txt" --tgtdict "$DATA/dict.$TGT.txt" --destdir "$OUT/data-bin.part" \
  --workers "$WORKERS" > "$OUT/preprocess.log" 2>&1 \
  || { tail -15 "$OUT/preprocess.log" >&2; die "fairseq-preprocess failed (full log: $OUT/preprocess.log)"; }
shopt -s nullglob
copied=0
for f in "$DATA"/valid*."$SRC-$TGT".* "$DATA"/test*."$SRC-$TGT".* "$DATA"/valid*."$TGT-$SRC".* "$DATA"/test*."$TGT-$SRC".*; do
  cp "$f" "$OUT/data-bin.part/"; copied=$((copied + 1))
done
shopt -u nullglob
[[ $copied -gt 0 ]] || log "  note: no valid*/test* files in $DATA to copy"
for lang in "$SRC" "$TGT"; do
  n="$(num_sentences "$OUT/data-bin.part/train.$SRC-$TGT.$lang")"
  [[ "$n" == "$EXPECTED" ]] || die "binarized distilled train.$lang has $n sentences, the original has $EXPECTED"
done
cmp -s "$DATA/dict.$TGT.txt" "$OUT/data-bin.part/dict.$TGT.txt" || die "the distilled data's dictionary differs from the teacher's"
rm -rf "$OUT/data-bin"
mv "$OUT/data-bin.part" "$OUT/data-bin"
cat > "$OUT/data-bin/DISTILLED.txt" <<EOF
Sequence-level distillation of $DATA (train, $EXPECTED sentence pairs)
teacher: $CKPT
generation: beam $BEAM, lenpen $LENPEN, BPE kept; extra flags: ${GEN_ARGS:-none}
valid/test: copied from the teacher's data (real references)
EOF
echo "$PARAMS" > "$OUT/.done"
log "done: $OUT/data-bin ($EXPECTED distilled sentence pairs, teacher's dictionary)"
