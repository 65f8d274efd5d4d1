"""Opening a home's ML Metadata for reading, and the few run facts `status` and `report` both show.

`run_view` reads one run; this module adds what a reader of *any* home needs first: telling a
missing home, a home with no runs yet and a corrupt database apart (each gets its own one-line
message instead of an MLMD trace), finding runs by id, and what the serving folder holds.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

from ml_metadata.proto import metadata_store_pb2

from pipeline import run_results
from pipeline.errors import UserError

RUN_CONTEXT_TYPE = "pipeline_run"


def metadata_store(home: Path):
    """The read-only MLMD store of `home`, or None when no run has written one yet.

    Raises UserError for a home that does not exist, is a file, or holds a database MLMD cannot read.
    """
    home = Path(home)
    if not home.exists():
        raise UserError(f"home {home} does not exist; pass the --home a pipeline ran in, or run `taxi-pipeline run --home {home}`")
    if not home.is_dir():
        raise UserError(f"home {home} is a file, not a folder; pass the folder `taxi-pipeline run --home` wrote to")
    path = home / "metadata.db"
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return None  # a fresh home (or one whose first run died before recording anything)
    try:
        store = run_results.connect(path)
        store.get_contexts_by_type(RUN_CONTEXT_TYPE)  # MLMD opens lazily: make a bad file fail here
    except Exception as err:  # MLMD raises RuntimeError with a SQL dump; keep its first words only
        if "locked" in str(err) or "Concurrent writes" in str(err):  # a run holds the write lock right now
            raise UserError(f"{path} is locked by a pipeline run that is writing to it; try again in a moment") from None
        raise UserError(f"{path} is not a readable ML Metadata database ({_short(err)}); "
                        "move it aside and run `taxi-pipeline run` again, or pass another --home") from None
    return store


def runs(store, limit: int) -> List[metadata_store_pb2.Context]:
    """The newest `limit` pipeline-run contexts, newest first."""
    contexts = store.get_contexts_by_type(RUN_CONTEXT_TYPE)
    contexts.sort(key=lambda c: (c.create_time_since_epoch, c.id), reverse=True)
    return contexts[:limit]


def find_run(store, home: Path, run_id: Optional[str]):
    """The context of `run_id` (default: the newest run); UserError when there is no such run."""
    if run_id is None:
        newest = runs(store, 1)
        if not newest:
            raise UserError(f"no runs yet in {home}: run `taxi-pipeline run --home {home}` first")
        return newest[0]
    context = store.get_context_by_type_and_name(RUN_CONTEXT_TYPE, run_id)
    if context is None:
        known = [c.name for c in runs(store, 3)]
        hint = f"the newest are {', '.join(known)}" if known else "there are no runs yet"
        raise UserError(f"no run {run_id!r} in {home / 'metadata.db'}: {hint} (see `taxi-pipeline status`)")
    return context


def serving_versions(model_dir: Path) -> List[int]:
    """Numeric version folders under `<serving_base>/<model>`, newest first (what a model server sees)."""
    from serving.config.model_config import versions_on_disk

    return sorted(versions_on_disk(str(model_dir)), reverse=True)


def _short(err: Exception) -> str:
    """SQLite's own words from MLMD's "Error when executing query: <reason> query: <SQL>" messages."""
    text = " ".join(str(err).split()) or type(err).__name__
    match = re.match(r"Error when executing query: (.*?) query:", text)
    return (match.group(1) if match else text)[:160]
