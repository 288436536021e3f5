#!/usr/bin/env bash
# Prepare Multi30k (task 1) for fairseq: Moses tokenization, joint BPE, fairseq-preprocess.
#
# Stages (each skipped when its output is complete; --force redoes everything):
#   1. raw   : train / val / test_2016_flickr .{src,tgt}.gz -> OUT/raw/{train,valid,test}.LANG
#              (raw, untokenized: OUT/raw/test.TGT is the reference for sacreBLEU)
#   2. tok   : sacremoses, aggressive dash splitting (-a), XML escaping off -> OUT/tok/
#   3. bpe   : subword-nmt learn-joint-bpe-and-vocab on train (both languages), apply-bpe
#              -> OUT/bpe/{codes,vocab.LANG,train.LANG,valid.LANG,test.LANG}
#   4. bin   : fairseq-preprocess --joined-dictionary -> OUT/data-bin/
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, PY, BIN, log, die, stage helpers
LOG_NAME=prepare_multi30k

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") [options]

Prepare Multi30k task 1 (train 29,000 / val 1,014 / test_2016_flickr 1,000) for fairseq.

Options:
  --src-dir DIR      folder with train.{en,de}.gz, val.{en,de}.gz, test_2016_flickr.{en,de}.gz
                     (default: ROOT/../shared/data/multi30k)
  --download         fetch those files from github.com/multi30k/dataset into OUT/orig first
                     (needs network; --src-dir is then ignored)
  --out DIR          output folder (default: ROOT/runs/multi30k/data)
  --bpe-merges N     joint BPE merge operations (default: 10000)
  --src-lang L       source language (default: en)
  --tgt-lang L       target language (default: de)
  --workers N        worker processes for tokenization and fairseq-preprocess (default: 1)
  --force            redo every stage
  -h, --help         this message

Outputs: OUT/raw (raw text, sacreBLEU references), OUT/tok (Moses-tokenized, for tokenized
BLEU), OUT/bpe (BPE codes and text), OUT/data-bin (binarized, joined dictionary).
EOF
}

SRC_DIR="$ROOT/../shared/data/multi30k"
OUT="$ROOT/runs/multi30k/data"
MERGES=10000
SRC=en
TGT=de
WORKERS=1
DOWNLOAD=0
FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --src-dir) SRC_DIR="${2:?--src-dir needs a value}"; shift 2 ;;
    --download) DOWNLOAD=1; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --bpe-merges) MERGES="${2:?--bpe-merges needs a value}"; shift 2 ;;
    --src-lang) SRC="${2:?}"; shift 2 ;;
    --tgt-lang) TGT="${2:?}"; shift 2 ;;
    --workers) WORKERS="${2:?}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument '$1'" ;;
  esac
done
[[ "$MERGES" =~ ^[0-9]+$ && "$MERGES" -gt 0 ]] || die "--bpe-merges must be a positive integer, got '$MERGES'"
[[ "$SRC" != "$TGT" ]] || die "--src-lang and --tgt-lang must differ"
require_tools subword-nmt fairseq-preprocess

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# split name in fairseq -> file name in the Multi30k release
declare -A NAMES=([train]=train [valid]=val [test]=test_2016_flickr)
SPLITS=(train valid test)
URL_BASE="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
PARAMS="src=$SRC tgt=$TGT merges=$MERGES"

# Stages are skipped when OUT/.done.STAGE records the same PARAMS (done_stage/mark_done in lib.sh).
if [[ $FORCE == 1 ]]; then rm -f "$OUT"/.done.*; fi
# A changed source file (fixed, or another copy) redoes every stage: OUT/.sources records the
# checksums of the files the stages were made from.
if [[ $DOWNLOAD == 0 && -d "$SRC_DIR" ]]; then
  SOURCES="$(cd "$SRC_DIR" && for split in "${SPLITS[@]}"; do for lang in "$SRC" "$TGT"; do
    cksum "${NAMES[$split]}.$lang.gz" 2>/dev/null || echo "missing ${NAMES[$split]}.$lang.gz"
  done; done | cksum | cut -d' ' -f1)"
  if [[ -f "$OUT/.done.raw" && -f "$OUT/.sources" && "$(cat "$OUT/.sources")" != "$SOURCES" ]]; then
    log "the files in $SRC_DIR changed since $OUT was prepared: redoing every stage"
    rm -f "$OUT"/.done.*
  fi
  echo "$SOURCES" > "$OUT/.sources"
fi

# ---- 1. raw ---------------------------------------------------------------------------------
if done_stage raw; then
  log "1/4 raw text: already in $OUT/raw, skipping"
else
  if [[ $DOWNLOAD == 1 ]]; then
    SRC_DIR="$OUT/orig"
    mkdir -p "$SRC_DIR"
    for split in "${SPLITS[@]}"; do
      for lang in "$SRC" "$TGT"; do
        file="${NAMES[$split]}.$lang.gz"
        if [[ -s "$SRC_DIR/$file" ]] && gzip -t "$SRC_DIR/$file" 2>/dev/null; then continue; fi
        log "downloading $URL_BASE/$file"
        if command -v curl >/dev/null; then
          curl -fsSL --retry 3 -o "$SRC_DIR/$file.part" "$URL_BASE/$file" || die "download of $URL_BASE/$file failed (no network? use --src-dir with local copies)"
        else
          wget -q -O "$SRC_DIR/$file.part" "$URL_BASE/$file" || die "download of $URL_BASE/$file failed (no network? use --src-dir with local copies)"
        fi
        gzip -t "$SRC_DIR/$file.part" || die "$URL_BASE/$file is not a gzip file"
        mv "$SRC_DIR/$file.part" "$SRC_DIR/$file"
      done
    done
  fi
  [[ -d "$SRC_DIR" ]] || die "Multi30k folder '$SRC_DIR' not found: pass --src-dir DIR (with train/val/test_2016_flickr.{$SRC,$TGT}.gz) or --download"
  log "1/4 raw text from $SRC_DIR -> $OUT/raw"
  mkdir -p "$OUT/raw"
  for split in "${SPLITS[@]}"; do
    for lang in "$SRC" "$TGT"; do
      file="$SRC_DIR/${NAMES[$split]}.$lang.gz"
      [[ -f "$file" ]] || die "missing $file: Multi30k needs ${NAMES[$split]}.$lang.gz in --src-dir (or use --download)"
      gzip -dc "$file" | sed 's/\r$//' > "$OUT/raw/$split.$lang"
      bad="$(LC_ALL=C.UTF-8 grep -naxv '.*' "$OUT/raw/$split.$lang" | head -1 | cut -d: -f1 || true)"
      [[ -z "$bad" ]] || die "$file: line $bad is not valid UTF-8; re-encode the file (e.g. iconv -f LATIN1 -t UTF-8) and rerun"
    done
    n_src=$(wc -l < "$OUT/raw/$split.$SRC"); n_tgt=$(wc -l < "$OUT/raw/$split.$TGT")
    [[ "$n_src" == "$n_tgt" ]] || die "$split: $n_src $SRC lines but $n_tgt $TGT lines in $SRC_DIR"
    [[ "$n_src" -gt 0 ]] || die "$split: no lines in $SRC_DIR/${NAMES[$split]}.$SRC.gz"
    log "  $split: $n_src sentence pairs"
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
