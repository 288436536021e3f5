"""The benchmark's own output files: it writes over them (or adds to its results file) and
over nothing else, such as a checkpoint given as --json by mistake (issue 42)."""

import json
from pathlib import Path

MARKDOWN_TITLE = b"# Benchmark\n"  # report.markdown's first line
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_WRITER = b"Matplotlib"  # the Software text chunk matplotlib puts after the header
KINDS = {
    "json": 'a benchmark results file (a JSON object with "benchmark" and "models")',
    "md": "the benchmark's Markdown table (its first line is '# Benchmark')",
    "png": "a plot the benchmark drew (a PNG from matplotlib)",
}


def read_results(path: Path) -> dict | None:
    """The results the benchmark wrote to ``path``; None when there is no such file.

    Raises:
        ValueError: ``path`` is something else (its message says what).
    """
    if not path.exists():
        return None
    problem = f"not {KINDS['json']}"
    if not _head(path).lstrip().startswith(b"{"):  # a checkpoint is not read whole
        raise ValueError(problem)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError, JSONDecodeError
        raise ValueError(f"{problem}: {err}") from None
    if not (isinstance(data, dict) and "benchmark" in data and "models" in data):
        raise ValueError(problem)
    return data


def foreign(kind: str, path: Path) -> str | None:
    """Why the existing ``path`` given as --json/--md/--png (``kind``) is not the
    benchmark's own file of that kind; None when it is, or when there is no file."""
    if not path.exists():
        return None
    if kind == "json":
        try:
            read_results(path)
        except ValueError as err:
            return str(err)
        return None
    head = _head(path)
    if kind == "md" and head.startswith(MARKDOWN_TITLE):
        return None
    if kind == "png" and head.startswith(PNG_SIGNATURE) and PNG_WRITER in head:
        return None
    return f"not {KINDS[kind]}"


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError:  # a folder, unreadable: not ours
        return b""
