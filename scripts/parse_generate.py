"""Summarise a fairseq-generate log: BLEU, sentences translated, latency per sentence.

fairseq-generate's timer wraps only the inference step (model loading, detokenization and
scoring are excluded); at ``--batch-size 1`` its total divided by the number of sentences is
the per-sentence latency.

Usage:
    python scripts/parse_generate.py generate.log [--json result.json]
"""

import argparse
import json
import re
import sys
from pathlib import Path

TRANSLATED = re.compile(
    r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s \(([\d.]+) sentences/s"
)
BLEU = re.compile(r"Generate \S+ with beam=\d+: (BLEU4?) = ([\d.]+)")


def parse(text: str) -> dict:
    """Returns {"sentences", "tokens", "seconds", "ms_per_sentence", "bleu", "bleu_line"}.

    Raises:
        ValueError: if the log has no "Translated N sentences" line (generation failed).
    """
    match = TRANSLATED.search(text)
    if match is None:
        raise ValueError(
            "no 'Translated N sentences' line: did fairseq-generate fail? see the log"
        )
    sentences = int(match.group(1).replace(",", ""))
    seconds = float(match.group(3))
    result = {
        "sentences": sentences,
        "tokens": int(match.group(2).replace(",", "")),
        "seconds": seconds,
        "ms_per_sentence": 1000.0 * seconds / max(sentences, 1),
        "hypotheses": len(re.findall(r"^H-\d+\t", text, flags=re.M)),
    }
    bleu = BLEU.search(text)
    if bleu is not None:
        result["bleu"] = float(bleu.group(2))
        result["bleu_line"] = bleu.group(0) + text[bleu.end() :].split("\n", 1)[0]
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "log", type=Path, help="fairseq-generate output (stdout and stderr)"
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        result = parse(args.log.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        sys.exit(f"parse_generate: {args.log}: {err}")
    print(
        f"translated {result['sentences']} sentences in {result['seconds']:.1f}s: "
        f"{result['ms_per_sentence']:.1f} ms/sentence"
    )
    if "bleu" in result:
        print(f"BLEU {result['bleu']:.2f}  ({result['bleu_line']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
