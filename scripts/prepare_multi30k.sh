#!/usr/bin/env bash
# Prepare Multi30k (task 1) for fairseq: scripts/prepare_corpus.sh (Moses tokenization, joint
# BPE, fairseq-preprocess; each stage skipped when its output is complete) on the release's
# train / val / test_2016_flickr .{src,tgt}.gz, downloaded first with --download.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, log, die, claim_dir
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
  --src-lang L, --tgt-lang M   the language pair (default: en, de)
  --bpe-merges N, --workers N, --force   as in scripts/prepare_corpus.sh (default: 10000 merges,
                     1 worker), which does the rest and writes OUT/{raw,tok,bpe,data-bin}
  -h, --help         this message
EOF
}

SRC_DIR="$ROOT/../shared/data/multi30k"
OUT="$ROOT/runs/multi30k/data"
SRC=en
TGT=de
DOWNLOAD=0
PASS=()  # prepare_corpus.sh's own options, checked before anything is written
while [[ $# -gt 0 ]]; do
  case "$1" in
    --src-dir) SRC_DIR="${2:?--src-dir needs a value}"; shift 2 ;;
    --download) DOWNLOAD=1; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --src-lang) SRC="${2:?}"; shift 2 ;;
    --tgt-lang) TGT="${2:?}"; shift 2 ;;
    --bpe-merges|--workers)
      [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '${2:-}'"
      PASS+=("$1" "$2"); shift 2 ;;
    --force) PASS+=(--force); shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument '$1'" ;;
  esac
done
[[ "$SRC" != "$TGT" ]] || die "--src-lang and --tgt-lang must differ"
require_tools subword-nmt fairseq-preprocess

# split name in fairseq -> file name in the Multi30k release
declare -A NAMES=([train]=train [valid]=val [test]=test_2016_flickr)
URL_BASE="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
claim_dir "$OUT" .sources .done.raw orig
OUT="$(cd "$OUT" && pwd)"

if [[ $DOWNLOAD == 1 ]]; then
  SRC_DIR="$OUT/orig"
  mkdir -p "$SRC_DIR"
  for split in train valid test; do
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
for split in train valid test; do
  for lang in "$SRC" "$TGT"; do
    file="$SRC_DIR/${NAMES[$split]}.$lang.gz"
    [[ -f "$file" ]] || die "missing $file: Multi30k needs ${NAMES[$split]}.$lang.gz in --src-dir (or use --download)"
  done
done
exec bash "$ROOT/scripts/prepare_corpus.sh" --src-dir "$SRC_DIR" --src-lang "$SRC" --tgt-lang "$TGT" \
  --split-names "${NAMES[train]},${NAMES[valid]},${NAMES[test]}" --out "$OUT" "${PASS[@]}"
