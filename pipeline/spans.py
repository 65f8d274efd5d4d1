"""New data as spans: which span folders `--data` holds, which ML Metadata says were ingested, what is next.

A data folder holds either CSV files (one dataset: split by hash, as TFX's taxi example) or span folders,
one per period, in one of the layouts TFX's ExampleGen reads natively (`{SPAN}` or `{YYYY}-{MM}-{DD}` in
its input pattern; tfx/components/example_gen/utils.py):

    span-1/ span-2/ ...        SPAN_LAYOUT: the span is the number
    2016-01-01/ 2016-04-01/ ... DATE_LAYOUT: the span is the day's number since 1970-01-01, as TFX computes it

Each run ingests the oldest span newer than every span ingested so far (ExampleGen with a RangeConfig of
that one span), trains on the `window` newest accepted spans before it, and is judged on the whole new
span: train on the past, judge on the most recent. A span is *accepted* when its run's AnomaliesGate and
DriftCheck passed; a refused span is never trained on, and the next span goes on without it.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# (input pattern for ExampleGen, folder regex, folder name -> span): one home for each layout.
SPAN_LAYOUT = ("span-{SPAN}/*", re.compile(r"^span-(\d+)$"))
DATE_LAYOUT = ("{YYYY}-{MM}-{DD}/*", re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"))
LAYOUTS = (SPAN_LAYOUT, DATE_LAYOUT)
LAYOUT_HELP = "span folders span-1/, span-2/, ... or dated folders YYYY-MM-DD/ (TFX's {SPAN} and {YYYY}-{MM}-{DD})"

# The nodes whose success accepts a span (pipeline/pipeline.py's ids).
EXAMPLE_GEN = "CsvExampleGen"
GATES = ("AnomaliesGate", "DriftCheck")
PASSED = ("COMPLETE", "CACHED")


class SpanLayoutError(ValueError):
    """A data folder mixing layouts, or span folders beside loose CSV files."""


@dataclasses.dataclass(frozen=True)
class SpanFolders:
    """The span folders of one data folder: `pattern` is ExampleGen's input pattern for them."""

    pattern: str
    folders: Dict[int, Path]  # span -> folder

    @property
    def spans(self) -> List[int]:
        return sorted(self.folders)

    def label(self, span: int) -> str:
        return label(span, self.pattern)


def label(span: int, pattern: Optional[str]) -> str:
    """How a span is named in its layout: `span-3`, or the date `2014-01-01` of a dated folder."""
    if pattern == DATE_LAYOUT[0]:
        return (datetime.date(1970, 1, 1) + datetime.timedelta(days=span)).isoformat()
    return f"span-{span}"


def date_span(year: int, month: int, day: int) -> int:
    """TFX's span of a dated folder: days since 1970-01-01 (example_gen/utils.py date_to_span_number)."""
    return (datetime.date(year, month, day) - datetime.date(1970, 1, 1)).days


def discover(data: Path) -> Optional[SpanFolders]:
    """The span folders directly under `data`, or None when it holds no span folder (a plain dataset)."""
    data = Path(data)
    if not data.is_dir():
        return None
    children = [p for p in data.iterdir() if not p.name.startswith(".")]
    found: Dict[str, Dict[int, Path]] = {}
    for child in children:
        if not child.is_dir():
            continue
        for pattern, regex in LAYOUTS:
            match = regex.match(child.name)
            if match:
                groups = [int(g) for g in match.groups()]
                span = groups[0] if len(groups) == 1 else date_span(*groups)
                found.setdefault(pattern, {})[span] = child
    if not found:
        return None
    if len(found) > 1:
        raise SpanLayoutError(f"--data {data}: both span-N/ and YYYY-MM-DD/ folders; keep one layout per folder")
    loose = [p.name for p in children if p.is_file()]
    if loose:
        raise SpanLayoutError(f"--data {data}: files {', '.join(sorted(loose)[:3])} beside span folders; "
                              "move them into a span folder (only span folders are read)")
    (pattern, folders), = found.items()
    return SpanFolders(pattern, folders)


@dataclasses.dataclass(frozen=True)
class Ingested:
    """What ML Metadata says of one ingested span."""

    span: int
    accepted: bool  # its gates passed: it may be trained on
    run_id: str
    refused_by: Tuple[str, ...] = ()  # the gates that failed (GATES' names); empty when accepted or unfinished


def ingested(metadata_path: Path) -> Dict[int, Ingested]:
    """Every span an ExampleGen run wrote, by span; the newest run's record when a span ran twice."""
    from components.mlmd_properties import span_of
    from pipeline import run_results

    if not Path(metadata_path).exists():
        return {}
    absl = logging.getLogger("absl")  # MLMD's "store initialized" lines are not for the terminal
    level = absl.level
    absl.setLevel(logging.WARNING)
    try:
        store = run_results.connect(metadata_path)
        runs = [run_results.load_run(metadata_path, run_id)  # oldest first: a newer run of a span overrides
                for run_id in reversed(run_results.run_ids(store, limit=1_000_000))]
    finally:
        absl.setLevel(level)
    found: Dict[int, Ingested] = {}
    for run in runs:
        node = run.nodes.get(EXAMPLE_GEN) if run else None
        examples = node.output("examples") if node else None
        span = span_of(examples) if examples is not None else None
        if span is None:
            continue
        states = {gate: run.nodes[gate].state if gate in run.nodes else None for gate in GATES}
        accepted = all(state in PASSED for state in states.values())
        found[span] = Ingested(span, accepted, run.run_id, tuple(g for g, state in states.items() if state == "FAILED"))
    return found


def new_spans(folders: SpanFolders, history: Dict[int, Ingested], allowed: Tuple[str, ...] = ()) -> List[int]:
    """The spans newer than every ingested one, oldest first: what the next runs ingest, one each.

    `allowed`: the gates this run lets through (`--allow-drift`: DriftCheck). A span refused only by
    those, newer than the newest accepted span, runs again first: what its refusal told the user to do.
    """
    newest = max(history, default=None)
    todo = [span for span in folders.spans if newest is None or span > newest]
    newest_accepted = max((s for s, record in history.items() if record.accepted), default=None)
    retry = [s for s, record in history.items()
             if record.refused_by and set(record.refused_by) <= set(allowed) and s in folders.folders
             and (newest_accepted is None or s > newest_accepted)]
    return sorted(retry) + todo


def training_window(span: int, history: Dict[int, Ingested], window: int) -> Tuple[int, ...]:
    """The `window` newest accepted spans before `span`: what its run trains on.

    Empty for the first span of a home: that run trains on and is judged on its own hash split.
    """
    accepted = sorted(s for s, record in history.items() if record.accepted and s < span)
    return tuple(accepted[-window:]) if window > 0 else ()
