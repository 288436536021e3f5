#!/usr/bin/env bash
# Prepare any parallel corpus for fairseq: Moses tokenization, joint BPE, fairseq-preprocess.
#
# Input: a folder with one sentence per line, train / valid / test for both languages, plain or
# gzipped (DIR/train.SRC or DIR/train.SRC.gz, ...; --split-names renames the three stems).
# Stages (each skipped when its output is complete; --force redoes everything):
#   1. raw   : DIR/{train,valid,test}.LANG[.gz] -> OUT/raw/{train,valid,test}.LANG
#              (raw, untokenized: OUT/raw/test.TGT is the reference for sacreBLEU)
#   2. tok   : sacremoses, aggressive dash splitting (-a), XML escaping off -> OUT/tok/
#   3. bpe   : subword-nmt learn-joint-bpe-and-vocab on train (both languages), apply-bpe
#              -> OUT/bpe/{codes,vocab.LANG,train.LANG,valid.LANG,test.LANG}
#   4. bin   : fairseq-preprocess --joined-dictionary -> OUT/data-bin/
# OUT must be new, empty or this script's own: a folder holding other files is refused.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, PY, BIN, log, die, stage helpers
LOG_NAME=prepare_corpus

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") --src-dir DIR --src-lang L --tgt-lang M --out OUT [options]

Prepare a parallel corpus (DIR/{train,valid,test}.{L,M}, plain or .gz) for fairseq.

Options:
  --src-dir DIR      folder with the raw text, one sentence per line
  --src-lang L       source language (its file suffix, and sacremoses' language)
  --tgt-lang M       target language
  --out DIR          output folder (new, empty, or an earlier run's)
  --split-names T,V,E  file stems of the train, valid and test sets in DIR
                     (default: train,valid,test)
  --bpe-merges N     joint BPE merge operations (default: 10000)
  --workers N        worker processes for tokenization and fairseq-preprocess (default: 1)
  --force            redo every stage
  -h, --help         this message

Outputs: OUT/raw (raw text, sacreBLEU references), OUT/tok (Moses-tokenized, for tokenized
BLEU), OUT/bpe (BPE codes and text), OUT/data-bin (binarized, joined dictionary).
EOF
}

SRC_DIR=""
OUT=""
MERGES=10000
SRC=""
TGT=""
STEMS=train,valid,test
WORKERS=1
FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --src-dir) SRC_DIR="${2:?--src-dir needs a value}"; shift 2 ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --bpe-merges) MERGES="${2:?--bpe-merges needs a value}"; shift 2 ;;
    --src-lang) SRC="${2:?}"; shift 2 ;;
    --tgt-lang) TGT="${2:?}"; shift 2 ;;
    --split-names) STEMS="${2:?}"; shift 2 ;;
    --workers) WORKERS="${2:?}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument '$1'" ;;
  esac
done
[[ -n "$SRC_DIR" && -n "$SRC" && -n "$TGT" && -n "$OUT" ]] || { usage; die "--src-dir, --src-lang, --tgt-lang and --out are required"; }
[[ "$MERGES" =~ ^[0-9]+$ && "$MERGES" -gt 0 ]] || die "--bpe-merges must be a positive integer, got '$MERGES'"
[[ "$SRC" != "$TGT" ]] || die "--src-lang and --tgt-lang must differ"
SPLITS=(train valid test)
IFS=',' read -r -a STEM_LIST <<< "$STEMS"
[[ ${#STEM_LIST[@]} == 3 ]] || die "--split-names needs three comma-separated stems (train,valid,test), got '$STEMS'"
declare -A NAMES=([train]="${STEM_LIST[0]}" [valid]="${STEM_LIST[1]}" [test]="${STEM_LIST[2]}")
[[ -d "$SRC_DIR" ]] || die "corpus folder '$SRC_DIR' not found"
require_tools subword-nmt fairseq-preprocess

# FILES[split.lang]: the source file of each split and language, plain text before .gz.
declare -A FILES
for split in "${SPLITS[@]}"; do
  for lang in "$SRC" "$TGT"; do
    name="${NAMES[$split]}.$lang"
    if [[ -f "$SRC_DIR/$name" ]]; then FILES[$split.$lang]="$name"
    elif [[ -f "$SRC_DIR/$name.gz" ]]; then FILES[$split.$lang]="$name.gz"
    else die "missing $name (or $name.gz) in $SRC_DIR: the $split set needs one file per language"
    fi
  done
done

claim_dir "$OUT" .sources .done.raw orig  # never another's folder (earlier runs: their markers)
OUT="$(cd "$OUT" && pwd)"
PARAMS="src=$SRC tgt=$TGT merges=$MERGES"

# Stages are skipped when OUT/.done.STAGE records the same PARAMS (done_stage/mark_done in lib.sh).
if [[ $FORCE == 1 ]]; then rm -f "$OUT"/.done.*; fi
# A changed source file (fixed, or another copy) redoes every stage: OUT/.sources records the
# checksums of the files the stages were made from.
SOURCES="$(cd "$SRC_DIR" && for split in "${SPLITS[@]}"; do for lang in "$SRC" "$TGT"; do
  cksum "${FILES[$split.$lang]}"
done; done | cksum | cut -d' ' -f1)"
if [[ -f "$OUT/.done.raw" && -f "$OUT/.sources" && "$(cat "$OUT/.sources")" != "$SOURCES" ]]; then
  log "the files in $SRC_DIR changed since $OUT was prepared: redoing every stage"
  rm -f "$OUT"/.done.*
fi
echo "$SOURCES" > "$OUT/.sources"

# ---- 1. raw ---------------------------------------------------------------------------------
if done_stage raw; then
  log "1/4 raw text: already in $OUT/raw, skipping"
else
  log "1/4 raw text from $SRC_DIR -> $OUT/raw"
  mkdir -p "$OUT/raw"
  for split in "${SPLITS[@]}"; do
    for lang in "$SRC" "$TGT"; do
      file="$SRC_DIR/${FILES[$split.$lang]}"
      if [[ "$file" == *.gz ]]; then gzip -dc "$file"; else cat "$file"; fi | sed 's/\r$//' > "$OUT/raw/$split.$lang"
      bad="$(LC_ALL=C.UTF-8 grep -naxv '.*' "$OUT/raw/$split.$lang" | head -1 | cut -d: -f1 || true)"
      [[ -z "$bad" ]] || die "$file: line $bad is not valid UTF-8; re-encode the file (e.g. iconv -f LATIN1 -t UTF-8) and rerun"
    done
    count_pairs "$split" "$SRC_DIR"
  done
  mark_done raw
fi

# ---- 2. tok ---------------------------------------------------------------------------------
if done_stage tok; then
  log "2/4 tokenized text: already in $OUT/tok, skipping"
else
  log "2/4 Moses tokenization (sacremoses, -a, no escaping) -> $OUT/tok"
  mkdir -p "$OUT/tok"
  for lang in "$SRC" "$TGT"; do
    files=()
    for split in "${SPLITS[@]}"; do files+=("$OUT/raw/$split.$lang" "$OUT/tok/$split.$lang"); done
    "$PY" "$ROOT/scripts/moses.py" tokenize -l "$lang" -a -j "$WORKERS" "${files[@]}"
  done
  check_tokenized
  mark_done tok
fi

# ---- 3. bpe ---------------------------------------------------------------------------------
if done_stage bpe; then
  log "3/4 BPE: already in $OUT/bpe, skipping"
else
  log "3/4 joint BPE, $MERGES merges (subword-nmt learn-joint-bpe-and-vocab) -> $OUT/bpe"
  joint_bpe
  mark_done bpe
fi

# ---- 4. bin ---------------------------------------------------------------------------------
if done_stage bin; then
  log "4/4 binarized data: already in $OUT/data-bin, skipping"
else
  log "4/4 fairseq-preprocess --joined-dictionary -> $OUT/data-bin (log: $OUT/preprocess.log)"
  binarize_joined "$OUT/bpe/train" "$OUT/bpe/valid"
  mark_done bin
fi

log "done: $(wc -l < "$OUT/data-bin/dict.$SRC.txt") dictionary entries; data-bin: $OUT/data-bin"
log "  references: raw $OUT/raw/test.$TGT (sacreBLEU), tokenized $OUT/tok/test.$TGT (tokenized BLEU)"
