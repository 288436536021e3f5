# shellcheck shell=bash
# Helpers shared by the shell pipelines: scripts/{prepare_corpus,prepare_multi30k,
# prepare_wmt14_en_de,train_teacher,distill}.sh and examples/{multi30k,wmt14_en_de,
# translate_your_data}/run.sh. Sourced, never run:
#   scripts/X.sh:        source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   examples/X/run.sh:   source "$ROOT/scripts/lib.sh"
# Each entry script keeps its own `set -euo pipefail`, usage() and option parsing.

# ROOT: the repository. PY: the project's Python ($PYTHON, else ROOT/.venv/bin/python, else python3
# from PATH). BIN: its folder, where fairseq-* and subword-nmt are installed.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
BIN="$(dirname "$PY")"

# log MSG: "[LOG_NAME HH:MM:SS] MSG" on stderr. die MSG: "DIE_NAME: error: MSG" on stderr, exit 1
# (DIE_NAME defaults to LOG_NAME). The entry script sets LOG_NAME (and DIE_NAME, if it differs)
# right after sourcing this file.
DIE_NAME=""
log() { echo "[$LOG_NAME $(date +%H:%M:%S)] $*" >&2; }
die() { echo "${DIE_NAME:-$LOG_NAME}: error: $*" >&2; exit 1; }

# have_cuda: succeeds when PY's torch sees a GPU (no nvidia-smi: no GPU, without importing torch).
have_cuda() {
  command -v nvidia-smi >/dev/null 2>&1 \
    && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
}

# claim_dir DIR [NAME...]: DIR is this project's output folder from now on (DIR/.made_by, naming
# LOG_NAME): created when missing, claimed when empty, or when it holds .made_by or one of the
# NAMEs (an earlier version's markers). Dies when DIR holds anything else: nothing a user has is
# ever overwritten.
claim_dir() {
  local dir="$1" name; shift
  [[ -f "$dir/.made_by" ]] && return 0
  if [[ -d "$dir" && -n "$(ls -A "$dir")" ]]; then
    for name in "$@"; do [[ -e "$dir/$name" ]] && break; done
    [[ $# -gt 0 && -e "$dir/$name" ]] \
      || die "$dir holds files that no script of this project made ($(ls -A "$dir" | head -3 | tr '\n' ' ')...): nothing there is overwritten; choose another output folder"
  fi
  mkdir -p "$dir"
  echo "$LOG_NAME" > "$dir/.made_by"
}

# bf16_autocast_flag NAME: BF16_AUTOCAST_FLAG (an array) <- (--bf16-autocast) or () for the
# setting in variable NAME: 1 always, 0 never, auto where it makes training faster (a GPU, or a
# CPU with native bfloat16: fairseq_vqvae/precision.py; an AVX2-only CPU emulates bfloat16 and
# trains slower under autocast). Dies on another value.
bf16_autocast_flag() {
  BF16_AUTOCAST_FLAG=()
  case "${!1}" in
    1) BF16_AUTOCAST_FLAG=(--bf16-autocast) ;;
    0) ;;
    auto) if (cd "$ROOT" && "$PY" -m fairseq_vqvae.precision) 2>/dev/null; then BF16_AUTOCAST_FLAG=(--bf16-autocast); fi ;;
    *) die "$1 must be auto, 1 or 0, got '${!1}'" ;;
  esac
}

# ---- data preparation (prepare_*.sh) ----------------------------------------------------------

# require_tools TOOL...: die unless every TOOL is an executable in BIN.
require_tools() {
  local tool
  for tool in "$@"; do
    [[ -x "$BIN/$tool" ]] || die "$BIN/$tool not found: set up the environment first (bash scripts/setup_env.sh) or set PYTHON=/path/to/venv/bin/python"
  done
}

# A stage is done when OUT/.done.STAGE exists and records the same parameters (globals OUT, FORCE,
# PARAMS): done_stage STAGE succeeds when STAGE can be skipped, and dies when OUT was prepared with
# other parameters; mark_done STAGE records it.
done_stage() {
  local marker="$OUT/.done.$1"
  [[ $FORCE == 0 && -f "$marker" ]] || return 1
  [[ "$(cat "$marker")" == "$PARAMS" ]] && return 0
  die "$OUT was prepared with '$(cat "$marker")', now asked for '$PARAMS': use another --out or --force"
}
mark_done() { echo "$PARAMS" > "$OUT/.done.$1"; }

# apply_bpe CODES WORKERS IN OUT [IN OUT ...]: one subword-nmt run over all inputs (BPE is
# applied line by line, so concatenating and splitting back by line counts is exact). Its work
# files are OUT/bpe/.all.{in,out} (global OUT).
apply_bpe() {
  local codes="$1" workers="$2"; shift 2
  local all="$OUT/bpe/.all" pairs=("$@") i
  : > "$all.in"
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do cat "${pairs[i]}" >> "$all.in"; done
  "$BIN/subword-nmt" apply-bpe -c "$codes" --num-workers "$workers" --input "$all.in" --output "$all.out"
  local plan=""
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    : > "${pairs[i + 1]}"
    plan+="$(wc -l < "${pairs[i]}")"$'\t'"${pairs[i + 1]}"$'\t'
  done
  awk -v plan="${plan%$'\t'}" '
    BEGIN { m = split(plan, p, "\t"); k = 1; left = p[1] + 0; out = p[2] }
    { while (left == 0 && k + 2 <= m) { close(out); k += 2; left = p[k] + 0; out = p[k + 1] }
      print > out; left-- }' "$all.out"
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    [[ "$(wc -l < "${pairs[i]}")" == "$(wc -l < "${pairs[i + 1]}")" ]] || die "BPE of ${pairs[i]} changed the line count"
  done
  rm -f "$all.in" "$all.out"
}

# count_pairs SPLIT [WHERE]: OUT/raw/SPLIT.SRC and OUT/raw/SPLIT.TGT have the same number of
# lines, and at least one (dies naming WHERE otherwise); logs the count.
count_pairs() {
  local n_src n_tgt
  n_src=$(wc -l < "$OUT/raw/$1.$SRC"); n_tgt=$(wc -l < "$OUT/raw/$1.$TGT")
  [[ "$n_src" == "$n_tgt" ]] || die "$1: $n_src $SRC lines but $n_tgt $TGT lines${2:+ in $2}"
  [[ "$n_src" -gt 0 ]] || die "$1: no lines${2:+ in $2}"
  log "  $1: $n_src sentence pairs"
}

# check_tokenized: every OUT/tok/SPLIT.LANG (SPLITS x SRC, TGT) has as many lines as OUT/raw/SPLIT.LANG.
check_tokenized() {
  local split lang
  for split in "${SPLITS[@]}"; do
    for lang in "$SRC" "$TGT"; do
      [[ "$(wc -l < "$OUT/tok/$split.$lang")" == "$(wc -l < "$OUT/raw/$split.$lang")" ]] \
        || die "tokenization of $split.$lang changed the line count"
    done
  done
}

# joint_bpe [FLAG...]: subword-nmt learn-joint-bpe-and-vocab (MERGES merges, FLAGs appended) on
# OUT/tok/train.{SRC,TGT} -> OUT/bpe/{codes,vocab.SRC,vocab.TGT}, then apply_bpe (WORKERS
# workers) to every OUT/tok/SPLIT.LANG -> OUT/bpe/SPLIT.LANG.
joint_bpe() {
  mkdir -p "$OUT/bpe"
  "$BIN/subword-nmt" learn-joint-bpe-and-vocab --input "$OUT/tok/train.$SRC" "$OUT/tok/train.$TGT" \
    -s "$MERGES" -o "$OUT/bpe/codes" --write-vocabulary "$OUT/bpe/vocab.$SRC" "$OUT/bpe/vocab.$TGT" "$@"
  local files=() split lang
  for split in "${SPLITS[@]}"; do
    for lang in "$SRC" "$TGT"; do files+=("$OUT/tok/$split.$lang" "$OUT/bpe/$split.$lang"); done
  done
  apply_bpe "$OUT/bpe/codes" "$WORKERS" "${files[@]}"
}

# binarize_joined TRAINPREF VALIDPREF: fairseq-preprocess --joined-dictionary (WORKERS workers) of
# TRAINPREF, VALIDPREF and OUT/bpe/test -> OUT/data-bin (replaced); its output goes to
# OUT/preprocess.log, whose tail is shown when it fails.
binarize_joined() {
  rm -rf "$OUT/data-bin"
  "$BIN/fairseq-preprocess" --source-lang "$SRC" --target-lang "$TGT" \
    --trainpref "$1" --validpref "$2" --testpref "$OUT/bpe/test" \
    --destdir "$OUT/data-bin" --joined-dictionary --workers "$WORKERS" > "$OUT/preprocess.log" 2>&1 \
    || { tail -20 "$OUT/preprocess.log" >&2; die "fairseq-preprocess failed (full log: $OUT/preprocess.log)"; }
}

# ---- study recipes (examples/*/run.sh) --------------------------------------------------------

# parse_run_args ARGS...: the recipes' command line: --dry-run (DRY_RUN=1, else 0), --stages LIST
# (STAGES; the caller sets its default first), -h|--help (the caller's usage). The caller checks
# the stage names.
parse_run_args() {
  DRY_RUN=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dry-run) DRY_RUN=1; shift ;;
      --stages) STAGES="${2:?--stages needs a list}"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) usage; die "unknown argument '$1'" ;;
    esac
  done
}
want() { [[ ",$STAGES," == *",$1,"* ]]; }  # want STAGE: STAGE is in --stages

run() {  # run CMD...: print it; execute it unless --dry-run
  echo "+ $(printf '%q ' "$@")" >&2
  [[ $DRY_RUN == 1 ]] || "$@"
}

# train_fairseq SAVE_DIR ARGS...: fairseq-train ARGS --save-dir SAVE_DIR, resumable (it continues
# from SAVE_DIR/checkpoint_last.pt); SAVE_DIR/train.done records ARGS when it finished, and then
# the same call does nothing. Prints the command; --dry-run runs nothing.
train_fairseq() {
  local save_dir="$1"; shift
  local signature
  signature="$(printf '%q ' "$@")"
  if [[ -f "$save_dir/train.done" && "$(cat "$save_dir/train.done")" == "$signature" ]]; then
    log "  already trained: $save_dir"
    return 0
  fi
  [[ -f "$save_dir/checkpoint_last.pt" ]] && log "  resuming from $save_dir/checkpoint_last.pt"
  echo "+ fairseq-train $signature" >&2
  [[ $DRY_RUN == 1 ]] && return 0
  mkdir -p "$save_dir"
  echo "fairseq-train $signature" > "$save_dir/command.txt"
  set +e
  "$BIN/fairseq-train" "$@" --save-dir "$save_dir" 2>&1 | tee -a "$save_dir/train.log" \
    | grep --line-buffered -E "\| (train|valid) \||done training|Error" >&2
  local status=${PIPESTATUS[0]}
  set -e
  [[ $status == 0 ]] || die "fairseq-train failed (exit $status); see $save_dir/train.log; rerun to resume"
  echo "$signature" > "$save_dir/train.done"
}
