"""Quarters of the taxi data as spans, through the real pipeline and the real CLI (one process per run).

Replay: 2013Q1 and 2013Q2 in one `run` (two pipeline runs), then a 2013Q3 whose fares are text in a
third of its rows (refused by the anomaly gate: exit 2, nothing pushed), then 2013Q4, which trains on
Q1 and Q2 only. Every figure checked is read back from ML Metadata and the components' outputs.
`python -m bench spans` replays all 16 quarters.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.spans import corrupt_fares
from pipeline import make_spans, run_results, run_view, spans
from pipeline.configs import default_data_root

pytestmark = pytest.mark.slow

QUARTERS = ("2013-01-01", "2013-04-01", "2013-07-01", "2013-10-01")


def _run(data: Path, home: Path) -> subprocess.CompletedProcess:
    # --allow-drift: quarter-to-quarter changes of the company mix cross the drift bar (calibrated on
    # 4,000-row samples); the drift is still reported. The corrupt quarter is refused by the anomaly gate.
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--data", str(data), "--home", str(home),
                           "--allow-drift"], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    quarters = tmp_path_factory.mktemp("quarters")
    counts = make_spans.split(default_data_root() / "data.csv", quarters, "quarter", make_spans.DEFAULT_COLUMN)
    data, home = tmp_path_factory.mktemp("spans"), tmp_path_factory.mktemp("home")
    steps = []

    def add(name, corrupt=False):
        (data / name).mkdir()
        (data / name / "data.csv").write_bytes((quarters / name / "data.csv").read_bytes())
        if corrupt:
            corrupt_fares(data / name / "data.csv")

    add(QUARTERS[0])
    add(QUARTERS[1])
    steps.append(_run(data, home))
    versions_before_q3 = _versions(home)
    add(QUARTERS[2], corrupt=True)
    steps.append(_run(data, home))
    versions_after_q3 = _versions(home)
    add(QUARTERS[3])
    steps.append(_run(data, home))
    return {"home": home, "counts": counts, "steps": steps, "versions": (versions_before_q3, versions_after_q3)}


def _versions(home: Path):
    folder = home / "serving" / "taxi"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _runs_by_span(home: Path):
    """span folder name -> the run view of the run that ingested it (oldest first)."""
    store = run_results.connect(home / "metadata.db")
    found = {}
    for run_id in reversed(run_results.run_ids(store, limit=100)):
        view = run_view.load(home / "metadata.db", run_id, home / "pipeline_root")
        examples = view.nodes["CsvExampleGen"].output("examples")
        from components.mlmd_properties import span_of

        found[spans.label(span_of(examples), spans.DATE_LAYOUT[0])] = view
    return found


def test_each_run_ingests_only_its_new_span_every_row_of_it(replay):
    runs = _runs_by_span(replay["home"])
    assert list(runs) == list(QUARTERS)
    for quarter, view in runs.items():
        assert sum(view.rows.values()) == replay["counts"][quarter], quarter


def test_the_corrupt_quarter_is_refused_and_nothing_is_pushed_for_it(replay):
    first, refused, last = replay["steps"]
    assert first.returncode in (0, 1), first.stderr[-2000:]
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "span 2013-07-01 refused" in refused.stderr and "fare" in refused.stderr
    before, after = replay["versions"]
    assert before and after == before
    view = _runs_by_span(replay["home"])["2013-07-01"]
    assert view.state("AnomaliesGate") == "FAILED" and "Trainer" not in view.nodes  # Transform ran beside the gate
    assert last.returncode in (0, 1), last.stderr[-2000:]


def test_the_next_quarter_trains_on_the_accepted_quarters_judged_on_all_of_its_own(replay):
    view = _runs_by_span(replay["home"])["2013-10-01"]
    counts = replay["counts"]
    # The window: Q1 and Q2 whole (both splits), not the refused Q3.
    assert view.training.train_rows == counts["2013-01-01"] + counts["2013-04-01"]
    assert int(view.overall["example_count"]) == counts["2013-10-01"]


def test_transform_reuses_the_analysis_of_the_quarters_it_analysed_before(replay):
    runs = _runs_by_span(replay["home"])
    # Q2's run trained on Q1 (both splits, analysed then). Q3's run, refused by its gate, still analysed its window
    # (Q1 and Q2) beside the gate: Transform does not wait for the checks (pipeline/concurrent_runner.py).
    # Q4's run trains on Q1 and Q2: every dataset from the cache.
    assert runs["2013-07-01"].analysis_reuse == "reused 2 of 4 datasets"
    assert runs["2013-10-01"].analysis_reuse == "reused 4 of 4 datasets"
    log = max((replay["home"] / "logs").glob("run-*.log"), key=lambda p: p.stat().st_mtime)
    assert "analyzer cache: reused 4 of 4 datasets (examples-" in log.read_text()


def test_the_trainer_warm_starts_from_the_served_model_and_starts_lower(replay):
    runs = _runs_by_span(replay["home"])
    first, later = runs["2013-01-01"].training, runs["2013-10-01"].training
    assert first.warm_start["warm_start"] is False
    assert later.warm_start["warm_start"] is True
    assert later.warm_start["rows_carried"] > 0.9 * later.warm_start["rows"]
    assert later.steps < first.steps  # half a cold start's steps

    def first_loss(view):
        return json.loads((Path(view.model_run_uri) / "history.json").read_text())["loss"][0]

    # The first stretch of training starts from a model that already fits: its loss is well below a
    # cold start's first stretch (the first quarter's run).
    assert first_loss(runs["2013-10-01"]) < 0.8 * first_loss(runs["2013-01-01"])
