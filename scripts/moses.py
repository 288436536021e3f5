"""Moses tokenization / detokenization with sacremoses, as a filter (stdin -> stdout).

Used by the data-preparation scripts. sacremoses' own command line always XML-escapes
(its ``-x`` flag defaults to on and cannot be switched off), so the pipelines call this instead:

    python scripts/moses.py tokenize -l de -a < raw.de > tok.de        # escape off (default)
    python scripts/moses.py tokenize -l en -a --normalize -j 4 < raw > tok   # WMT: punctuation
    python scripts/moses.py tokenize -l en -a --pretokenized < tok > tok2  # Moses output made
                          # with escaping and without -a: unescape (&apos; -> ') + dash splits only
    python scripts/moses.py detokenize -l de < tok.de > detok.de
    python scripts/moses.py tokenize -l de -a in1 out1 in2 out2   # files: one start-up for all

Line count is preserved exactly (an empty line stays an empty line).
"""

import argparse
import html
import sys
from functools import partial
from multiprocessing import Pool

_TOKENIZER = None
_NORMALIZER = None


def _init(lang: str, normalize: bool):
    global _TOKENIZER, _NORMALIZER
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    _TOKENIZER = MosesTokenizer(lang=lang)
    _NORMALIZER = MosesPunctNormalizer(lang=lang) if normalize else None


def _tokenize(
    line: str,
    aggressive: bool,
    escape: bool,
    unescape_input: bool,
    pretokenized: bool = False,
) -> str:
    line = line.rstrip("\n")
    if unescape_input or pretokenized:
        line = html.unescape(line)
    if (
        pretokenized
    ):  # already tokenized: re-tokenizing is not idempotent (' s), split dashes only
        if aggressive:
            regex, substitution = _TOKENIZER.AGGRESSIVE_HYPHEN_SPLIT
            line = regex.sub(substitution, line)
        return " ".join(line.split())
    if _NORMALIZER is not None:
        line = _NORMALIZER.normalize(line)
    if not line.strip():
        return ""
    return _TOKENIZER.tokenize(
        line, aggressive_dash_splits=aggressive, escape=escape, return_str=True
    )


def tokenize(args, stdin, stdout) -> int:
    if args.files:
        count = 0
        for src, dst in zip(args.files[::2], args.files[1::2]):
            with (
                open(
                    src, encoding="utf-8", errors="surrogateescape", newline="\n"
                ) as fin,
                open(dst, "w", encoding="utf-8", errors="surrogateescape") as fout,
            ):
                count += tokenize_stream(args, fin, fout)
        return count
    return tokenize_stream(args, stdin, stdout)


def tokenize_stream(args, stdin, stdout) -> int:
    func = partial(
        _tokenize,
        aggressive=args.aggressive,
        escape=args.escape,
        unescape_input=args.unescape_input,
        pretokenized=args.pretokenized,
    )
    count = 0
    if args.processes > 1:
        with Pool(
            args.processes, initializer=_init, initargs=(args.language, args.normalize)
        ) as pool:
            for out in pool.imap(func, stdin, chunksize=2000):
                stdout.write(out + "\n")
                count += 1
    else:
        _init(args.language, args.normalize)
        for line in stdin:
            stdout.write(func(line) + "\n")
            count += 1
    return count


def detokenize(args, stdin, stdout) -> int:
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=args.language)
    count = 0
    for line in stdin:
        stdout.write(detok.detokenize(line.split(), unescape=args.unescape) + "\n")
        count += 1
    return count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser(
        "tokenize", help="Moses tokenization (escape off unless --escape)"
    )
    tok.add_argument(
        "-l", "--language", required=True, help="language code, e.g. en, de"
    )
    tok.add_argument(
        "-a",
        "--aggressive",
        action="store_true",
        help="aggressive dash splitting (a-b -> a @-@ b), Moses -a",
    )
    tok.add_argument(
        "--escape",
        action="store_true",
        help="XML-escape special characters (Moses' default; off here)",
    )
    tok.add_argument(
        "--normalize",
        action="store_true",
        help="Moses punctuation normalization first (WMT recipes)",
    )
    tok.add_argument(
        "--unescape-input",
        action="store_true",
        help="HTML-unescape the input first (&apos; -> ')",
    )
    tok.add_argument(
        "--pretokenized",
        action="store_true",
        help="input is Moses output already: only HTML-unescape it and apply -a dash splits",
    )
    tok.add_argument(
        "-j", "--processes", type=int, default=1, help="worker processes (default 1)"
    )
    tok.add_argument(
        "files", nargs="*", help="INPUT OUTPUT pairs (default: stdin -> stdout)"
    )
    det = sub.add_parser(
        "detokenize", help="Moses detokenization (joins @-@ dash splits)"
    )
    det.add_argument("-l", "--language", required=True)
    det.add_argument(
        "--unescape", action="store_true", help="also XML-unescape (&amp; -> &)"
    )
    args = parser.parse_args(argv)
    if getattr(args, "files", None) and len(args.files) % 2:
        parser.error("files must come in INPUT OUTPUT pairs")
    with (
        open(
            sys.stdin.fileno(),
            encoding="utf-8",
            errors="surrogateescape",
            newline="\n",
            closefd=False,
        ) as stdin,
        open(
            sys.stdout.fileno(),
            "w",
            encoding="utf-8",
            errors="surrogateescape",
            closefd=False,
        ) as stdout,
    ):
        if args.command == "tokenize":
            tokenize(args, stdin, stdout)
        else:
            detokenize(args, stdin, stdout)


if __name__ == "__main__":
    main()
