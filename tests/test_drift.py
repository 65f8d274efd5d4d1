"""Drift between runs: a run on shifted data stops before training, naming the drifted features.

The shared run (tests/conftest.py) is the first run: its model is the latest blessed one and carries
the statistics of its training data. The second run sees the same 4,000 rows with fares x1.5 and half
of the cash rides left out (a payment mix with more cards), in a copy of the shared home (so the shared home and its
serving directory stay as the other tests expect them).
"""
from __future__ import annotations

import csv
import random
import re
import shutil

import pytest

from pipeline import run_results, run_view
from pipeline.errors import UserError
from pipeline.local_runner import run_pipeline


def write_shifted(source, target, seed: int = 0) -> int:
    """The rows of `source` with fares x1.5 and half of the cash rides left out (a payment mix with more
    cards: every row stays a real ride, so tips still follow the payment type); returns the row count."""
    rng = random.Random(seed)
    with open(source, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["payment_type"] != "Cash" or rng.random() < 0.5]
    for row in rows:
        if row["fare"]:
            row["fare"] = f"{float(row['fare']) * 1.5:.2f}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


@pytest.fixture(scope="module")
def shifted_home(taxi_pipeline_result, taxi_sample_dir, tmp_path_factory):
    config, _ = taxi_pipeline_result
    home = tmp_path_factory.mktemp("drift-home")
    shutil.copy2(config.metadata_path, home / "metadata.db")
    shutil.copytree(config.serving_base, home / "serving")
    data = tmp_path_factory.mktemp("shifted-data")
    write_shifted(taxi_sample_dir / "data.csv", data / "data.csv")
    return config.replace(home=home, data_root=data)


def test_first_run_has_no_drift_report_to_fail_on(taxi_pipeline_result):
    _, result = taxi_pipeline_result
    from components.drift_check import load_report

    report = load_report(result.nodes["DriftCheck"].output_uri("drift"))
    assert report is not None and report["drifted"] == []


def test_shifted_data_stops_before_training_naming_the_drifted_features(shifted_home):
    versions_before = sorted(p.name for p in shifted_home.serving_model_dir.iterdir())
    with pytest.raises(UserError) as caught:
        run_pipeline(shifted_home)
    message = str(caught.value)
    assert "DriftCheck failed" in message
    found = dict(re.findall(r"(\w+) \((?:L-infinity|Jensen-Shannon) ([0-9.]+) > [0-9.]+\)", message))
    assert set(found) == {"fare", "payment_type"}, message
    assert float(found["payment_type"]) > 0.05 and float(found["fare"]) > 0.1
    result = run_results.load_run(shifted_home.metadata_path)
    assert result.nodes["DriftCheck"].state == "FAILED"
    assert "Trainer" not in result.nodes  # Transform may have run beside the check (pipeline/concurrent_runner.py)
    # The view finds the report the failed check wrote (ML Metadata records no outputs of a failed execution).
    view = run_view.load(shifted_home.metadata_path, pipeline_root=shifted_home.pipeline_root)
    assert view.drift is not None and view.drift.stopped
    assert sorted(f.feature for f in view.drift.drifted) == ["fare", "payment_type"]
    assert sorted(p.name for p in shifted_home.serving_model_dir.iterdir()) == versions_before


def test_the_same_data_with_the_check_relaxed_trains_and_pushes(shifted_home):
    from components.drift_check import load_report

    relaxed = shifted_home.replace(fail_on_drift=False)
    result = run_pipeline(relaxed)
    report = load_report(result.nodes["DriftCheck"].output_uri("drift"))
    assert sorted(report["drifted"]) == ["fare", "payment_type"]
    distances = {r["feature"]: r["distance"] for r in report["features"]}
    # Untouched features barely move (only through the hash split, which hashes whole rows).
    assert distances["company"] < 0.02
    # Transform ran beside the check in the refused run (pipeline/concurrent_runner.py): MLMD's cache may give it.
    assert result.nodes["Transform"].state in ("COMPLETE", "CACHED") and result.nodes["Trainer"].state == "COMPLETE"
    assert result.push is not None and result.push.destination.startswith(str(relaxed.serving_model_dir))
    assert result.drift is not None and not result.drift.stopped and len(result.drift.drifted) == 2


def test_status_and_report_show_the_drift_table_and_the_tflite_comparison(shifted_home):
    from pipeline import report, status

    text = status.render(shifted_home, 2)
    # Both runs on the shifted data: the relaxed one (newest) and the one the check stopped.
    assert text.count("drift: fare Jensen-Shannon") == 2, text
    assert "payment_type L-infinity" in text and "tflite: dynamic-range int8 accuracy" in text
    html = report.build(shifted_home).read_text()
    for section_id in ('id="drift-table"', 'id="tflite-table"', 'id="skew"'):
        assert section_id in html
    drift = html[html.index('id="drift"'):html.index('id="drift-table"')]
    assert "data:image/png;base64," in drift  # the drift table comes with its plot
    tflite = html[html.index('id="tflite"'):html.index('id="tflite-table"')]
    assert "data:image/png;base64," in tflite
