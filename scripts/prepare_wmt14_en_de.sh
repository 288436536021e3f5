#!/usr/bin/env bash
# Prepare WMT14 English-German for fairseq (the Roy et al. 2018 / fairseq NAT benchmark):
# train = Europarl v7 + Common Crawl + News Commentary v9 (4.5M pairs), valid = newstest2013,
# test = newstest2014 (full, 3,003 sentences). Same corpora as fairseq's
# examples/translation/prepare-wmt14en2de.sh --icml17, but with sacremoses instead of the Moses
# perl scripts, subword-nmt joint BPE (32k merges by default) and newstest2013 as validation.
#
# Stages (each skipped when its output is complete; --force redoes everything):
#   1. raw   : download + extract (or --local) -> OUT/raw/{train,valid,test}.LANG
#   2. tok   : sacremoses punctuation normalization + tokenization (-a, no escaping) -> OUT/tok/
#   3. bpe   : subword-nmt learn-joint-bpe-and-vocab on train, apply-bpe -> OUT/bpe/
#   4. clean : drop train/valid pairs with a BPE length outside [1, 250] or a length ratio
#              above 1.5 (clean-corpus-n.perl -ratio 1.5 ... 1 250) -> OUT/bpe/*.clean.*
#   5. bin   : fairseq-preprocess --joined-dictionary -> OUT/data-bin/
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, PY, BIN, log, die, stage helpers
LOG_NAME=prepare_wmt14 DIE_NAME=prepare_wmt14_en_de

usage() {
  cat >&2 <<EOF
Usage: $(basename "$0") [options]

Prepare WMT14 En-De for fairseq. Without --local it downloads about 1.5 GB (connected machine).

Options:
  --out DIR          output folder (default: ROOT/runs/wmt14_en_de/data)
  --local DIR        no download: use DIR's train10k.tok.{en,de} (already Moses-tokenized, XML-
                     escaped, no -a: they are unescaped and dash-split) and raw
                     newstest2013.{en,de} / newstest2014.{en,de}
                     (e.g. ROOT/../shared/data/wmt14-en-de-sample)
  --limit N          keep only the first N lines of every split (quick checks)
  --bpe-merges N     joint BPE merge operations (default: 32000)
  --ratio R          maximum length ratio kept in train/valid (default: 1.5)
  --max-len N        maximum BPE length kept in train/valid (default: 250)
  --workers N        worker processes for tokenization and fairseq-preprocess (default: nproc)
  --force            redo every stage
  -h, --help         this message

Outputs: OUT/raw/test.de (raw newstest2014 reference for sacreBLEU), OUT/tok/test.de (tokenized
reference), OUT/bpe/codes, OUT/data-bin (binarized, joined dictionary).
EOF
}

OUT="$ROOT/runs/wmt14_en_de/data"
LOCAL=""
LIMIT=0
MERGES=32000
RATIO=1.5
MAXLEN=250
WORKERS="$(nproc 2>/dev/null || echo 1)"
FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --local) LOCAL="${2:?--local needs a folder}"; shift 2 ;;
    --limit) LIMIT="${2:?--limit needs a value}"; shift 2 ;;
    --bpe-merges) MERGES="${2:?--bpe-merges needs a value}"; shift 2 ;;
    --ratio) RATIO="${2:?}"; shift 2 ;;
    --max-len) MAXLEN="${2:?}"; shift 2 ;;
    --workers) WORKERS="${2:?}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument '$1'" ;;
  esac
done
[[ "$MERGES" =~ ^[0-9]+$ && "$MERGES" -gt 0 ]] || die "--bpe-merges must be a positive integer, got '$MERGES'"
[[ "$LIMIT" =~ ^[0-9]+$ ]] || die "--limit must be a non-negative integer, got '$LIMIT'"
require_tools subword-nmt fairseq-preprocess

SRC=en
TGT=de
SPLITS=(train valid test)
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PARAMS="local=${LOCAL:+$(cd "$LOCAL" 2>/dev/null && pwd || echo "$LOCAL")} limit=$LIMIT merges=$MERGES ratio=$RATIO max_len=$MAXLEN"
# Stages are skipped when OUT/.done.STAGE records the same PARAMS (done_stage/mark_done in lib.sh).
if [[ $FORCE == 1 ]]; then rm -f "$OUT"/.done.*; fi
# First LIMIT lines (all when 0); reads its whole input, so no SIGPIPE under pipefail.
head_limit() { awk -v n="$LIMIT" 'n == 0 || NR <= n'; }

# Download mode: WMT14 corpora (fairseq's prepare-wmt14en2de.sh --icml17 list).
URLS=(
  "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz"
  "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz"
  "http://statmt.org/wmt14/training-parallel-nc-v9.tgz"
  "http://data.statmt.org/wmt17/translation-task/dev.tgz"
  "http://statmt.org/wmt14/test-full.tgz"
)
CORPORA=("training/europarl-v7.de-en" "commoncrawl.de-en" "training/news-commentary-v9.de-en")

# ---- 1. raw ---------------------------------------------------------------------------------
if done_stage raw; then
  log "1/5 raw text: already in $OUT/raw, skipping"
else
  mkdir -p "$OUT/raw"
  if [[ -n "$LOCAL" ]]; then
    [[ -d "$LOCAL" ]] || die "--local folder '$LOCAL' not found"
    for f in train10k.tok.en train10k.tok.de newstest2013.en newstest2013.de newstest2014.en newstest2014.de; do
      [[ -f "$LOCAL/$f" ]] || die "missing $LOCAL/$f: --local needs train10k.tok.{en,de} and newstest201{3,4}.{en,de}"
    done
    log "1/5 local data from $LOCAL (no download)$([[ $LIMIT -gt 0 ]] && echo ", first $LIMIT lines")"
    for lang in $SRC $TGT; do
      # Pre-tokenized training text: kept under raw/ as is; stage 2 unescapes and re-tokenizes it.
      head_limit < "$LOCAL/train10k.tok.$lang" > "$OUT/raw/train.$lang"
      head_limit < "$LOCAL/newstest2013.$lang" > "$OUT/raw/valid.$lang"
      head_limit < "$LOCAL/newstest2014.$lang" > "$OUT/raw/test.$lang"
    done
    echo "local" > "$OUT/raw/TRAIN_IS_TOKENIZED"
  else
    ORIG="$OUT/orig"
    mkdir -p "$ORIG"
    command -v wget >/dev/null || command -v curl >/dev/null || die "neither wget nor curl found"
    for url in "${URLS[@]}"; do
      file="$(basename "$url")"
      if [[ -f "$ORIG/$file" ]]; then
        log "  $file already downloaded"
      else
        log "  downloading $url"
        if command -v wget >/dev/null; then
          wget -q -O "$ORIG/$file.part" "$url" || die "download of $url failed (no network? on an offline machine use --local)"
        else
          curl -fsSL --retry 3 -o "$ORIG/$file.part" "$url" || die "download of $url failed (no network? on an offline machine use --local)"
        fi
        mv "$ORIG/$file.part" "$ORIG/$file"
      fi
      log "  extracting $file"
      tar -xzf "$ORIG/$file" -C "$ORIG"
    done
    log "1/5 raw text -> $OUT/raw"
    for lang in $SRC $TGT; do
      : > "$OUT/raw/train.$lang"
      for corpus in "${CORPORA[@]}"; do
        [[ -f "$ORIG/$corpus.$lang" ]] || die "missing $ORIG/$corpus.$lang after extraction"
        sed 's/\r$//' "$ORIG/$corpus.$lang" >> "$OUT/raw/train.$lang"
      done
      head_limit < "$ORIG/dev/newstest2013.$lang" > "$OUT/raw/valid.$lang"
      if [[ $lang == "$SRC" ]]; then t=src; else t=ref; fi
      grep '<seg id' "$ORIG/test-full/newstest2014-deen-$t.$lang.sgm" \
        | sed -e 's/<seg id="[0-9]*">\s*//g' -e 's/\s*<\/seg>\s*//g' | head_limit > "$OUT/raw/test.$lang"
      if [[ $LIMIT -gt 0 ]]; then head_limit < "$OUT/raw/train.$lang" > "$OUT/raw/train.$lang.tmp" && mv "$OUT/raw/train.$lang.tmp" "$OUT/raw/train.$lang"; fi
    done
    rm -f "$OUT/raw/TRAIN_IS_TOKENIZED"
  fi
  for split in "${SPLITS[@]}"; do count_pairs "$split"; done
  mark_done raw
fi

# ---- 2. tok ---------------------------------------------------------------------------------
if done_stage tok; then
  log "2/5 tokenized text: already in $OUT/tok, skipping"
else
  log "2/5 Moses normalization + tokenization (sacremoses, -a, no escaping, $WORKERS workers) -> $OUT/tok"
  mkdir -p "$OUT/tok"
  for lang in $SRC $TGT; do
    if [[ -f "$OUT/raw/TRAIN_IS_TOKENIZED" ]]; then
      # Moses output with XML escapes and without -a: unescape, split dashes (re-tokenizing is
      # not idempotent: "Parliament 's" would become "Parliament ' s").
      "$PY" "$ROOT/scripts/moses.py" tokenize -l $lang -a --pretokenized -j "$WORKERS" \
        "$OUT/raw/train.$lang" "$OUT/tok/train.$lang"
      files=()
    else
      files=("$OUT/raw/train.$lang" "$OUT/tok/train.$lang")
    fi
    "$PY" "$ROOT/scripts/moses.py" tokenize -l $lang -a --normalize -j "$WORKERS" \
      "${files[@]}" "$OUT/raw/valid.$lang" "$OUT/tok/valid.$lang" "$OUT/raw/test.$lang" "$OUT/tok/test.$lang"
  done
  check_tokenized
  mark_done tok
fi

# ---- 3. bpe ---------------------------------------------------------------------------------
if done_stage bpe; then
  log "3/5 BPE: already in $OUT/bpe, skipping"
else
  log "3/5 joint BPE, $MERGES merges (subword-nmt learn-joint-bpe-and-vocab) -> $OUT/bpe"
  joint_bpe --num-workers "$WORKERS"
  mark_done bpe
fi

# ---- 4. clean -------------------------------------------------------------------------------
if done_stage clean; then
  log "4/5 length filter: already done, skipping"
else
  log "4/5 length filter on train/valid: 1..$MAXLEN BPE tokens, ratio <= $RATIO"
  for split in train valid; do
    paste "$OUT/bpe/$split.$SRC" "$OUT/bpe/$split.$TGT" \
      | awk -F'\t' -v ratio="$RATIO" -v maxlen="$MAXLEN" \
          -v out_src="$OUT/bpe/$split.clean.$SRC" -v out_tgt="$OUT/bpe/$split.clean.$TGT" '
          { ns = split($1, a, " "); nt = split($2, b, " ");
            if (ns < 1 || nt < 1 || ns > maxlen || nt > maxlen || ns / nt > ratio || nt / ns > ratio) next;
            print $1 > out_src; print $2 > out_tgt; kept++ }
          END { if (kept == 0) { printf "" > out_src; printf "" > out_tgt } }'
    kept=$(wc -l < "$OUT/bpe/$split.clean.$SRC")
    log "  $split: kept $kept of $(wc -l < "$OUT/bpe/$split.$SRC") pairs"
    [[ "$kept" -gt 0 ]] || die "$split: the length filter removed every pair (check --ratio/--max-len)"
  done
  mark_done clean
fi

# ---- 5. bin ---------------------------------------------------------------------------------
if done_stage bin; then
  log "5/5 binarized data: already in $OUT/data-bin, skipping"
else
  log "5/5 fairseq-preprocess --joined-dictionary -> $OUT/data-bin (log: $OUT/preprocess.log)"
  binarize_joined "$OUT/bpe/train.clean" "$OUT/bpe/valid.clean"
  mark_done bin
fi

log "done: $(wc -l < "$OUT/data-bin/dict.$SRC.txt") dictionary entries; data-bin: $OUT/data-bin"
log "  references: raw $OUT/raw/test.$TGT (sacreBLEU), tokenized $OUT/tok/test.$TGT (tokenized BLEU)"
