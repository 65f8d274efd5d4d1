"""bench/scale's data: deterministic, taxi-like (the default sample's columns and types), jittered."""
import csv

from bench.scale import generate
from pipeline.configs import default_data_root


def test_generated_data_is_deterministic_and_keeps_the_columns_types(tmp_path):
    a = generate(3000, tmp_path / "a" / "data.csv")
    b = generate(3000, tmp_path / "b" / "data.csv")
    assert a.read_bytes() == b.read_bytes()
    with open(a, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(default_data_root() / "data.csv", newline="") as f:
        source = list(csv.DictReader(f))
    assert len(rows) == 3000 and list(rows[0]) == list(source[0])
    for name in ("trip_seconds", "trip_start_hour", "pickup_community_area"):  # integer columns stay integers
        assert all(r[name] == "" or r[name].lstrip("-").isdigit() for r in rows), name
    assert {r["payment_type"] for r in rows} <= {r["payment_type"] for r in source}
    fares = {r["fare"] for r in source}
    assert sum(r["fare"] not in fares for r in rows) > 1000  # jittered, not copies
