"""`taxi-pipeline make-spans`: one CSV file into dated span folders by a timestamp column.

    taxi-pipeline make-spans --csv trips.csv --out spans/ --by quarter

writes `spans/2013-01-01/data.csv`, `spans/2013-04-01/data.csv`, ... (the period's first day: TFX's
`{YYYY}-{MM}-{DD}` layout, which `run --data spans/` reads one span per run). Rows keep their order
and their header; every row lands in exactly one span (counts are checked and printed). The file is
read as a stream, so its size is bounded by the disk, not the memory.
"""
from __future__ import annotations

import argparse
import csv
import datetime
from pathlib import Path
from typing import Dict, TextIO, Tuple

from pipeline.errors import UserError

PERIODS = ("day", "month", "quarter", "year")
DEFAULT_COLUMN = "trip_start_timestamp"  # the taxi data's trip start, in seconds since the epoch (UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, required=True, help="the CSV file to split (with a header row)")
    parser.add_argument("--out", type=Path, required=True, help="where the span folders go (created)")
    parser.add_argument("--by", choices=PERIODS, default="quarter", help="one span per period (default quarter)")
    parser.add_argument("--column", default=DEFAULT_COLUMN,
                        help=f"the timestamp column: seconds since the epoch, or an ISO date/time (default {DEFAULT_COLUMN})")


def main(args) -> int:
    counts = split(args.csv, args.out, args.by, args.column)
    for folder, rows in sorted(counts.items()):
        print(f"  {folder}  {rows:>9,} rows")
    print(f"{sum(counts.values()):,} rows of {args.csv} in {len(counts)} spans under {args.out}")
    return 0


def period_start(value: str, by: str) -> datetime.date:
    """The first day of the period holding `value` (epoch seconds, UTC, or ISO 8601)."""
    try:
        moment = datetime.datetime.fromtimestamp(float(value), tz=datetime.timezone.utc)
    except ValueError:
        moment = datetime.datetime.fromisoformat(value.strip())
    day = moment.date()
    if by == "day":
        return day
    if by == "month":
        return day.replace(day=1)
    if by == "quarter":
        return datetime.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return datetime.date(day.year, 1, 1)


def split(source: Path, out: Path, by: str, column: str) -> Dict[str, int]:
    """Writes one `<out>/<YYYY-MM-DD>/data.csv` per period; returns rows per folder. UserError on bad input."""
    if not source.is_file():
        raise UserError(f"--csv {source}: no such file")
    written: Dict[str, Tuple[TextIO, csv.writer]] = {}
    counts: Dict[str, int] = {}
    try:
        with open(source, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or column not in header:
                raise UserError(f"--csv {source}: no column {column!r} in its header (--column names the timestamp)")
            index = header.index(column)
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                value = row[index] if index < len(row) else ""
                try:
                    folder = period_start(value, by).isoformat()
                except (ValueError, OverflowError, OSError):
                    raise UserError(f"--csv {source} line {line}: {column} is {value!r}, not a time "
                                    "(seconds since the epoch or ISO 8601); fix or drop the row") from None
                if folder not in written:
                    path = out / folder / "data.csv"
                    if path.exists():
                        raise UserError(f"--out {out}: {path} exists; pass an empty folder (nothing is overwritten)")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    handle = open(path, "w", newline="", encoding="utf-8")
                    written[folder] = (handle, csv.writer(handle, lineterminator="\n"))
                    written[folder][1].writerow(header)
                    counts[folder] = 0
                written[folder][1].writerow(row)
                counts[folder] += 1
    except UnicodeDecodeError:
        raise UserError(f"--csv {source}: not UTF-8 CSV text") from None
    finally:
        for handle, _ in written.values():
            handle.close()
    return counts
