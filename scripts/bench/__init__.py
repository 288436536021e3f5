"""The parts of ``scripts/benchmark.py``: specs (what to load), measure (one model), report
(rows, Markdown, plot)."""
