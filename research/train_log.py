"""Read a fairseq-train log: its validations and its training wall time.

  python research/train_log.py wall TRAIN_LOG      seconds of training (prints nothing if no log)

progress() says where a running training stands (research/ablations.py status).

A resumed training appends to the same log, and fairseq's own `wall` meter restarts (or stays
at 0) on resume, so every fairseq-train start (its config line) opens a segment that ends at its
last training line (trainer, checkpoint, train/valid summaries; not the next start's import-time
warnings), and the segments are summed: the time a machine was down between them is not counted.
Used by examples/multi30k/run.sh and research/ablations.py.
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


_INNER = re.compile(_STAMP + r" \| INFO \| train_inner \| .*?num_updates=(\d+)")
# fairseq names the first file it wrote; checkpoint_last.pt is written with every save.
_SAVED = re.compile(r"Saved checkpoint .+? \(epoch \d+ @ (\d+) updates")
_START = re.compile(r"\| fairseq_cli\.train \| \{")
_DONE = re.compile(r"\| fairseq_cli\.train \| done training in")


def _stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def progress(log_text: str) -> dict:
    """Where a training stands: ``updates`` (the last logged), ``saved`` (the updates in
    checkpoint_last.pt, where a rerun resumes), ``best_bleu`` / ``last_bleu`` (validation),
    ``finished`` (its last fairseq-train start ended: budget reached or stopped early), and
    ``sec_per_update`` from the first to the last logged update of its last start, validations
    included (None before two)."""
    updates = saved = 0
    finished = False
    first = last = None  # (time, updates) of the last start's logged updates
    for line in log_text.splitlines():
        if _START.search(line):
            first = last = None
            finished = False
            continue
        if _DONE.search(line):
            finished = True
            continue
        match = _INNER.match(line)
        if match:
            updates = int(match.group(2))
            last = (_stamp(match.group(1)), updates)
            first = first or last
            continue
        match = _SAVED.search(line)
        if match:
            saved = int(match.group(1))
    valid = validations(log_text)
    bleus = [v["bleu"] for v in valid if "bleu" in v]
    if valid:
        updates = max(updates, int(valid[-1]["num_updates"]))
    rate = None
    if first and last[1] > first[1]:
        rate = (last[0] - first[0]).total_seconds() / (last[1] - first[1])
    return {
        "updates": updates,
        "saved": saved,
        "best_bleu": max(bleus) if bleus else None,
        "last_bleu": bleus[-1] if bleus else None,
        "finished": finished,
        "sec_per_update": rate,
    }


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
