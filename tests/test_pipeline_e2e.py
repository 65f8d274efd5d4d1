"""End to end: the real pipeline (all TFX components, Beam in process) on a 4,000-row taxi sample."""
from __future__ import annotations

import io

import pytest

from pipeline import run_view, summary
from pipeline.local_runner import run_pipeline

COMPONENTS = [
    "CsvExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "AnomaliesGate", "DriftCheck", "Transform",
    "Trainer", "latest_blessed_model_resolver", "latest_hyperparameters", "Evaluator", "ServingValidator", "Pusher",
]


def test_every_component_ran_and_the_model_was_pushed(taxi_pipeline_result):
    config, result = taxi_pipeline_result
    assert sorted(result.nodes) == sorted(COMPONENTS)
    assert {n: r.state for n, r in result.nodes.items() if r.state != "COMPLETE"} == {}
    pushed = result.nodes["Pusher"].output("pushed_model")
    assert pushed.custom_properties["pushed"].int_value == 1
    destination = pushed.custom_properties["pushed_destination"].string_value
    version_dir = config.serving_model_dir / pushed.custom_properties["pushed_version"].string_value
    assert destination == str(version_dir)
    assert (version_dir / "saved_model.pb").exists() and (version_dir / "variables").is_dir()
    # Only complete, numeric versions are visible to model servers: no staging directory is left behind.
    assert [p.name for p in config.serving_model_dir.iterdir() if not p.name.isdigit()] == []
    # No Beam component packaged TFX for its workers (pipeline/beam_runners.py: beam_steps).
    log = "\n".join(p.read_text(errors="replace") for p in config.log_dir.glob("run-*.log"))
    assert "Beam workers run this installation" in log and "tfx_ephemeral" not in log


def test_splits_follow_the_two_to_one_hash_split(taxi_pipeline_result):
    _, result = taxi_pipeline_result
    counts = run_view.split_row_counts(result.nodes["StatisticsGen"].output("statistics"))
    assert sum(counts.values()) == 4000
    assert 0.6 < counts["train"] / 4000 < 0.73


def test_summary_reports_the_evaluators_own_metrics(taxi_pipeline_result):
    config, result = taxi_pipeline_result
    metrics = run_view.metrics_by_slice(result.nodes["Evaluator"].output_uri("evaluation"))["Overall"]
    text = summary.render(config, result)
    assert f"{metrics['auc']:.4f}" in text and f"{metrics['binary_accuracy']:.4f}" in text
    assert metrics["auc"] > 0.85  # a 4k sample and 200 steps: well above chance, below the full-data bar
    assert "anomalies: none" in text
    assert "blessed: yes" in text and f"pushed: version {result.push.version} -> {config.serving_model_dir}/" in text
    assert "serving check: passed (served 32 eval examples over gRPC)" in text
    slices = run_view.metrics_by_slice(result.nodes["Evaluator"].output_uri("evaluation"))
    assert {"Overall", "payment_type=Credit Card", "trip_start_hour=12"} <= set(slices)


def test_training_history_is_recorded(taxi_pipeline_result):
    import json
    from pathlib import Path

    _, result = taxi_pipeline_result
    history = json.loads((Path(result.nodes["Trainer"].output_uri("model_run")) / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_auc"]) >= 2


def test_training_length_follows_the_training_rows(taxi_pipeline_result):
    import math

    config, result = taxi_pipeline_result
    train_rows = result.rows["train"]  # StatisticsGen's count of ExampleGen's train split
    training = result.training
    # The Trainer counted the rows Transform wrote: as many as ExampleGen's split (no row lost on the way).
    assert training.train_rows == train_rows
    assert training.steps_from == "epochs" and training.global_batch_size == config.batch_size
    steps = math.ceil(config.epochs * train_rows / config.batch_size)
    # run_fn trains in whole validated stretches: at most 9 steps short of the planned steps.
    assert steps - 9 <= training.steps <= steps
    assert training.examples == training.steps * config.batch_size
    assert f"trained on: {training.examples:,} examples ({training.steps:,} steps x {config.batch_size}; " \
           f"{training.epochs:.2f} epochs of {train_rows:,} training rows)" in summary.render(config, result)


def test_second_run_on_unchanged_input_comes_from_the_cache(taxi_pipeline_result):
    config, first = taxi_pipeline_result
    progress = io.StringIO()
    second = run_pipeline(config, progress=progress)
    for node in ("CsvExampleGen", "StatisticsGen", "ExampleValidator", "AnomaliesGate", "Transform", "Trainer"):
        assert second.nodes[node].state == "CACHED", node
        assert f"{node}" in progress.getvalue()
    assert "cached" in progress.getvalue()
    # The same model is blessed against itself and not pushed twice under a new version number.
    versions = [p.name for p in config.serving_model_dir.iterdir()]
    assert len(versions) == 1
    assert "from cache: CsvExampleGen" in summary.render(config, second)
    # The Evaluator did not evaluate the model against itself: it reused the first run's evaluation.
    import json
    from pathlib import Path

    record = json.loads((Path(second.evaluation_uri) / "evaluated.json").read_text())
    assert record["reused_from"] == first.evaluation_uri
    assert second.verdict.line() == "yes" and second.overall == first.overall
