"""`taxi-pipeline status` and `taxi-pipeline report` on the shared real pipeline run, plus their error paths.

Every expected figure is read from the components' outputs (TFMA, TFDV, the Trainer's history.json) and compared with what the commands print or write.
"""
from __future__ import annotations

import base64
import contextlib
import csv
import html.parser
import io
import json
import math
import os
import re
import struct
from pathlib import Path

import pytest

from components.anomalies_gate import anomalies_by_split
from pipeline import cli, report, report_data, run_view
from pipeline.run_results import RunResult

# ---- helpers -----------------------------------------------------------------------------------------


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


class _Tables(html.parser.HTMLParser):
    """table id -> rows of cell texts (header row included), and section id -> its text."""

    def __init__(self):
        super().__init__()
        self.tables, self.sections = {}, {}
        self._table = self._row = self._cell = self._section = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections[self._section] = ""
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._section is not None:
            self.sections[self._section] += data


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---- status ----------------------------------------------------------------------------------------


def _status_block(text: str, run_id: str) -> str:
    blocks = re.split(r"\n(?=run )", "\n" + text)
    matching = [b for b in blocks if b.startswith(f"run {run_id} ")]
    assert matching, f"run {run_id} not in status output:\n{text}"
    return matching[0]


def test_status_shows_every_component_the_evaluators_auc_blessing_and_push(taxi_pipeline_result, capsys):
    config, result = taxi_pipeline_result
    code, out, err = _cli(capsys, "status", "--home", str(config.home), "--runs", "5")
    assert code == 0, err
    block = _status_block(out, result.run_id)
    for node_id, node in result.nodes.items():
        assert re.search(rf"^\s+{re.escape(node_id)}\s+{node.state}\s+\d+\.\d$", block, re.M), (node_id, block)
    metrics = run_view.metrics_by_slice(result.nodes["Evaluator"].output_uri("evaluation"))["Overall"]
    assert f"AUC {metrics['auc']:.4f}" in block and f"accuracy {metrics['binary_accuracy']:.4f}" in block
    assert f"{int(metrics['example_count']):,} eval examples" in block
    assert "blessed: yes" in block
    pushed = result.nodes["Pusher"].output("pushed_model").custom_properties
    version, destination = pushed["pushed_version"].string_value, pushed["pushed_destination"].string_value
    assert f"pushed: version {version} -> {destination}" in block
    # The serving folder line lists what is really on disk, newest first.
    on_disk = sorted((int(p.name) for p in config.serving_model_dir.iterdir() if p.name.isdigit()), reverse=True)
    assert f"serving {config.serving_model_dir}: {on_disk[0]} (newest: served by default)" in out
    assert err == []  # TensorFlow's import chatter stays out of the terminal


def test_status_runs_limits_the_number_of_runs(taxi_pipeline_result, capsys):
    config, _ = taxi_pipeline_result
    code, out, _ = _cli(capsys, "status", "--home", str(config.home), "--runs", "1")
    assert code == 0 and len(re.findall(r"^run ", out, re.M)) == 1


def test_status_of_an_empty_home_is_friendly(tmp_path, capsys):
    code, out, err = _cli(capsys, "status", "--home", str(tmp_path))
    assert (code, out.strip(), err) == (0, "no runs yet: run `taxi-pipeline run`", [])


@pytest.mark.parametrize("case", ["missing", "file", "corrupt"])
def test_status_of_a_bad_home_is_one_line(tmp_path, capsys, case):
    home = tmp_path / "home"
    if case == "file":
        home.write_text("not a folder")
    elif case == "corrupt":
        home.mkdir()
        (home / "metadata.db").write_bytes(b"this is not sqlite at all" * 10)
    code, out, err = _cli(capsys, "status", "--home", str(home))
    assert code == 2 and out == "" and len(err) == 1, err
    assert err[0].startswith("error: ") and str(home) in err[0]
    expected = {"missing": "does not exist", "file": "not a folder", "corrupt": "not a readable ML Metadata database"}
    assert expected[case] in err[0]


def test_status_while_a_run_holds_the_write_lock_says_so(taxi_pipeline_result, tmp_path):
    """MLMD reports a locked database as "Concurrent writes aborted": that is a busy home, not a corrupt one."""
    import shutil
    import sqlite3
    import subprocess
    import sys

    config, _ = taxi_pipeline_result
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(config.metadata_path, home / "metadata.db")
    lock = sqlite3.connect(home / "metadata.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process must see the lock: SQLite locks are per process
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--home", str(home)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "is locked by a pipeline run" in err[0], done.stderr


def test_status_rejects_zero_runs(tmp_path, capsys):
    code, _, err = _cli(capsys, "status", "--home", str(tmp_path), "--runs", "0")
    assert code == 2 and err == ["error: --runs must be at least 1, not 0"]


# ---- report ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_report(taxi_pipeline_result):
    """(config, result, path printed, html text, parsed tables) of one report of the shared run."""
    config, result = taxi_pipeline_result
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        code = cli.main(["report", "--home", str(config.home), "--run", result.run_id])
    assert code == 0
    printed = capture.getvalue().strip().splitlines()[-1]
    text = Path(printed).read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(text)
    return config, result, printed, text, parser


def test_report_goes_to_the_default_path_and_prints_it(built_report):
    config, result, printed, _, _ = built_report
    assert printed == str(config.reports_dir / f"report-{report.file_safe(result.run_id)}.html")
    assert ":" not in Path(printed).name


def test_report_embeds_its_figures_as_real_pngs(built_report):
    _, _, _, text, _ = built_report
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # the trend across runs, numeric distributions, training curves, metrics by hour, calibration, TF Lite vs
    # SavedModel (a "drift" and a "skew" figure join them when the run was checked for drift, or `skew` has run)
    assert [alt for alt, _ in images if alt not in ("drift", "skew")] == [
        "trend across runs", "numeric feature distributions", "training curves", "metrics by trip_start_hour",
        "calibration plot", "TF Lite vs SavedModel"]
    import matplotlib.image

    for alt, data in images:
        png = base64.b64decode(data, validate=True)
        width, height = _png_size(png)
        assert 300 <= width <= 1600 and 150 <= height <= 1200, (alt, width, height)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")  # decodes the whole image
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.01, f"{alt} is blank"


def test_report_is_self_contained(built_report):
    _, _, _, text, _ = built_report
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), \
        [s[:40] for s in sources if not s.startswith(("data:", "#"))]
    assert "<link" not in text and "<script" not in text and "url(" not in text


def test_report_data_statistics_match_statisticsgen(built_report):
    config, result, _, _, tables = built_report
    uri = result.nodes["StatisticsGen"].output_uri("statistics")
    counts = run_view.split_row_counts(result.nodes["StatisticsGen"].output("statistics"))
    assert {row[0]: int(row[1].replace(",", "")) for row in tables.tables["split-rows"][1:]} == counts
    features = {row[0]: row for row in tables.tables["features"][1:]}
    assert {"fare", "trip_start_hour", "payment_type", "company"} <= set(features)
    assert features["payment_type"][1] == "categorical" and features["fare"][1] == "numeric"
    # Empty CSV cells count as missing: the report's per-split fractions add up to the CSV's own count.
    header = tables.tables["features"][0]
    missing = sum(float(features["company"][header.index(f"missing {split}")].rstrip("%")) / 100 * rows
                  for split, rows in counts.items())
    with open(Path(config.data) / "data.csv", newline="") as f:
        empty = sum(1 for row in csv.DictReader(f) if not row["company"].strip())
    assert empty > 0 and missing == pytest.approx(empty, abs=0.001 * sum(counts.values()))
    top_payment = tables.tables["top-payment_type"]
    assert top_payment[0] == ["value", "train", "eval"] and top_payment[1][0] in ("Cash", "Credit Card")


def test_report_anomalies_section_matches_the_example_validator(built_report):
    _, result, _, _, tables = built_report
    found = anomalies_by_split(result.nodes["ExampleValidator"].output("anomalies"))
    problems = {(split, feature) for split, items in found.items() for feature in items}
    if problems:
        rows = {(r[0], r[1]) for r in tables.tables["anomalies-table"][1:]}
        assert rows == problems
    else:
        assert "none" in tables.sections["anomalies"] and "anomalies-table" not in tables.tables


def test_the_anomalies_file_is_the_one_example_validator_writes():
    """The gate and `status` name ExampleValidator's output file themselves (importing TFX's executor for
    the constant would load TFDV); it must stay TFX's own name."""
    from tfx.components.example_validator.executor import DEFAULT_FILE_NAME

    from components import anomalies_gate

    assert anomalies_gate.ANOMALIES_FILE == DEFAULT_FILE_NAME


def test_report_training_table_matches_history_json(built_report):
    _, result, _, _, tables = built_report
    history = json.loads((Path(result.nodes["Trainer"].output_uri("model_run")) / "history.json").read_text())
    rows = {r[0]: r[1:] for r in tables.tables["training-final"][1:]}
    assert rows["loss"] == [_fmt(history["loss"][-1]), _fmt(history["val_loss"][-1])]
    assert set(rows) == {k for k in history if not k.startswith("val_")}


def test_report_slice_tables_equal_tfma(built_report):
    _, result, _, _, tables = built_report
    by_slice = run_view.metrics_by_slice(result.nodes["Evaluator"].output_uri("evaluation"))
    columns = {"examples": "example_count", "AUC": "auc", "accuracy": "binary_accuracy"}
    for feature in ("payment_type", "trip_start_hour"):
        table = tables.tables[f"slices-{feature}"]
        header = table[0]
        expected = {name.split("=", 1)[1]: m for name, m in by_slice.items() if name.startswith(f"{feature}=")}
        assert {row[0] for row in table[1:]} == set(expected)
        for row in table[1:]:
            metrics = expected[row[0]]
            assert int(row[header.index("examples")].replace(",", "")) == int(metrics["example_count"])
            for title in ("AUC", "accuracy"):
                assert row[header.index(title)] == _fmt(metrics[columns[title]]), (feature, row[0], title)
    hours = [int(row[0]) for row in tables.tables["slices-trip_start_hour"][1:]]
    assert hours == sorted(hours)
    overall = tables.tables["slices-Overall"]
    assert overall[1][overall[0].index("AUC")] == _fmt(by_slice["Overall"]["auc"])


def test_report_calibration_comes_from_tfma_plots(built_report):
    _, result, _, _, tables = built_report
    import tensorflow_model_analysis as tfma

    uri = result.nodes["Evaluator"].output_uri("evaluation")
    total = None
    for plots in tfma.load_plots(uri):
        if not plots.slice_key.single_slice_keys:
            buckets = plots.plot_keys_and_values[0].value.calibration_histogram_buckets.buckets
            total = sum(b.num_weighted_examples.value for b in buckets)
    rows = tables.tables["calibration-bins"][1:]
    assert total and sum(int(r[1].replace(",", "")) for r in rows) == int(total)
    assert all(0.0 <= float(r[2]) <= 1.0 and 0.0 <= float(r[3]) <= 1.0 for r in rows)


def test_report_blessing_and_push(built_report):
    _, result, _, text, tables = built_report
    metrics = run_view.metrics_by_slice(result.nodes["Evaluator"].output_uri("evaluation"))["Overall"]
    checks = {(r[0], r[1]): r for r in tables.tables["blessing-checks"][1:]}
    assert checks[("auc", "value")][2:] == [">= 0.8500", _fmt(metrics["auc"]), "pass"]  # the fixture's min_auc
    assert checks[("binary_accuracy", "value")][2] == ">= 0.8000"
    assert "Blessed" in tables.sections["blessing"]
    version = result.nodes["Pusher"].output("pushed_model").custom_properties["pushed_version"].string_value
    assert f"Pushed version {version} to " in tables.sections["push"]


def test_report_with_an_unknown_run_is_one_line(taxi_pipeline_result, capsys):
    config, _ = taxi_pipeline_result
    code, out, err = _cli(capsys, "report", "--home", str(config.home), "--run", "no-such-run")
    assert code == 2 and out == "" and len(err) == 1
    assert "no run 'no-such-run'" in err[0] and "taxi-pipeline status" in err[0]


def test_report_output_must_be_a_file(taxi_pipeline_result, tmp_path, capsys):
    config, result = taxi_pipeline_result
    code, _, err = _cli(capsys, "report", "--home", str(config.home), "--run", result.run_id, "--output", str(tmp_path))
    assert code == 2 and len(err) == 1 and "is a folder" in err[0]


def test_report_of_an_empty_home_says_to_run_first(tmp_path, capsys):
    code, _, err = _cli(capsys, "report", "--home", str(tmp_path))
    assert code == 2 and len(err) == 1 and "no runs yet" in err[0] and "taxi-pipeline run" in err[0]


def test_report_of_a_run_that_produced_nothing_still_renders(tmp_path):
    """A run that failed at its first component: every section says what is missing instead of crashing."""
    from pipeline import configs
    from pipeline.run_results import NodeResult

    failed = RunResult("r1", {"CsvExampleGen": NodeResult("CsvExampleGen", "FAILED", 1.5, {})})
    text = report.render(configs.PipelineConfig(home=tmp_path), run_view.of(failed), 0.0)
    parser = _Tables()
    parser.feed(text)
    assert parser.tables["components-table"][1] == ["CsvExampleGen", "FAILED", "1.5"]
    assert "StatisticsGen did not run" in parser.sections["data"]
    assert "Evaluator did not run" in parser.sections["evaluation"]
    assert "data:image/png" not in text


def test_report_says_when_the_anomalies_gate_stopped_the_run(taxi_pipeline_result):
    from pipeline import report_sections
    from pipeline.run_results import NodeResult

    _, result = taxi_pipeline_result
    stopped = RunResult("r3", {
        "ExampleValidator": result.nodes["ExampleValidator"],
        "AnomaliesGate": NodeResult("AnomaliesGate", "FAILED", 0.2, {}),
    })
    parser = _Tables()
    parser.feed(report_sections.anomalies(run_view.of(stopped))[2])
    assert "AnomaliesGate stopped this run" in parser.sections["anomalies"]
    assert "--allow-anomalies" in parser.sections["anomalies"]


# ---- pure readers (no pipeline needed) -------------------------------------------------------------------


def test_missing_fraction_counts_empty_csv_cells():
    from tensorflow_metadata.proto.v0 import statistics_pb2

    common = statistics_pb2.CommonStatistics(num_non_missing=100, num_missing=0, max_num_values=1, tot_num_values=70)
    assert report_data._missing_fraction(common, 100) == pytest.approx(0.30)
    multi = statistics_pb2.CommonStatistics(num_non_missing=90, num_missing=10, max_num_values=3, tot_num_values=200)
    assert report_data._missing_fraction(multi, 100) == pytest.approx(0.10)


def test_slices_sort_hours_numerically_and_categories_by_size():
    tables = report_data.slices_by_feature({
        "Overall": {"example_count": 10.0},
        "trip_start_hour=10": {"example_count": 1.0}, "trip_start_hour=9": {"example_count": 5.0},
        "payment_type=Cash": {"example_count": 2.0}, "payment_type=Credit Card": {"example_count": 7.0},
    })
    assert [v for v, _ in tables["trip_start_hour"].rows] == ["9", "10"]
    assert [v for v, _ in tables["payment_type"].rows] == ["Credit Card", "Cash"]
    assert tables["Overall"].rows == [("Overall", {"example_count": 10.0})]


def test_metric_names_follow_tfma():
    assert report_data._metric_name({"className": "AUC"}) == "auc"
    assert report_data._metric_name({"className": "BinaryAccuracy"}) == "binary_accuracy"
    assert report_data._metric_name({"className": "ExampleCount"}) == "example_count"
    assert report_data._metric_name({"className": "AUC", "config": '{"name": "auc_pr"}'}) == "auc_pr"


def test_a_model_that_missed_a_bar_shows_why(taxi_pipeline_result, tmp_path):
    """The shared run's real evaluation, re-judged with an AUC bar of 0.99 as TFMA would record a miss."""
    import shutil

    import tensorflow as tf
    from ml_metadata.proto import metadata_store_pb2
    from tensorflow_model_analysis.proto import validation_result_pb2

    from pipeline import report_sections, status
    from pipeline.run_results import NodeResult

    _, result = taxi_pipeline_result
    evaluation = tmp_path / "evaluation"
    shutil.copytree(result.nodes["Evaluator"].output_uri("evaluation"), evaluation)
    auc = run_view.metrics_by_slice(str(evaluation))["Overall"]["auc"]
    config = json.loads((evaluation / "eval_config.json").read_text())
    for metric in config["evalConfig"]["metricsSpecs"][0]["metrics"]:
        if metric["className"] == "AUC":
            metric["perSliceThresholds"][0]["threshold"]["valueThreshold"]["lowerBound"] = 0.99
    (evaluation / "eval_config.json").write_text(json.dumps(config))
    validation = validation_result_pb2.ValidationResult(validation_ok=False)
    failure = validation.metric_validations_per_slice.add().failures.add()
    failure.metric_key.name = "auc"
    failure.metric_threshold.value_threshold.lower_bound.value = 0.99
    failure.metric_value.double_value.value = auc
    for old in evaluation.glob("validations*"):
        old.unlink()
    with tf.io.TFRecordWriter(str(evaluation / "validations.tfrecord")) as writer:
        writer.write(validation.SerializeToString())

    def artifact(uri, **ints):
        a = metadata_store_pb2.Artifact(uri=str(uri))
        for key, value in ints.items():
            a.custom_properties[key].int_value = value
        return a

    rejected = RunResult("r2", {
        "Evaluator": NodeResult("Evaluator", "COMPLETE", 3.0, {
            "evaluation": [artifact(evaluation)], "blessing": [artifact(tmp_path / "blessing", blessed=0)]}),
        "Pusher": NodeResult("Pusher", "COMPLETE", 0.1, {"pushed_model": [artifact(tmp_path / "pushed", pushed=0)]}),
    })
    lines = "\n".join(status.render_run(run_view.of(rejected)))
    assert f"blessed: NO: auc value {auc:.4f} misses the bar >= 0.9900" in lines
    assert "pushed: no (not blessed; the serving directory is unchanged)" in lines

    _, _, section_html = report_sections.blessing(run_view.of(rejected))
    parser = _Tables()
    parser.feed(section_html)
    checks = {(r[0], r[1]): r[2:] for r in parser.tables["blessing-checks"][1:]}
    assert checks[("auc", "value")] == [">= 0.9900", _fmt(auc), "FAIL"]
    assert checks[("binary_accuracy", "value")][-1] == "pass"
    assert "NOT blessed: auc value" in parser.sections["blessing"]
    push_text = report_sections.push(run_view.of(rejected))[2]
    assert "Not pushed" in push_text


def test_blessed_but_failed_serving_check_reads_the_same_in_status_report_and_summary(taxi_pipeline_result, tmp_path):
    """The Evaluator blessed, the ServingValidator did not: every renderer says both, from one view."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline import configs, report_sections, status, summary
    from pipeline.run_results import NodeResult

    config, result = taxi_pipeline_result
    reason = "the model server could not load the model within 60 s"

    def artifact(uri, reason_text=None, **ints):
        a = metadata_store_pb2.Artifact(uri=str(uri))
        for key, value in ints.items():
            a.custom_properties[key].int_value = value
        if reason_text is not None:
            a.custom_properties["reason"].string_value = reason_text
        return a

    evaluator = result.nodes["Evaluator"]
    refused = run_view.of(RunResult("r4", {
        "Evaluator": NodeResult("Evaluator", "COMPLETE", 3.0, {
            "evaluation": evaluator.outputs["evaluation"], "blessing": [artifact(tmp_path / "b", blessed=1)]}),
        "ServingValidator": NodeResult("ServingValidator", "COMPLETE", 2.0, {
            "blessing": [artifact(tmp_path / "infra", reason, blessed=0)]}),
        "Pusher": NodeResult("Pusher", "COMPLETE", 0.1, {"pushed_model": [artifact(tmp_path / "p", pushed=0)]}),
    }))
    expected = f"blessed, but the serving check failed: {reason}"
    assert refused.verdict.line() == expected and not refused.verdict.servable
    status_text = "\n".join(status.render_run(refused))
    assert f"blessed: {expected}" in status_text
    assert "pushed: no (the serving check failed" in status_text
    parser = _Tables()
    parser.feed(report_sections.blessing(refused)[2] + report_sections.push(refused)[2])
    assert f"Blessed by the Evaluator, but the serving check failed: {reason}." in parser.sections["blessing"]
    assert "Not pushed: the serving check failed" in parser.sections["push"]
    summary_text = summary.render(configs.PipelineConfig(home=tmp_path), refused)
    assert f"blessed: {expected}" in summary_text and f"serving check: FAILED ({reason})" in summary_text
