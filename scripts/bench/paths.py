"""Paths in result files: relative to the project root, never an absolute path of the machine
that wrote them, so that a committed result means the same on every checkout."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# An absolute path inside a string: a "/" that starts a word (after a space, "=", ":", a quote,
# a bracket, ...) followed by at least two components. "65.7/41.6" (BLEU's n-gram precisions),
# "ms/sent." and "http://..." are not matched.
_ABSOLUTE = re.compile(r"(?<![\w.~/-])/[\w.+-]+(?:/[\w.+-]*)+")


def project_relative(path) -> str:
    """``path`` relative to the project root (``runs/x.pt``, ``../shared/data``): a relative
    ``path`` is taken from the current folder, as the user typed it."""
    return os.path.relpath(os.path.abspath(path), ROOT)


def from_project(path) -> str:
    """The absolute form of a path a result file recorded (relative to the project root, or
    absolute in files written before paths were relative): the inverse of
    ``project_relative``, for comparing a recorded path with one given now."""
    return os.path.normpath(os.path.join(ROOT, path))


def relative_paths(value):
    """``value`` (a result: dicts, lists and strings) with every absolute path in its strings,
    whole (``"/a/b.pt"``) or inside a command (``"NAME=task:/a/b.pt:beam=4"``), made relative
    to the project root.

    >>> relative_paths({"checkpoint": str(ROOT / "runs/a.pt"), "bleu": 30.1})
    {'checkpoint': 'runs/a.pt', 'bleu': 30.1}
    """
    if isinstance(value, dict):
        return {key: relative_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(item) for item in value]
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda match: project_relative(match.group(0)), value)
    return value
