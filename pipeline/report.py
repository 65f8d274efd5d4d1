"""`taxi-pipeline report`: one self-contained HTML file describing a run, from its components' own outputs.

The trend across the runs up to this one (metrics, drift, rows ingested, verdicts, serving versions),
then data statistics per split, anomalies, drift against the served model's training data, training
curves, evaluation by slice, calibration, TF Lite against the SavedModel, the blessing (bars against
measured values), the push, and the last `taxi-pipeline skew`, for the newest run or `--run RUN_ID`.
The file embeds its figures, so it can be archived or mailed as is; the path is printed last.
Section builders live in `report_sections`; this module picks the run and writes the file.
"""
from __future__ import annotations

import argparse
import datetime
import re
import time
from pathlib import Path
from typing import Optional

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline import configs, history, report_html, report_quiet, report_store, run_view
from pipeline.errors import UserError

TREND_RUNS = 30  # the trend section: this run and the runs before it, at most this many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the pipeline's home (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--run", default=None, metavar="RUN_ID", help="the run to describe (default: the newest; ids: `taxi-pipeline status`)")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="where to write the HTML (default <home>/reports/report-<run>.html)")


def main(args) -> int:
    home = (args.home or configs.default_home()).resolve()
    config = configs.PipelineConfig(home=home)
    path = build(config, args.run, args.output)
    print(path)
    return 0


def build(config: configs.PipelineConfig, run_id: Optional[str] = None, output: Optional[Path] = None) -> Path:
    """Write the report of `run_id` (default: newest) and return its path; UserError for a bad home/run/output."""
    store = report_store.metadata_store(config.home)
    if store is None:
        raise UserError(f"no runs yet in {config.home}: run `taxi-pipeline run --home {config.home}` first")
    context = report_store.find_run(store, config.home, run_id)
    path = Path(output) if output else config.reports_dir / f"report-{file_safe(context.name)}.html"
    if path.is_dir():
        raise UserError(f"--output {path} is a folder; give a file name such as {path / 'report.html'}")
    started = time.time()
    with report_quiet.quiet(config.home, "report"):
        view = run_view.load(config.metadata_path, context.name, config.pipeline_root)
        text = render(config, view, started)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # never leave a half-written report where the previous one was
    except OSError as err:
        raise UserError(f"cannot write the report to {path}: {err.strerror}; pass a writable --output") from None
    return path


def render(config: configs.PipelineConfig, view: run_view.RunView, build_started: float) -> str:
    from pipeline import report_sections as sections

    records = history.records(config, TREND_RUNS, until=view.run_id)
    parts = [sections.trend(records, view.run_id, {"auc": config.min_auc, "binary_accuracy": config.min_accuracy})]
    parts += [section(view) for section in (sections.components, sections.data, sections.anomalies, sections.drift,
                                            sections.training, sections.evaluation, sections.calibration,
                                            sections.tflite, sections.blessing, sections.push)]
    parts.append(sections.skew(run_view.load_skew(config.reports_dir)))
    started = datetime.datetime.fromtimestamp(view.started_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    meta = [
        f"run {view.run_id}, started {started}",
        f"home {config.home}",
        f"generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')} in {time.time() - build_started:.1f} s "
        "by `taxi-pipeline report`",
    ]
    return report_html.page(f"{config.pipeline_name}: run report", meta, parts)


def file_safe(run_id: str) -> str:
    """Run ids are timestamps like 2026-11-26T14:21:28.053698; colons are not portable in file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-") or "run"
