"""Read a fairseq-train log: its validations and its training wall time.

  python scripts/train_log.py wall TRAIN_LOG      seconds of training (prints nothing if no log)

A resumed training appends to the same log, and fairseq's own `wall` meter restarts (or stays
at 0) on resume, so every fairseq-train start (its config line) opens a segment that ends at its
last training line (trainer, checkpoint, train/valid summaries; not the next start's import-time
warnings), and the segments are summed: the time a machine was down between them is not counted.
Used by examples/multi30k/run.sh and scripts/ablations.py.
"""

import datetime
import re
import sys
from pathlib import Path

_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"
_VALID = re.compile(_STAMP + r" \| INFO \| valid \| (.*)$")
_TRAIN_LINE = re.compile(
    _STAMP
    + r" \| \w+ \| (fairseq_cli\.train|fairseq\.trainer|fairseq\.checkpoint_utils|train_inner|train|valid) \| (.)"
)


def parse_fields(text: str) -> dict:
    """'epoch 001 | valid on 'valid' subset | loss 9.1 | bleu 3.2' -> {'loss': 9.1, 'bleu': 3.2, ...}."""
    fields = {}
    for part in text.split(" | "):
        key, _, value = part.strip().rpartition(" ")
        try:
            fields[key] = float(value)
        except ValueError:
            continue
    return fields


def validations(log_text: str) -> list[dict]:
    """Every `valid` summary (resumed segments included), by update; a validation repeated by a
    resume (same num_updates) keeps its last copy."""
    by_update = {}
    for line in log_text.splitlines():
        match = _VALID.match(line)
        if match:
            fields = parse_fields(match.group(2))
            if "num_updates" in fields:
                by_update[int(fields["num_updates"])] = fields
    return [by_update[k] for k in sorted(by_update)]


def train_wall(log_text: str) -> int | None:
    """Training wall time (s) summed over the log's fairseq-train segments; None without any."""
    segments = []
    for line in log_text.splitlines():
        match = _TRAIN_LINE.match(line)
        if not match:
            continue
        stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
        if (
            match.group(2) == "fairseq_cli.train" and match.group(3) == "{"
        ) or not segments:
            segments.append([stamp, stamp])
        segments[-1][1] = stamp
    return (
        round(sum((end - start).total_seconds() for start, end in segments))
        if segments
        else None
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "wall":
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    log = Path(argv[1])
    if log.exists():
        wall = train_wall(log.read_text(encoding="utf-8", errors="replace"))
        if wall is not None:
            print(wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
