"""Helpers shared by tests (importable from any test module, unlike conftest fixtures)."""
from __future__ import annotations

import csv
from pathlib import Path

SAMPLE_ROWS = 4000


def write_sample(path: Path, rows: int = SAMPLE_ROWS, skip: int = 0) -> Path:
    """The first `rows` rows (after `skip`) of the taxi CSV shipped in the tfx wheel, header included."""
    from pipeline.configs import default_data_root

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(default_data_root() / "data.csv", newline="") as src, open(path, "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for i, row in enumerate(reader):
            if i >= skip + rows:
                break
            if i >= skip:
                writer.writerow(row)
    return path
