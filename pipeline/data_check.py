"""Checks on `--data` before any component starts, so a wrong path costs one clear line, not a trace.

CsvExampleGen reads every file under the folder as CSV; a missing folder, an empty one, a binary file
or a CSV without the columns the schema requires would otherwise fail deep inside Beam.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List

from pipeline.errors import UserError


def required_columns(schema_path: Path, environment: str = "TRAINING") -> List[str]:
    """Columns the curated schema expects in `environment`'s data (TRAINING: with the label's source,
    SERVING: what a client sends)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(Path(schema_path).read_text(), schema_pb2.Schema())
    return [f.name for f in schema.feature if environment not in f.not_in_environment]


def check_data_dir(data: Path, schema_path: Path, environment: str = "TRAINING", file_ok: bool = False) -> List[Path]:
    """The CSV files under `data` (or `data` itself, a file, when `file_ok`), sorted; raises UserError
    naming what is wrong and what to do. The columns required are the schema's in `environment`."""
    hint = ("point --data at a CSV file with a header row, or a folder of them" if file_ok
            else "point --data at a folder of CSV files with a header row")
    data = Path(data)
    if not data.exists():
        raise UserError(f"--data {data}: no such {'file or folder' if file_ok else 'folder'}; {hint}")
    if data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif file_ok:
        files = [data]
    else:
        raise UserError(f"--data {data}: is a file, not a folder; {hint} (e.g. --data {data.parent})")
    if not files:
        raise UserError(f"--data {data}: the folder is empty; {hint}")
    expected = required_columns(schema_path, environment)
    for path in files:
        header = _header(path)
        if header is None:
            fix = hint if path == data else f"remove it from the folder or {hint}"
            raise UserError(f"--data {data}: {path.name} is not a CSV text file; {fix}")
        missing = [c for c in expected if c not in header]
        if missing:
            raise UserError(
                f"--data {data}: {path.name} lacks column(s) {', '.join(missing)} that the schema requires; "
                "fix the file, or edit trainer_module/features.py and trainer_module/schema/schema.pbtxt for new data"
            )
    return files


def _header(path: Path):
    """The header row of a CSV file, or None if the file is not UTF-8 CSV text with a header."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            sample = f.read(64 * 1024)
    except (UnicodeDecodeError, OSError):
        return None
    if not sample.strip() or "\x00" in sample:
        return None
    first = next(csv.reader([sample.splitlines()[0]]), [])
    return [c.strip() for c in first] if len(first) > 1 else None
