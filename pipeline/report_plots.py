"""The report's figures: few, small, drawn with matplotlib's Agg backend and returned as PNG bytes.

Agg needs no display and no fonts beyond matplotlib's own, so the report builds the same on a
laptop, in CI and inside the Kubeflow image. Each function draws one figure that answers one
question (do train and eval look alike? did training converge? where is the model weak? are its
probabilities honest?) and closes it, so building a report never accumulates open figures.
"""
from __future__ import annotations

import io
import math
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator  # noqa: E402

from pipeline import report_data  # noqa: E402

DPI = 80
SPLIT_COLORS = {"train": "#1f77b4", "eval": "#ff7f0e"}
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
        ax.plot(epochs, history[train_key], marker="o", markersize=3, label="train")
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
