"""The report's sections, one function each: read a run's outputs (report_data), draw (report_plots), lay out.

Each section says plainly when the run did not produce its input (a failed or still-running run,
a component removed from the pipeline) instead of failing the whole report.
"""
from __future__ import annotations

import datetime
from typing import Dict, List, Optional, Tuple

from pipeline import history, report_data, report_plots
from pipeline.run_view import RunView, SkewCheck
from pipeline.report_html import Cell, count, esc, figure, num, paragraph, percent, section, table

Section = Tuple[str, str, str]  # (html id, title, html)

# TFMA metric key -> column title, in the order the evaluation tables show them.
EVAL_COLUMNS = (
    ("example_count", "examples"),
    ("auc", "AUC"),
    ("binary_accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("calibration", "calibration"),
)
HOUR_FEATURE = "trip_start_hour"
TOP_VALUES = 8


def _absent(view: RunView, node_id: str, what: str) -> str:
    return paragraph(f"No {what} in this run ({view.absent(node_id)}).", "note")


def _section(section_id: str, title: str, parts: List[str]) -> Section:
    return section_id, title, section(section_id, title, parts)


# ---- components ------------------------------------------------------------------------------------

def components(view: RunView) -> Section:
    rows = [
        (node.node_id, Cell(node.state, "fail" if node.state == "FAILED" else ""),
         Cell("-" if node.seconds is None else f"{node.seconds:.1f}", "num"))
        for node in view.nodes.values()
    ]
    return _section("components", "Components", [table(("component", "state", "seconds"), rows, "components-table")])


# ---- data ---------------------------------------------------------------------------------------------

def data(view: RunView) -> Section:
    uri = view.statistics_uri
    if uri is None:
        return _section("data", "Data", [_absent(view, "StatisticsGen", "statistics")])
    stats = report_data.data_statistics(uri)
    splits = sorted(stats.rows, key=report_data.split_order)
    parts = [table(("split", "rows"), [(s, Cell(count(stats.rows[s]), "num")) for s in splits], "split-rows")]

    headers = ["feature", "type"] + [f"missing {s}" for s in splits] + [f"{s}: mean / std / min / median / max, or distinct values" for s in splits]
    rows = []
    for feature in stats.features:
        row = [feature.name, feature.kind]
        row += [Cell(percent(feature.splits[s].missing_fraction) if s in feature.splits else "-", "num") for s in splits]
        row += [_summary(feature.splits.get(s)) for s in splits]
        rows.append(row)
    parts.append("<h3>Features</h3>")
    parts.append(table(headers, rows, "features"))

    numeric = [f for f in stats.features if f.kind == "numeric"]
    if any(s.histogram for f in numeric for s in f.splits.values()):
        parts.append("<h3>Distributions of numeric features</h3>")
        parts.append(paragraph("StatisticsGen's equal-width histograms, train and eval overlaid as fractions of the "
                               "rows that have a value; log scale where one bucket holds most rows.", "note"))
        parts.append(figure(report_plots.numeric_distributions(numeric), "numeric feature distributions"))

    categorical = [f for f in stats.features if f.kind == "categorical"]
    if categorical:
        parts.append("<h3>Top values of categorical features</h3>")
        parts.append('<div class="tables">' + "".join(_top_values(f, splits, stats.rows) for f in categorical) + "</div>")
    return _section("data", "Data statistics", parts)


def _summary(stats: Optional[report_data.SplitFeature]) -> str:
    if stats is None:
        return "-"
    if stats.numeric:
        n = stats.numeric
        return " / ".join(_short_number(n[k]) for k in ("mean", "std_dev", "min", "median", "max"))
    if stats.unique is not None:
        return f"{stats.unique:,} distinct"
    return "no values"


def _short_number(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e6 else f"{x:.3e}"


def _top_values(feature: report_data.Feature, splits: List[str], rows_per_split) -> str:
    """Most frequent values (by the first split), with count and share of rows per split."""
    first = feature.splits.get(splits[0]) if splits else None
    values = [v for v, _ in (first.top_values if first else [])][:TOP_VALUES]
    table_rows = []
    for value in values:
        row = [value]
        for split in splits:
            freq = dict(feature.splits[split].top_values).get(value) if split in feature.splits else None
            share = freq / rows_per_split[split] if freq is not None and rows_per_split.get(split) else None
            row.append(Cell("-" if freq is None else f"{count(freq)} ({percent(share)})", "num"))
        table_rows.append(row)
    return table(["value"] + splits, table_rows, f"top-{feature.name}", caption=feature.name)


# ---- anomalies ------------------------------------------------------------------------------------

def anomalies(view: RunView) -> Section:
    if view.state("ExampleValidator") not in ("COMPLETE", "CACHED"):
        return _section("anomalies", "Anomalies", [_absent(view, "ExampleValidator", "anomalies check")])
    found = view.anomalies
    rows = [(split, feature, text) for split, items in found.items() for feature, text in items.items()]
    if not rows:
        parts = [paragraph("none: every split matches the curated schema.")]
    else:
        parts = [table(("split", "feature", "anomaly"), rows, "anomalies-table")]
    if view.state("AnomaliesGate") == "FAILED":
        parts.append(paragraph("The AnomaliesGate stopped this run here: fix the data (or the schema), or "
                               "re-run with `taxi-pipeline run --allow-anomalies` if they are expected.", "fail"))
    return _section("anomalies", "Anomalies", parts)


# ---- training -------------------------------------------------------------------------------------

def training(view: RunView) -> Section:
    uri = view.model_run_uri
    history = report_data.training_history(uri)
    if not history:
        reason = "history.json is missing from the Trainer's model_run output" if uri else None
        body = paragraph(f"No training history ({reason}).", "note") if reason else _absent(view, "Trainer", "training history")
        return _section("training", "Training", [body])
    pairs = report_data.curve_pairs(history)
    epochs = max(len(v) for v in history.values())
    rows = [(name, Cell(num(history[name][-1]), "num"), Cell(num(history[val][-1]) if val else "-", "num"))
            for name, val in pairs]
    parts = [
        paragraph(f"{epochs} epochs; from the Trainer's history.json.", "note"),
        figure(report_plots.training_curves(history), "training curves"),
        table(("metric", "train (last epoch)", "validation (last epoch)"), rows, "training-final"),
    ]
    return _section("training", "Training", parts)


# ---- evaluation ---------------------------------------------------------------------------------

def evaluation(view: RunView) -> Section:
    if view.evaluation_uri is None:
        return _section("evaluation", "Evaluation by slice", [_absent(view, "Evaluator", "evaluation")])
    tables = report_data.slices_by_feature(view.metrics)
    parts = [paragraph("The candidate model on the eval split, as TFMA computed it.", "note")]
    for feature, slice_table in sorted(tables.items(), key=lambda kv: (kv[0] != "Overall", kv[0] != HOUR_FEATURE, kv[0])):
        parts.append(f"<h3>{esc('Overall' if feature == 'Overall' else 'By ' + feature)}</h3>")
        if feature == HOUR_FEATURE:
            parts.append(figure(report_plots.metrics_by_value(slice_table, [("auc", "AUC"), ("binary_accuracy", "accuracy")]),
                                f"metrics by {feature}"))
        parts.append(_slice_table(slice_table))
    return _section("evaluation", "Evaluation by slice", parts)


def _slice_table(slice_table: report_data.SliceTable) -> str:
    columns = [(k, t) for k, t in EVAL_COLUMNS if any(k in m for _, m in slice_table.rows)]
    rows = []
    for value, metrics in slice_table.rows:
        cells = [value]
        for key, _ in columns:
            text = count(metrics.get(key)) if key == "example_count" else num(metrics.get(key))
            cells.append(Cell(text, "num"))
        rows.append(cells)
    first = "slice" if slice_table.feature == "Overall" else slice_table.feature
    return table([first] + [t for _, t in columns], rows, f"slices-{slice_table.feature}")


def calibration(view: RunView) -> Section:
    uri = view.evaluation_uri
    if uri is None:
        return _section("calibration", "Calibration", [_absent(view, "Evaluator", "evaluation")])
    bins = report_data.calibration_bins(uri)
    if not bins:
        return _section("calibration", "Calibration", [paragraph("No calibration plot in this evaluation "
                                                                  "(add CalibrationPlot to the eval config).", "note")])
    rows = [(f"{b.lower:.1f}-{b.upper:.1f}", Cell(count(b.examples), "num"), Cell(num(b.mean_prediction, 3), "num"),
             Cell(num(b.observed_rate, 3), "num")) for b in bins]
    parts = [
        paragraph("TFMA's calibration histogram (overall slice) merged into ten bins: points on the diagonal "
                  "mean predicted probabilities match observed rates; marker size follows the example count.", "note"),
        figure(report_plots.calibration(bins), "calibration plot"),
        table(("predicted", "examples", "mean prediction", "observed rate"), rows, "calibration-bins"),
    ]
    return _section("calibration", "Calibration", parts)


# ---- blessing and push ----------------------------------------------------------------------------

def blessing(view: RunView) -> Section:
    verdict = view.verdict
    uri = view.evaluation_uri
    if verdict.evaluator_blessed is None or uri is None:
        return _section("blessing", "Blessing", [_absent(view, "Evaluator", "blessing")])
    checks = report_data.blessing_checks(uri)
    head = ("Blessed: the model cleared every bar." if verdict.line() == "yes"
            else ("Blessed by the Evaluator, but the serving check failed: " + verdict.serving_check.reason + "."
                  if verdict.evaluator_blessed else "NOT blessed: " + verdict.why_not + "."))
    parts = [f'<p class="{"pass" if verdict.servable else "fail"}">{esc(head)}</p>']
    if checks:
        rows = [(c.metric, c.kind, Cell(c.bound, "num"), Cell(num(c.value), "num"),
                 Cell("pass" if c.passed else "FAIL", "pass" if c.passed else "fail")) for c in checks]
        parts.append(table(("metric", "threshold on", "bar", "measured", "verdict"), rows, "blessing-checks"))
    if not report_data.had_baseline(uri):
        parts.append(paragraph("No blessed model existed yet to compare against, so only the absolute bars "
                               "applied (the Evaluator drops change thresholds without a baseline).", "note"))
    check = verdict.serving_check
    if check is not None:
        parts.append(paragraph(f"Serving check: {'passed' if check.passed else 'FAILED'} ({check.reason}).",
                               "pass" if check.passed else "fail"))
    return _section("blessing", "Blessing", parts)


def push(view: RunView) -> Section:
    if view.state("Pusher") not in ("COMPLETE", "CACHED") and view.push is None:
        body = _absent(view, "Pusher", "push")
    elif view.push is not None:
        body = paragraph(f"Pushed version {view.push.version} to {view.push.destination}.")
    else:
        body = paragraph("Not pushed: " + view.not_pushed_reason + ".")
    return _section("push", "Push", [body])


# ---- the trend across runs --------------------------------------------------------------------------------

def trend(records, current: Optional[str], default_bars: Dict[str, float]) -> Section:
    """The runs up to this one (`history.RunRecord`s, oldest first): one plot, and its numbers in a table."""
    title = "Trend across runs"
    if not records:
        return _section("trend", title, [paragraph("No runs recorded in ML Metadata for this home.", "note")])
    splits = sorted({s for r in records for s in r.rows}, key=report_data.split_order)
    headers = (["run", "started", "span"] + [f"rows {s}" for s in splits]
               + ["AUC", "accuracy", "drift", "drifted", "verdict", "serving after"])
    rows = []
    for r in records:
        rows += [[rollback.line()] + [""] * (len(headers) - 2) + [rollback.to_version] for rollback in r.rollbacks]
        started = datetime.datetime.fromtimestamp(r.started_ms / 1000).strftime("%Y-%m-%d %H:%M")
        ratio = r.drift_ratio
        rows.append([r.run_id + (" (this report)" if r.run_id == current else ""), started,
                     Cell(r.span_label, "num")]
                    + [Cell(count(r.rows.get(s)), "num") for s in splits]
                    + [Cell(num(r.auc), "num"), Cell(num(r.accuracy), "num"),
                       Cell("-" if ratio is None else f"{ratio:.2f}", "fail" if r.drifted else "num"),
                       ", ".join(r.drifted) or "-",
                       Cell(r.verdict + (f": {r.reason}" if r.reason else ""), _verdict_class(r.verdict)),
                       (r.serving_version or "-") + (" (new)" if r.serving_changed else "")])
    note = (f"{len(records)} run{'s' if len(records) != 1 else ''} of this home up to this one, oldest first, from "
            "ML Metadata. AUC and accuracy are the Evaluator's on the eval split (with spans: the newest span), "
            "the dashed lines the bars it applied. Drift: the largest distance over its threshold among the "
            "checked features, against the training data of the latest blessed model. Rows: ingested per split "
            "(StatisticsGen). A green line marks a run that pushed a new version, a dashed purple one a rollback "
            "between two runs.")
    return _section("trend", title, [
        paragraph(note, "note"),
        figure(report_plots.trend(records, current, default_bars), "trend across runs"),
        table(headers, rows, "trend-table"),
    ])


def _verdict_class(verdict: str) -> str:
    return {history.PUSHED: "pass", history.REFUSED: "fail", history.FAILED: "fail"}.get(verdict, "")


# ---- drift, TF Lite and skew ----------------------------------------------------------------------------

def _distance_rows(rows, word: str):
    return [(r.feature, r.measure, Cell("-" if r.distance is None else f"{r.distance:.4f}", "num"),
             Cell(f"{r.threshold:.4f}", "num"), Cell(word if r.crossed else "ok", "fail" if r.crossed else ""))
            for r in rows]


def drift(view: RunView) -> Section:
    report = view.drift
    if report is None:
        return _section("drift", "Drift", [_absent(view, "DriftCheck", "drift check")])
    if not report.features:
        return _section("drift", "Drift", [paragraph(f"Not checked: {report.line()}.", "note")])
    note = (f"This run's {report.split} split against the training data of the latest blessed model "
            f"({report.baseline_model}). Verdict: {report.line()}.")
    return _section("drift", "Drift", [
        paragraph(note, "note"),
        figure(report_plots.distances(report.features, "drift by feature"), "drift"),
        table(("feature", "measure", "distance", "threshold", "verdict"), _distance_rows(report.features, "DRIFT"),
              "drift-table"),
    ])


def tflite(view: RunView) -> Section:
    comparison = view.tflite
    if comparison is None:
        return _section("tflite", "TF Lite", [_absent(view, "Trainer", "TF Lite evaluation")])
    rows = []
    for m in comparison.models:
        ratio = comparison.size_ratio(m.kind) if m.kind in ("dynamic_int8", "int8") else None
        rows.append((m.label, Cell(f"{m.accuracy:.4f}", "num"), Cell(f"{m.auc:.4f}", "num"),
                     Cell(f"{m.bytes / 1024:,.1f}", "num"), Cell("-" if ratio is None else f"{ratio:.2f}", "num"),
                     Cell("-" if m.weight_bytes is None else f"{m.weight_bytes / 1024:,.1f}", "num"),
                     Cell(f"{m.latency_ms:.2f}", "num"),
                     Cell("-" if m.max_abs_diff is None else f"{m.max_abs_diff:.4f}", "num")))
    note = (f"Every model scored on the same {comparison.rows:,} raw eval rows through the raw-feature signature "
            "(the preprocessing inside). Latency: one example, median of 200 calls, one thread. "
            f"Full-integer: {comparison.full_integer or '-'}")
    return _section("tflite", "TF Lite", [
        paragraph(note, "note"),
        figure(report_plots.tflite_comparison(comparison), "TF Lite vs SavedModel"),
        table(("model", "accuracy", "AUC", "KiB", "x float", "constants KiB", "ms/example", "max |p - p_SavedModel|"),
              rows, "tflite-table"),
    ])


def skew(check: Optional[SkewCheck]) -> Section:
    title = "Training-serving skew"
    if check is None:
        return _section("skew", title, [paragraph(
            "No skew check yet: serve with a logging_config, then run `taxi-pipeline skew --logs DIR`.", "note")])
    parts = [paragraph(f"Last `taxi-pipeline skew` ({check.created}) on {check.logs}.", "note")]
    for m in check.models:
        if not m.features:
            parts.append(paragraph(f"model {m.model} v{m.version}: {m.note or '-'}", "note"))
            continue
        parts += [figure(report_plots.distances(m.features, f"{m.model} v{m.version}: {m.rows:,} logged rows vs "
                                                           "its training data"), "skew"),
                  table(("feature", "measure", "distance", "threshold", "verdict"), _distance_rows(m.features, "SKEW"),
                        f"skew-table-{m.version}")]
    return _section("skew", title, parts)
