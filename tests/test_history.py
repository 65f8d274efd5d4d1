"""The trend across runs: `pipeline.history`'s records, `status --history` and the report's trend section.

Homes of runs recorded in seconds by TFX's own publishing code (tests/history_home.py: every verdict,
spans, dated spans, a cached re-run, a rollback, pushes before the runs shown), and, behind the `slow`
marker, four real pipeline runs on one home (pushed; refused by the DriftCheck; pushed; the model
already serving).
"""
from __future__ import annotations

import base64
import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

from history_home import Run, build
from pipeline import cli, configs, history, report, report_store, run_view

SPLIT = {"train": 2000, "eval": 1000}
QUIET = {"payment_type": 0.01, "company": 0.02, "fare": 0.04}  # every distance under its threshold (0.05, 0.05, 0.1)

# span, what happened; the expected record follows each.
RUNS = [
    Run(1, SPLIT, None, 0.910, 0.870, push=True),  # cold start: nothing to compare with
    Run(2, SPLIT, QUIET, 0.920, 0.880, push=True),
    Run(2, SPLIT, cached_from=1),  # the same span again: every component from the cache
    Run(3, SPLIT, QUIET, 0.890, 0.880),  # AUC under the 0.90 bar
    Run(4, {"train": 2100, "eval": 1050}, {**QUIET, "fare": 0.19, "payment_type": 0.08}, refused_by="DriftCheck"),
    Run(5, {"train": 300, "eval": 150}, QUIET, refused_by="AnomaliesGate"),
    Run(6, SPLIT, QUIET, failed_at="Trainer"),
    Run(None, SPLIT, QUIET, 0.930, 0.890, push=True, bars=(0.92, 0.85)),  # no span recorded; a higher bar
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(config, run ids) of a home holding RUNS."""
    home = tmp_path_factory.mktemp("history-home")
    return configs.PipelineConfig(home=home), build(home, RUNS)


def test_each_record_says_what_its_run_recorded(recorded):
    config, ids = recorded
    records = history.records(config, 20)
    assert [r.run_id for r in records] == ids  # oldest first
    assert [r.span for r in records] == [1, 2, 2, 3, 4, 5, 6, None]
    assert [r.span_label for r in records] == [f"span-{s}" for s in (1, 2, 2, 3, 4, 5, 6)] + ["-"]
    assert [r.verdict for r in records] == [
        history.PUSHED, history.PUSHED, history.SAME_MODEL, history.NOT_BLESSED, history.REFUSED, history.REFUSED,
        history.FAILED, history.PUSHED]
    assert [r.reason for r in records][4:7] == ["DriftCheck", "AnomaliesGate", "Trainer"]
    assert "auc value 0.8900 misses the bar >= 0.9000" in records[3].reason
    assert [r.auc for r in records] == [0.91, 0.92, 0.92, 0.89, None, None, None, 0.93]
    assert [r.accuracy for r in records][:4] == [0.87, 0.88, 0.88, 0.88]
    assert records[0].bars == {"auc": 0.90, "binary_accuracy": 0.85} and records[-1].bars["auc"] == 0.92
    assert records[4].bars == {}
    # Rows ingested: what StatisticsGen counted, refused runs included.
    assert records[4].rows == {"train": 2100, "eval": 1050} and records[5].total_rows == 450
    # Drift: none compared on the cold start; the refused span's report is the copy the failed check kept.
    assert records[0].drift == () and records[0].drift_ratio is None
    assert records[1].drift_ratio == pytest.approx(0.4) and records[1].drifted == []
    assert records[4].drift_ratio == pytest.approx(1.9) and records[4].drifted == ["fare", "payment_type"]
    # The serving version moves at each push; a re-push of the model already serving is no change.
    versions = [r.serving_version for r in records]
    assert versions[:7] == ["1796000000"] + ["1796001000"] * 6 and versions[7] == "1796007000"
    assert [r.serving_changed for r in records] == [True, True, False, False, False, False, False, True]
    assert records[2].pushed_version == "1796001000"


def test_fewer_runs_still_start_from_the_version_older_runs_pushed(recorded):
    config, ids = recorded
    last = history.records(config, 3)
    assert [r.run_id for r in last] == ids[-3:]
    assert last[0].serving_version == "1796001000" and not last[0].serving_changed
    until = history.records(config, 2, until=ids[3])
    assert [r.run_id for r in until] == ids[2:4]


def test_status_history_prints_one_line_per_run(recorded, capsys):
    config, ids = recorded
    assert cli.main(["status", "--home", str(config.home), "--history"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"history of {config.home}: 8 runs, oldest first")
    assert "AUC >= 0.92, accuracy >= 0.85" in lines[0]  # the bars the newest evaluated run was held to
    assert re.split(r"\s{2,}", lines[1]) == ["run", "span", "rows train / eval", "AUC", "accuracy", "verdict",
                                            "serving after", "drift"]
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert list(rows) == ids
    assert re.search(r"\sspan-1\s+2,000 / 1,000\s+0\.9100\s+0\.8700\s+pushed\s+1796000000 \(new\)\s+-$", rows[ids[0]])
    assert re.search(r"\sspan-2\s+2,000 / 1,000\s+0\.9200\s+0\.8800\s+same model\s+1796001000\s+0\.40$", rows[ids[2]])
    assert re.search(r"\sspan-4\s+2,100 / 1,050\s+-\s+-\s+refused \(DriftCheck\)\s+1796001000\s+"
                     r"1\.90 fare, payment_type$", rows[ids[4]])
    assert re.search(r"\s-\s+2,000 / 1,000\s+0\.9300", rows[ids[7]])  # no span recorded: '-'
    assert cli.main(["status", "--home", str(config.home), "--history", "--runs", "2"]) == 0
    assert "2 runs, oldest first" in capsys.readouterr().out


QUARTERS = ((2013, 1, 1), (2013, 4, 1), (2013, 7, 1), (2013, 10, 1))


@pytest.fixture(scope="module")
def dated(tmp_path_factory):
    """(config, run ids) of a home whose runs read dated span folders (make-spans' layout), with a rollback
    from the third run's version to the second's before the fourth run."""
    from pipeline.spans import date_span

    home = tmp_path_factory.mktemp("history-dated")
    spans = [date_span(*day) for day in QUARTERS]
    runs = [Run(span, SPLIT, QUIET if i else None, 0.92 + i / 100, 0.88, push=i < 3, pattern="{YYYY}-{MM}-{DD}/*")
            for i, span in enumerate(spans)]
    runs[3].rollback_to = 1
    return configs.PipelineConfig(home=home), build(home, runs)


def test_dated_spans_show_their_dates_and_a_rollback_its_versions(dated, capsys):
    from history_home import version_of

    config, ids = dated
    records = history.records(config, 10)
    assert [r.span_label for r in records] == ["2013-01-01", "2013-04-01", "2013-07-01", "2013-10-01"]
    assert [r.rollbacks for r in records[:3]] == [(), (), ()]
    (rollback,) = records[3].rollbacks  # between the third run and the fourth
    assert (rollback.from_version, rollback.to_version) == (str(version_of(2)), str(version_of(1)))
    assert records[2].serving_version == str(version_of(2))
    assert records[3].serving_version == str(version_of(1)) and not records[3].serving_changed
    assert records[3].verdict == history.NOT_BLESSED

    assert cli.main(["status", "--home", str(config.home), "--history"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].split()[:2] == [ids[0], "2013-01-01"]
    assert lines[5].strip().startswith("rolled back ") and lines[5].endswith(
        f"version {version_of(2)} -> {version_of(1)}")
    assert lines[6].split()[:2] == [ids[3], "2013-10-01"]
    section = _trend(report.render(config, run_view.load(config.metadata_path, ids[3], config.pipeline_root), 0.0))
    assert f"version {version_of(2)} -&gt; {version_of(1)}" in section and _png(section)  # its own row


def test_status_history_of_an_empty_home(tmp_path, capsys):
    assert cli.main(["status", "--home", str(tmp_path), "--history"]) == 0
    assert capsys.readouterr().out.strip() == "no runs yet: run `taxi-pipeline run`"


def _trend(html_text: str) -> str:
    start = html_text.index('<section id="trend">')
    return html_text[start:html_text.index("</section>", start)]


def _png(section: str) -> bytes:
    found = re.findall(r'<img alt="trend across runs" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    assert len(found) == 1, section[:500]
    return base64.b64decode(found[0])


def test_the_report_opens_with_the_trend_plot_and_its_table(recorded, tmp_path):
    import matplotlib.image

    config, ids = recorded
    text = report.build(config, ids[5], tmp_path / "report.html").read_text()
    assert text.index('<section id="trend">') < text.index('<section id="components">')
    assert '<a href="#trend">Trend across runs</a>' in text
    section = _trend(text)
    image = matplotlib.image.imread(io.BytesIO(_png(section)), format="png")
    assert image.shape[1] > 900 and image.shape[0] > 500  # readable at the page's width
    rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]
    assert cells[0][:5] == ["run", "started", "span", "rows train", "rows eval"]
    assert [c[0] for c in cells[1:]] == ids[:5] + [f"{ids[5]} (this report)"]  # the runs up to this one
    refused = cells[5]
    assert refused[2:7] == ["span-4", "2,100", "1,050", "-", "-"] and "refused: DriftCheck" in refused
    assert "1.90" in refused and "fare, payment_type" in refused


def test_a_run_outside_ml_metadata_gets_a_note_instead_of_a_plot(tmp_path):
    from pipeline.run_results import NodeResult, RunResult

    lone = run_view.of(RunResult("r1", {"CsvExampleGen": NodeResult("CsvExampleGen", "FAILED", 1.0, {})}))
    section = _trend(report.render(configs.PipelineConfig(home=tmp_path), lone, 0.0))
    assert "No runs recorded in ML Metadata" in section and "data:image/png" not in section


# ---- four real runs on one home (slow) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_home(taxi_pipeline_result, taxi_sample_dir, tmp_path_factory):
    """(config, [view of each run]) after four real runs: the shared run (a copy of its ML Metadata and
    serving folder), the sample shifted (the DriftCheck refuses it), the sample again (the Trainer's
    settings name the home's log folder, so in the copy it trains again: a new version), and the sample
    once more (the Trainer from the cache: the model already serving)."""
    from pipeline.errors import UserError
    from pipeline.local_runner import run_pipeline
    from test_drift import write_shifted

    config, _ = taxi_pipeline_result
    home = tmp_path_factory.mktemp("history-real-home")
    shutil.copy2(config.metadata_path, home / "metadata.db")
    shutil.copytree(config.serving_base, home / "serving")
    ours = config.replace(home=home)
    shifted = tmp_path_factory.mktemp("history-shifted")
    write_shifted(taxi_sample_dir / "data.csv", shifted / "data.csv")
    with pytest.raises(UserError):
        run_pipeline(ours.replace(data_root=shifted))
    run_pipeline(ours)
    run_pipeline(ours)
    run_ids = [c.name for c in report_store.runs(report_store.metadata_store(home), 10)][::-1]
    views = [run_view.load(ours.metadata_path, run_id, ours.pipeline_root) for run_id in run_ids]
    return ours, views


def test_real_runs_pushed_refused_pushed_and_already_serving(real_home, capsys):
    config, views = real_home
    first, refused, second, again = views
    records = history.records(config, 10)
    assert [r.run_id for r in records] == [v.run_id for v in views]
    assert [r.verdict for r in records] == [history.PUSHED, history.REFUSED, history.PUSHED, history.SAME_MODEL]
    assert [r.span_label for r in records] == ["0"] * 4  # a plain folder is span 0
    assert refused.state("DriftCheck") == "FAILED" and records[1].reason == "DriftCheck"
    assert second.state("Trainer") == "COMPLETE" and again.state("Trainer") == "CACHED"
    for record, view in zip(records, views):
        assert record.rows == view.rows and record.rows  # StatisticsGen's counts, the refused run's too
        assert record.auc == view.overall.get("auc") and record.accuracy == view.overall.get("binary_accuracy")
    assert records[1].auc is None and sorted(records[1].drifted) == ["fare", "payment_type"]
    assert records[1].drift_ratio > 1 and records[0].drift_ratio is None  # the first run had nothing to compare with
    assert records[0].bars == {"auc": config.min_auc, "binary_accuracy": config.min_accuracy}
    assert second.push.version != first.push.version
    assert [r.serving_version for r in records] == [first.push.version] * 2 + [second.push.version] * 2
    assert [r.serving_changed for r in records] == [True, False, True, False]

    assert cli.main(["status", "--home", str(config.home), "--history"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 4 + 1
    assert "refused (DriftCheck)" in lines[3] and "fare, payment_type" in lines[3]
    assert "same model" in lines[5] and f"{second.push.version} " in lines[5]

    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert cli.main(["report", "--home", str(config.home)]) == 0
    section = _trend(Path(capture.getvalue().strip().splitlines()[-1]).read_text())
    assert _png(section)[:8] == b"\x89PNG\r\n\x1a\n"
    assert section.count("<tr>") == 1 + 4 and f"{again.run_id} (this report)" in section
