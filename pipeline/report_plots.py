"""The report's figures: few, small, drawn with matplotlib's Agg backend and returned as PNG bytes.

Agg needs no display and no fonts beyond matplotlib's own, so the report builds the same on a
laptop, in CI and inside the Kubeflow image. Each function draws one figure that answers one
question (do train and eval look alike? did training converge? where is the model weak? are its
probabilities honest?) and closes it, so building a report never accumulates open figures.
"""
from __future__ import annotations

import datetime
import io
import math
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator  # noqa: E402

from pipeline import history, report_data  # noqa: E402
from trainer_module import records  # noqa: E402

DPI = 80
SPLIT_COLORS = {records.TRAIN_SPLIT: "#1f77b4", records.EVAL_SPLIT: "#ff7f0e"}
_OTHER_COLORS = ["#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _png(fig, tight: bool = True) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _split_color(split: str, i: int) -> str:
    return SPLIT_COLORS.get(split, _OTHER_COLORS[i % len(_OTHER_COLORS)])


def numeric_distributions(features: Sequence[report_data.Feature], columns: int = 4) -> bytes:
    """Small multiples: each numeric feature's equal-width histogram, one outline per split.

    Heights are fractions of each split's rows that carry a value, so a 2:1 train/eval split still
    overlays (missing values are in the statistics table); a log scale
    is used when one bucket holds nearly all rows (fares, miles), so the long tail stays visible.
    """
    shown = [f for f in features if any(s.histogram for s in f.splits.values())]
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, feature in zip(axes.flat, shown):
        peak = 0.0
        for i, (split, stats) in enumerate(sorted(feature.splits.items(), key=lambda kv: report_data.split_order(kv[0]))):
            if not stats.histogram:
                continue
            edges, counts = stats.histogram
            total = sum(counts) or 1.0
            fractions = [c / total for c in counts]
            peak = max(peak, max(fractions))
            ax.stairs(fractions, edges, label=split, color=_split_color(split, i), linewidth=1.3)
        if peak > 0.8:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(numticks=4))
            ax.yaxis.set_minor_locator(NullLocator())
        else:
            ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(feature.name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.xaxis.get_offset_text().set_fontsize(6)
    if shown:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=len(labels), frameon=False)
    fig.suptitle("numeric features: fraction of rows per bucket", fontsize=9, x=0.01, ha="left")
    # Fixed spacing: tight_layout over 16 axes costs seconds of text measuring for the same result.
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.05, top=1 - 0.5 / fig.get_figheight(), hspace=0.6, wspace=0.3)
    return _png(fig, tight=False)


def training_curves(history: Dict[str, List[float]]) -> bytes:
    """One panel per metric (loss first): training and validation value per epoch."""
    pairs = report_data.curve_pairs(history)
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.2 * len(pairs), 2.5), squeeze=False)
    for ax, (train_key, val_key) in zip(axes.flat, pairs):
        epochs = range(1, len(history[train_key]) + 1)
        ax.plot(epochs, history[train_key], marker="o", markersize=3, label="training")
        if val_key:
            ax.plot(range(1, len(history[val_key]) + 1), history[val_key], marker="o", markersize=3, label="validation")
        ax.set_title(train_key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def metrics_by_value(table: report_data.SliceTable, metrics: Sequence[Tuple[str, str]]) -> bytes:
    """Bars: eval examples per slice value (left axis); lines: the metrics (right axis, 0 to 1)."""
    labels = [value for value, _ in table.rows]
    x = list(range(len(labels)))
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    ax.bar(x, [m.get("example_count", 0.0) for _, m in table.rows], color="#d0d7e1", label="eval examples")
    ax.set_ylabel("eval examples", fontsize=8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_xlabel(table.feature, fontsize=8)
    ax.tick_params(labelsize=7)
    right = ax.twinx()
    for key, label in metrics:
        points = [(i, m[key]) for i, (_, m) in enumerate(table.rows) if key in m]
        if points:
            right.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
    values = [m[key] for _, m in table.rows for key, _ in metrics if key in m]
    right.set_ylim(min(0.5, math.floor(min(values, default=0.5) * 10) / 10), 1.0)  # room to see slice gaps
    right.set_ylabel("metric", fontsize=8)
    right.tick_params(labelsize=7)
    lines, names = right.get_legend_handles_labels()
    bars, bar_names = ax.get_legend_handles_labels()
    fig.legend(lines + bars, names + bar_names, fontsize=7, loc="upper center", ncol=len(names) + 1, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _png(fig)


def calibration(bins: Sequence[report_data.CalibrationBin]) -> bytes:
    """Reliability diagram (observed positive rate vs mean prediction) beside the prediction histogram."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.0, 2.8))
    left.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    sizes = [max(8.0, 120.0 * b.examples / max(x.examples for x in bins)) for b in bins]
    left.scatter([b.mean_prediction for b in bins], [b.observed_rate for b in bins], s=sizes, zorder=3, label="model")
    left.plot([b.mean_prediction for b in bins], [b.observed_rate for b in bins], linewidth=1)
    left.set_xlim(0, 1)
    left.set_ylim(0, 1)
    left.set_xlabel("mean predicted probability", fontsize=8)
    left.set_ylabel("observed big-tipper rate", fontsize=8)
    left.legend(fontsize=7, loc="upper left")
    right.bar([(b.lower + b.upper) / 2 for b in bins], [b.examples for b in bins],
              width=[(b.upper - b.lower) * 0.9 for b in bins], color="#8fb3d9")
    right.set_yscale("log")
    right.set_xlim(0, 1)
    right.set_xlabel("predicted probability", fontsize=8)
    right.set_ylabel("eval examples (log)", fontsize=8)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def tflite_comparison(comparison) -> bytes:
    """Does the TF Lite model score as the SavedModel does, and what does it weigh? (a run_view.TFLiteComparison)"""
    short = {"saved_model": "SavedModel", "float": "TFLite\nfloat", "dynamic_int8": "TFLite\ndyn. int8",
             "int8": "TFLite\nint8"}
    models = comparison.models
    labels = [short.get(m.kind, m.kind) for m in models]
    colors = ["#7f8c8d" if m.kind == "saved_model" else "#2980b9" for m in models]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, (name, ys) in zip(axes[:2], (("accuracy", [m.accuracy for m in models]), ("AUC", [m.auc for m in models]))):
        ax.bar(labels, ys, color=colors)
        ax.set_ylim(max(0.0, min(ys) - 0.02), min(1.0, max(ys) + 0.01))
        ax.set_title(f"{name} on the eval split")
        for i, y in enumerate(ys):
            ax.text(i, y, f"{y:.4f}", ha="center", va="bottom", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    ax = axes[2]
    ax.bar(labels, [m.bytes / 1024 for m in models], color="#bdc3c7", label="file")
    ax.bar(labels, [(m.weight_bytes or 0) / 1024 for m in models], color="#2980b9", label="of which constant buffers")
    for i, m in enumerate(models):
        ratio = comparison.size_ratio(m.kind) if m.kind in ("dynamic_int8", "int8") else None
        if ratio is not None:
            ax.text(i, m.bytes / 1024, f"{ratio:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_title("size (KiB, log scale)")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


def distances(rows: Sequence, title: str) -> bytes:
    """Distance over threshold per feature (1.0 = the threshold, dashed); red bars crossed it.
    `rows`: run_view.FeatureDistance (drift or skew)."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    ratios = [(r.distance or 0.0) / r.threshold for r in rows]
    ax.barh([r.feature for r in rows], ratios, color=["#c0392b" if r.crossed else "#7f8c8d" for r in rows])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for i, r in enumerate(rows):
        ax.text(ratios[i], i, f" {r.measure} {r.distance or 0:.3f} / {r.threshold:.3f}", va="center", fontsize=7)
    ax.set_xlabel("distance / threshold")
    ax.set_title(title)
    ax.set_xlim(0, max(ratios + [1.0]) * 1.6)
    return _png(fig)


METRIC_COLORS = {"auc": "#1f77b4", "binary_accuracy": "#ff7f0e"}
TREND_METRICS = (("auc", "AUC"), ("binary_accuracy", "accuracy"))
SERVING_COLOR = "#2ca02c"
ROLLBACK_COLOR = "#8e44ad"
REFUSED_COLOR = "#c0392b"
FAILED_COLOR = "#7f8c8d"
STOPPED = (history.REFUSED, history.FAILED)  # runs that ended before an evaluation: a band, a cross


def trend(records: Sequence, current: Optional[str] = None, default_bars: Optional[Dict[str, float]] = None) -> bytes:
    """The runs of a home side by side (`history.RunRecord`s, oldest first), one column per run.

    Top: AUC and accuracy with the blessing bars each run was held to (dashed; a run that was not
    evaluated keeps the bar of the run before it; `default_bars` where no run recorded any). The marker
    is filled where the model was pushed, hollow where it was not, half-filled where it already served;
    a cross (and a band through every panel) where a gate refused the data (red) or a component failed
    (grey). A green line marks each run after which another version served, its version on the top
    axis. Below: the largest drift distance over its threshold (red above 1, the threshold), and the
    rows ingested per split. `current`: the run the report is about, its label in bold."""
    n = len(records)
    width = 0.5 if n >= 8 else 0.3  # bars stay bars, not blocks, when there are few runs
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(13.4, 7.4), sharex=True,
                                        gridspec_kw={"height_ratios": [3.2, 1.15, 1.15], "hspace": 0.1})
    _trend_bands((top, mid, low), records)
    _trend_metrics(top, records, default_bars)
    _trend_stopped(top, records)
    changed, rolled = _trend_versions(top, records)
    rows = _trend_legend(fig, top, records, changed, rolled)
    _trend_drift(mid, records, width)
    _trend_rows(low, records, width)
    slanted = _trend_run_axis(low, records, current)
    low.set_xlim(-0.6, n - 0.4)
    for ax in (top, mid, low):
        ax.tick_params(labelsize=9)
    fig.subplots_adjust(left=0.07, right=0.965, top=0.88 if rows == 1 else 0.85, bottom=0.13 if slanted else 0.09)
    return _png(fig)


def _trend_bands(axes, records) -> None:
    """Through every panel: a band where a gate refused or a component failed, a line where a new
    version served, a dashed line where a rollback happened (between the run before and this one)."""
    top, mid, low = axes
    for i, r in enumerate(records):
        if r.verdict in STOPPED:
            for ax in (top, mid, low):
                ax.axvspan(i - 0.5, i + 0.5, color=_stopped_color(r), alpha=0.09, linewidth=0)
        if r.serving_changed:
            for ax in (top, mid, low):
                ax.axvline(i, color=SERVING_COLOR, linewidth=1.4, alpha=0.75, zorder=0)
        if r.rollbacks:  # between the run before and this one
            for ax in (top, mid, low):
                ax.axvline(i - 0.5, color=ROLLBACK_COLOR, linewidth=1.4, linestyle=(0, (4, 2)), zorder=0)


def _trend_metrics(top, records, default_bars) -> None:
    """AUC and accuracy, one marker per run (filled: pushed), and the bars each run was held to."""
    n = len(records)
    x = list(range(n))
    values: List[float] = []
    for key, label in TREND_METRICS:
        color = METRIC_COLORS[key]
        points = [(i, r.auc if key == "auc" else r.accuracy) for i, r in enumerate(records)]
        points = [(i, v) for i, v in points if v is not None]
        values += [v for _, v in points]
        if points:
            top.plot([i for i, _ in points], [v for _, v in points], color=color, linewidth=1.8, label=label, zorder=2)
        for i, v in points:
            fill = {history.PUSHED: "full", history.SAME_MODEL: "left"}.get(records[i].verdict, "none")
            top.plot([i], [v], marker="o", markersize=9, color=color, fillstyle=fill, markerfacecolor=color
                     if fill != "none" else "white", markerfacecoloralt="white", markeredgewidth=1.6,
                     linestyle="none", zorder=3)
        bars = _carried(r.bars.get(key) for r in records)
        if not any(b is not None for b in bars):
            bars = [(default_bars or {}).get(key)] * n
        if any(b is not None for b in bars):
            values += [b for b in bars if b is not None]
            edges = [i - 0.5 for i in x] + [n - 0.5]
            top.stairs([float("nan") if b is None else b for b in bars], edges, color=color, linestyle="--",
                       linewidth=1.1, alpha=0.85, label=f"{label} bar", zorder=1, baseline=None)
            top.text(n - 0.45, bars[-1], f"bar {bars[-1]:.2f}", color=color, fontsize=9, va="bottom", ha="right")
    top.set_ylim(max(0.0, math.floor((min(values, default=0.5) - 0.015) * 50) / 50),
                 min(1.0, max(values, default=0.98) + 0.015))

def _trend_stopped(top, records) -> None:
    """A cross and the verdict under each refused or failed run."""
    for i, r in enumerate(records):
        if r.verdict in STOPPED:
            top.plot([i], [0.07], transform=top.get_xaxis_transform(), marker="X", markersize=11, linestyle="none",
                     color=_stopped_color(r), zorder=3)
            top.text(i, 0.14, f"{r.verdict}\n{r.reason}", transform=top.get_xaxis_transform(), ha="center",
                     va="bottom", fontsize=8.5, color=_stopped_color(r))
    spans = any(r.span for r in records)
    top.set_ylabel("on the newest span" if spans else "on the eval split", fontsize=10)
    top.grid(axis="y", alpha=0.3)


def _trend_versions(top, records):
    """The version serving from each change on, along the top axis; returns (changed, rolled) run indices."""
    n = len(records)
    # Pushed (green) or rolled back to (purple).
    changed = [i for i, r in enumerate(records) if r.serving_changed]
    rolled = [i for i, r in enumerate(records) if r.rollbacks]
    marks = sorted([(i, f"v{records[i].serving_version}", SERVING_COLOR) for i in changed]
                   + [(i - 0.5, f"\u21a9 v{records[i].rollbacks[-1].to_version}", ROLLBACK_COLOR) for i in rolled])
    versions = top.secondary_xaxis("top")
    crowded = len(marks) > max(4, n // 4)  # slanted, so neighbouring versions do not overlap
    versions.set_xticks([m[0] for m in marks], [m[1] for m in marks], fontsize=8.5,
                        rotation=30 if crowded else 0, ha="left" if crowded else "center")
    for label, (_, _, color) in zip(versions.get_xticklabels(), marks):
        label.set_color(color)
    versions.tick_params(axis="x", length=3)

    return changed, rolled


def _trend_legend(fig, top, records, changed, rolled) -> int:
    """The figure's legend (the metrics, their bars, and the markers that occur); returns its rows."""
    handles, labels = top.get_legend_handles_labels()
    marker = dict(linestyle="none", markersize=8, color="#555", markeredgewidth=1.5)
    verdicts = {r.verdict for r in records}
    for shown, handle, label in (
            (True, Line2D([], [], marker="o", **marker), "pushed"),
            (True, Line2D([], [], marker="o", markerfacecolor="white", **marker), "not pushed"),
            (history.SAME_MODEL in verdicts,
             Line2D([], [], marker="o", fillstyle="left", markerfacecoloralt="white", **marker), "already serving"),
            (history.REFUSED in verdicts, Line2D([], [], marker="X", **{**marker, "color": REFUSED_COLOR}),
             "refused: bad or drifted data"),
            (history.FAILED in verdicts, Line2D([], [], marker="X", **{**marker, "color": FAILED_COLOR}),
             "failed (see its log)"),
            (bool(changed), Line2D([], [], color=SERVING_COLOR, linewidth=1.5), "new version serving"),
            (bool(rolled), Line2D([], [], color=ROLLBACK_COLOR, linewidth=1.5, linestyle=(0, (4, 2))), "rolled back")):
        if shown:
            handles.append(handle)
            labels.append(label)
    rows = 1 if len(labels) <= 7 else 2  # two rows pair each metric with its bar, and pushed with not pushed
    fig.legend(handles, labels, loc="upper center", ncol=math.ceil(len(labels) / rows), fontsize=9.5, frameon=False,
               bbox_to_anchor=(0.5, 1.0), handlelength=1.8, columnspacing=1.6)

    return rows


def _trend_drift(mid, records, width) -> None:
    # Drift: the largest distance over its threshold; the dashed line is the threshold.
    ratios = [r.drift_ratio for r in records]
    measured = [(i, v) for i, v in enumerate(ratios) if v is not None]
    mid.bar([i for i, _ in measured], [v for _, v in measured], width=width,
            color=[REFUSED_COLOR if v > 1 else "#95a5a6" for _, v in measured])
    mid.axhline(1.0, color="black", linestyle="--", linewidth=1)
    for i, r in enumerate(records):
        if r.drift_ratio is None:
            mid.text(i, 0.08, "not\ncompared", transform=mid.get_xaxis_transform(), ha="center", fontsize=8,
                     color="#888", bbox=dict(facecolor="white", edgecolor="none", pad=1))
        elif r.drifted:
            # Neighbouring runs' lists would overlap past a few runs: the first feature and how many more.
            named = ", ".join(r.drifted) if len(records) <= 8 or len(r.drifted) == 1 else \
                f"{r.drifted[0]} +{len(r.drifted) - 1}"
            mid.text(i, r.drift_ratio, named, ha="center", va="bottom", fontsize=8.5,
                     color=REFUSED_COLOR)
    mid.set_ylim(0, max([v for _, v in measured] + [1.0]) * 1.4)
    mid.set_ylabel("drift\n(max / threshold)", fontsize=10)
    mid.yaxis.set_major_locator(MaxNLocator(3))


def _trend_rows(low, records, width) -> None:
    n = len(records)
    x = list(range(n))
    # Rows ingested, stacked by split.
    splits = sorted({s for r in records for s in r.rows}, key=report_data.split_order)
    bottom = [0.0] * n
    for k, split in enumerate(splits):
        heights = [float(r.rows.get(split, 0)) for r in records]
        low.bar(x, heights, bottom=bottom, width=width, color=_split_color(split, k), label=split)
        bottom = [b + h for b, h in zip(bottom, heights)]
    low.set_ylabel("rows ingested", fontsize=10)
    low.yaxis.set_major_locator(MaxNLocator(3))
    low.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if splits:
        low.legend(fontsize=9, loc="upper left", ncol=len(splits), frameon=False)
        low.set_ylim(0, max(bottom + [1.0]) * 1.35)


def _trend_run_axis(low, records, current) -> bool:
    """One label per run: the span it ingested where the runs have spans, else when it started; returns
    whether the labels are slanted."""
    n = len(records)
    x = list(range(n))
    spans = [r.span for r in records]
    if any(spans) or len({s for s in spans if s is not None}) > 1:
        ticks = [r.span_label for r in records]
        low.set_xlabel("run, by the span it ingested (oldest first)", fontsize=10)
    else:
        starts = [datetime.datetime.fromtimestamp(r.started_ms / 1000) for r in records]
        ticks = [t.strftime("%m-%d %H:%M") for t in starts]
        if len(set(ticks)) < n:  # runs within one minute
            ticks = [t.strftime("%m-%d %H:%M:%S") for t in starts]
        low.set_xlabel("run, by its start (oldest first)", fontsize=10)
    slanted = n > 12
    low.set_xticks(x, ticks, rotation=40 if slanted else 0, ha="right" if slanted else "center")
    for tick, r in zip(low.get_xticklabels(), records):
        if r.run_id == current:
            tick.set_fontweight("bold")
    return slanted


def _stopped_color(record) -> str:
    return REFUSED_COLOR if record.verdict == history.REFUSED else FAILED_COLOR


def _carried(values) -> List[Optional[float]]:
    """Each None replaced by the value before it (or, at the start, the first value after it)."""
    out: List[Optional[float]] = []
    for v in values:
        out.append(v if v is not None else (out[-1] if out else None))
    first = next((v for v in out if v is not None), None)
    return [first if v is None else v for v in out]
