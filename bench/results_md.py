"""bench/RESULTS.md's sections: each benchmark rewrites its own, between `<!-- NAME:begin -->` and `<!-- NAME:end -->`."""
from __future__ import annotations

from pathlib import Path
from typing import List

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nFigures written by `python -m bench`; each section names its command, date and commit.\n"


def write_section(name: str, lines: List[str]) -> None:
    """Replaces section `name` of RESULTS.md with `lines` (appended at the end the first time)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *lines, end])
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else HEADER
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS_MD.write_text(text)
