"""`taxi-pipeline status`: the last runs as ML Metadata recorded them, and what the serving folder holds.

Everything shown is read back from the components' own records (execution states, the Evaluator's
metrics and validation result, the blessing and pushed-model artifacts), never recomputed, so the
table says what the pipeline actually decided. Reading is read-only: a run in progress is not
disturbed and shows its unfinished components as RUNNING.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import List

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline import configs, history, report_data, report_quiet, report_store, run_view
from pipeline.errors import UserError
from pipeline.rollback_record import status_lines as rollback_lines

NO_RUNS = "no runs yet: run `taxi-pipeline run`"

# TFMA metric -> label; the two the blessing bars are on come first.
HEADLINE_METRICS = (("auc", "AUC"), ("binary_accuracy", "accuracy"))
HISTORY_RUNS = 20  # `status --history` without --runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the pipeline's home (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--runs", type=int, default=None,
                        help=f"how many of the newest runs to show (default 3; with --history {HISTORY_RUNS})")
    parser.add_argument("--history", action="store_true",
                        help="one line per run, oldest first: span, rows ingested, AUC and accuracy, verdict, "
                             "the serving version after the run, drift")


def main(args) -> int:
    if args.runs is not None and args.runs < 1:
        raise UserError(f"--runs must be at least 1, not {args.runs}")
    home = (args.home or configs.default_home()).resolve()
    config = configs.PipelineConfig(home=home)
    report_store.metadata_store(home)  # a bad home fails here, before stderr is redirected into it
    with report_quiet.quiet(home, "status"):
        if args.history:
            text = render_history(config, args.runs or HISTORY_RUNS)
        else:
            text = render(config, args.runs or 3)
    print(text)
    return 0


def render(config: configs.PipelineConfig, limit: int) -> str:
    """The status text for the newest `limit` runs under `config.home` (UserError for a bad home)."""
    store = report_store.metadata_store(config.home)
    contexts = report_store.runs(store, limit) if store is not None else []
    if not contexts:
        return NO_RUNS
    lines: List[str] = []
    for context in contexts:
        lines += render_run(run_view.load(config.metadata_path, context.name, config.pipeline_root)) + [""]
    lines += render_serving(config.serving_model_dir)
    lines += rollback_lines(store)  # what was rolled back, and when
    skew = run_view.load_skew(config.reports_dir)
    if skew is not None:
        lines += skew.lines()
    return "\n".join(lines)


def render_run(view: run_view.RunView) -> List[str]:
    started = datetime.datetime.fromtimestamp(view.started_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    states = [node.state for node in view.nodes.values()]
    verdict = "FAILED" if "FAILED" in states else ("running" if "RUNNING" in states else "finished")
    lines = [f"run {view.run_id}   started {started}   {verdict}"]
    lines.append(f"  {'component':<32} {'state':<9} {'seconds':>8}")
    for node in view.nodes.values():
        seconds = f"{node.seconds:8.1f}" if node.seconds is not None else f"{'-':>8}"
        lines.append(f"  {node.node_id:<32} {node.state:<9} {seconds}")
    if view.drift is not None:
        lines.append("  drift: " + view.drift.line())
    lines.append("  " + _metrics_line(view))
    if view.tflite is not None:
        lines.append("  tflite: " + view.tflite.line())
    lines.append("  blessed: " + view.verdict.line())
    lines.append("  pushed: " + view.push_line())
    return lines


def _metrics_line(view: run_view.RunView) -> str:
    if view.evaluation_uri is None:
        return f"eval: - (the {view.absent('Evaluator')})"
    metrics = view.overall
    shown = [f"{label} {metrics[key]:.4f}" for key, label in HEADLINE_METRICS if key in metrics]
    if "example_count" in metrics:
        shown.append(f"on {int(metrics['example_count']):,} eval examples")
    return "eval: " + ("  ".join(shown) if shown else "no metrics recorded")


def render_serving(model_dir: Path) -> List[str]:
    versions = report_store.serving_versions(model_dir)
    if not versions:
        return [f"serving {model_dir}: no versions (nothing pushed yet)"]
    names = [f"{versions[0]} (newest: served by default)"] + [str(v) for v in versions[1:]]
    return [f"serving {model_dir}: " + ", ".join(names)]


def render_history(config: configs.PipelineConfig, limit: int) -> str:
    """`status --history`: the newest `limit` runs, oldest first, one line each (pipeline.history's records)."""
    records = history.records(config, limit)
    if not records:
        return NO_RUNS
    store = report_store.metadata_store(config.home)
    later = [r for r in history.rollbacks(store) if r.at_ms > records[-1].started_ms]  # after the newest run
    splits = sorted({s for r in records for s in r.rows}, key=report_data.split_order)
    rows_title = "rows " + " / ".join(splits) if splits else "rows"
    table = [("run", "span", rows_title, "AUC", "accuracy", "verdict", "serving after", "drift")]
    for r in records:
        table += [(f"  {rollback.line()}",) for rollback in r.rollbacks]
        table.append((
            r.run_id,
            r.span_label,
            " / ".join(f"{r.rows[s]:,}" if s in r.rows else "-" for s in splits) if r.rows else "-",
            _number(r.auc), _number(r.accuracy),
            r.verdict + (f" ({r.reason})" if r.verdict in (history.REFUSED, history.FAILED) and r.reason else ""),
            "-" if r.serving_version is None else r.serving_version + (" (new)" if r.serving_changed else ""),
            _drift_cell(r),
        ))
    table += [(f"  {rollback.line()}",) for rollback in later]
    runs = [row for row in table if len(row) > 1]  # a rollback is one line between the runs
    widths = [max(len(row[i]) for row in runs) for i in range(len(runs[0]))]
    right = {1, 2, 3, 4}  # numbers
    lines = [f"history of {config.home}: {len(records)} run{'s' if len(records) != 1 else ''}, oldest first"
             + _bars_note(records)]
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append("AUC, accuracy: the Evaluator's, on the eval split (with spans: the newest span). drift: the largest "
                 "distance / threshold over the checked features (above 1.00: drifted, named)")
    return "\n".join(lines)


def _bars_note(records: List[history.RunRecord]) -> str:
    """The blessing bars the newest evaluated run was held to (as its Evaluator applied them)."""
    bars = next((r.bars for r in reversed(records) if r.bars), {})
    shown = [f"{label} >= {bars[key]:.2f}" for key, label in HEADLINE_METRICS if key in bars]
    return f" (blessing bars: {', '.join(shown)})" if shown else ""


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _drift_cell(record: history.RunRecord) -> str:
    ratio = record.drift_ratio
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" + (f" {', '.join(record.drifted)}" if record.drifted else "")
