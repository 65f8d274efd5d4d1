"""Data that breaks the schema stops the pipeline at the AnomaliesGate: nothing is trained or pushed."""
from __future__ import annotations

import csv

import pytest

from pipeline import configs
from pipeline.errors import UserError
from pipeline.local_runner import run_pipeline


def test_schema_drift_stops_before_transform(tmp_path):
    from tests_support import write_sample

    clean = write_sample(tmp_path / "clean.csv", rows=600)
    data = tmp_path / "data"
    data.mkdir()
    with open(clean, newline="") as src, open(data / "drifted.csv", "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        for i, row in enumerate(reader):
            if i % 3 == 0:
                row["payment_type"] = "Crypto"  # a new, frequent value outside the curated domain
            if i % 10 == 0:
                row["trip_start_hour"] = "27"  # out of the 0-23 range
            writer.writerow(row)

    config = configs.PipelineConfig(home=tmp_path / "home", data_root=data, train_steps=10, eval_steps=1)
    with pytest.raises(UserError) as raised:
        run_pipeline(config)
    message = str(raised.value)
    assert message.startswith("AnomaliesGate failed: DataAnomaliesError: the data does not match the schema")
    assert "payment_type" in message and "trip_start_hour" in message and "schema.pbtxt" in message
    assert "\n" not in message
    assert not list((tmp_path / "home" / "pipeline_root").glob("Transform*"))
    assert not list((tmp_path / "home" / "pipeline_root").glob("Trainer*"))
    assert not config.serving_model_dir.exists()
