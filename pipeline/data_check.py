"""Checks on `--data` before any component starts, so a wrong path costs one clear line, not a trace.

CsvExampleGen reads every file under the folder as CSV; a missing folder, an empty one, a binary file
or a CSV without the columns the schema requires would otherwise fail deep inside Beam.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List

from pipeline.errors import UserError


def required_columns(schema_path: Path) -> List[str]:
    """Columns the curated schema expects in training data (every feature present in TRAINING)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(Path(schema_path).read_text(), schema_pb2.Schema())
    return [f.name for f in schema.feature if "TRAINING" not in f.not_in_environment]


def check_data_dir(data: Path, schema_path: Path) -> List[Path]:
    """The CSV files under `data`; raises UserError naming what is wrong and what to do."""
    hint = "point --data at a folder of CSV files with a header row"
    data = Path(data)
    if not data.exists():
        raise UserError(f"--data {data}: no such folder; {hint}")
    if not data.is_dir():
        raise UserError(f"--data {data}: is a file, not a folder; {hint} (e.g. --data {data.parent})")
    files = sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"--data {data}: the folder is empty; {hint}")
    expected = required_columns(schema_path)
    for path in files:
        header = _header(path)
        if header is None:
            raise UserError(f"--data {data}: {path.name} is not a CSV text file; remove it from the folder or {hint}")
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
