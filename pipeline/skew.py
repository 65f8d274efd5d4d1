"""`taxi-pipeline skew --logs DIR`: training-serving skew from the model server's request logs.

Reads the PredictionLog records the server wrote (TF Serving's `logging_config`, see
serving/core/request_logger.py), turns every logged request back into the rows it carried (serialized
tf.Examples, or one tensor per raw feature), computes their statistics with TFDV, and compares them
with the training statistics of the very model version that answered them (each pushed SavedModel
carries them in `assets.extra/training_statistics.pb`), with TFDV's skew comparators: L-infinity for
categorical features, Jensen-Shannon divergence for numeric ones, the thresholds of the drift check
(pipeline/configs.py). Prints a table, and writes a plot and a JSON summary under `<home>/reports/`.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from components.multiworker_trainer.settings import TRAINING_STATISTICS  # no TensorFlow: the CLI imports this module
from pipeline import configs
from pipeline.errors import UserError

from pipeline.run_view import SKEW_FILE as LATEST_JSON  # noqa: E402  (in <home>/reports/: run_view reads it)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", type=Path, required=True,
                        help="folder (or file prefix) of the request logs: the logging_config's filename_prefix folder")
    parser.add_argument("--home", type=Path, default=None, help=f"the pipeline's home (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--serving-base", "--model_base_path", dest="serving_base", type=Path, default=None,
                        help="where <model>/<version>/ live (default <home>/serving)")
    parser.add_argument("--plot", type=Path, default=None, help="write the plot here (default <home>/reports/skew-<time>.png)")


# ---- logged requests back into rows --------------------------------------------------------------

def log_files(logs: Path) -> List[str]:
    if logs.is_dir():
        files = sorted(str(p) for p in logs.rglob("*") if p.is_file())
    else:
        files = sorted(glob.glob(str(logs) + "*"))
    return files


def _examples_from_input(input_proto) -> List[bytes]:
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        lst = input_proto.example_list_with_context
        context = lst.context.SerializeToString()
        return [context + e.SerializeToString() for e in lst.examples]
    return []


def _columns_to_examples(columns: Mapping[str, "object"]) -> List[bytes]:
    """One tf.Example per row of raw-feature columns; "", NaN and negative integers are missing values."""
    import math

    import numpy as np
    from tensorflow.core.example import example_pb2

    rows = len(next(iter(columns.values()))) if columns else 0
    out = []
    for i in range(rows):
        example = example_pb2.Example()
        for name, values in columns.items():
            value = np.asarray(values).reshape(len(values), -1)[i][0] if np.asarray(values).ndim > 1 else values[i]
            feature = example.features.feature[name]
            if isinstance(value, (bytes, np.bytes_)):
                if value:
                    feature.bytes_list.value.append(bytes(value))
            elif isinstance(value, (np.integer, int)):
                if value >= 0:
                    feature.int64_list.value.append(int(value))
            elif not math.isnan(float(value)):
                feature.float_list.value.append(float(value))
            if not feature.WhichOneof("kind"):
                del example.features.feature[name]
        out.append(example.SerializeToString())
    return out


def examples_of(entry) -> List[bytes]:
    """The rows a PredictionLog's request carried, as serialized tf.Examples."""
    from serving.util import tensors

    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        inputs = {alias: tensors.to_ndarray(proto) for alias, proto in entry.predict_log.request.inputs.items()}
        if len(inputs) == 1:
            (alias, values), = inputs.items()
            if values.dtype == object and alias == "examples":
                return [bytes(v) for v in values.reshape(-1)]
        return _columns_to_examples(inputs)
    if kind in ("classify_log", "regress_log", "multi_inference_log"):
        return _examples_from_input(getattr(entry, kind).request.input)
    return []


def read_requests(files: Sequence[str]) -> Dict[Tuple[str, int], List[bytes]]:
    """(model name, version) -> the serialized examples its logged requests carried."""
    from serving.core.request_logger import read_logs

    grouped: Dict[Tuple[str, int], List[bytes]] = {}
    for entry in read_logs(files):
        spec = entry.log_metadata.model_spec
        grouped.setdefault((spec.name, int(spec.version.value)), []).extend(examples_of(entry))
    return grouped


# ---- statistics and comparison -------------------------------------------------------------------

def statistics_of(serialized: Sequence[bytes]):
    """TFDV statistics of serialized tf.Examples, in memory, with StatisticsGen's histogram buckets."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(serialized))
    options = tfdv.StatsOptions(num_histogram_buckets=configs.HISTOGRAM_BUCKETS)
    return stats_impl.generate_statistics_in_memory(batch, options)


def compare(training, serving, schema_path, thresholds) -> List[Dict[str, object]]:
    """Per feature with a threshold (the config's drift thresholds): skew distance between training and serving."""
    import tensorflow_data_validation as tfdv

    from components import drift_check  # imports TFX: only when `skew` runs, not when the CLI starts

    return drift_check.compare(training, serving, tfdv.load_schema_text(str(schema_path)),
                               {feature: (comparator, threshold) for feature, comparator, threshold, *_ in thresholds},
                               kind="skew")


def skew_report(logs: Path, serving_base: Path, schema_path=configs.SCHEMA_PATH,
                thresholds=configs.DRIFT_THRESHOLDS) -> Dict[str, object]:
    """Everything `skew` prints, per model version that answered logged requests."""
    import tensorflow_data_validation as tfdv

    from serving.config.model_config import versions_on_disk

    files = log_files(logs)
    if not files:
        raise UserError(f"no request logs under {logs}: serve with a logging_config (see serving/README.md)")
    try:
        grouped = read_requests(files)
    except Exception as err:  # a file that is not TFRecords of PredictionLog
        raise UserError(f"cannot read the request logs under {logs}: {type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}") from None
    models = []
    for (name, version), serialized in sorted(grouped.items()):
        path = versions_on_disk(str(serving_base / name)).get(version)
        stats_path = os.path.join(path, TRAINING_STATISTICS) if path else None
        entry = {"model": name, "version": version, "rows": len(serialized), "features": [], "skewed": []}
        if stats_path is None or not os.path.exists(stats_path):
            entry["note"] = (f"no training statistics for {name} version {version} under {serving_base} "
                             "(the version is gone, or was trained before models carried them)")
            models.append(entry)
            continue
        training = tfdv.load_stats_binary(stats_path)
        serving = statistics_of(serialized)
        entry["features"] = compare(training, serving, schema_path, thresholds)
        entry["skewed"] = [r["feature"] for r in entry["features"] if r["skewed"]]
        entry["training_rows"] = int(training.datasets[0].num_examples)
        entry["histograms"] = {f: _distributions(training, serving, f) for f in entry["skewed"]}
        models.append(entry)
    return {"logs": str(logs), "files": len(files), "models": models,
            "created": datetime.datetime.now().isoformat(timespec="seconds")}


def _distributions(training, serving, feature: str) -> Dict[str, object]:
    """What the plot shows for a skewed feature: value shares (categorical) or histograms (numeric)."""
    def stats_of(stats_list):
        for f in stats_list.datasets[0].features:
            if (f.path.step and f.path.step[0] == feature) or f.name == feature:
                return f
        return None

    out: Dict[str, object] = {}
    for label, stats_list in (("training", training), ("serving", serving)):
        f = stats_of(stats_list)
        if f is None:
            continue
        if f.HasField("string_stats"):
            total = sum(b.sample_count for b in f.string_stats.rank_histogram.buckets) or 1.0
            out[label] = {"kind": "categorical", "values": {b.label: b.sample_count / total
                                                            for b in f.string_stats.rank_histogram.buckets}}
        elif f.HasField("num_stats"):
            hist = next((h for h in f.num_stats.histograms if h.type == h.STANDARD), None)
            if hist is not None:
                total = sum(b.sample_count for b in hist.buckets) or 1.0
                out[label] = {"kind": "numeric", "buckets": [[b.low_value, b.high_value, b.sample_count / total]
                                                             for b in hist.buckets],
                              "median": _median(f)}
    return out


def _median(feature_stats) -> Optional[float]:
    for h in feature_stats.num_stats.histograms:
        if h.type == h.QUANTILES and h.buckets:
            return float(h.buckets[len(h.buckets) // 2].low_value)
    return None


# ---- output --------------------------------------------------------------------------------------

def render(report: Mapping[str, object]) -> str:
    lines = [f"skew: {report['files']} log file(s) under {report['logs']}"]
    for m in report["models"]:
        lines.append(f"model {m['model']} version {m['version']}: {m['rows']:,} logged rows"
                     + (f" vs {m['training_rows']:,} training rows" if "training_rows" in m else ""))
        if "note" in m:
            lines.append(f"  {m['note']}")
            continue
        lines.append(f"  {'feature':<16} {'measure':<15} {'distance':>9} {'threshold':>9}")
        for r in m["features"]:
            distance = "-" if r["distance"] is None else f"{r['distance']:.3f}"
            lines.append(f"  {r['feature']:<16} {r['measure']:<15} {distance:>9} {r['threshold']:>9.3f}"
                         + ("   SKEW" if r["skewed"] else ""))
        lines.append("  skewed: " + (", ".join(m["skewed"]) if m["skewed"] else "none"))
    return "\n".join(lines)


def plot(report: Mapping[str, object], path: Path) -> Path:
    """Distances against thresholds per feature, and the two distributions of each skewed feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in report["models"] if m["features"]]
    panels = sum(1 + len(m["skewed"]) for m in models) or 1
    fig, axes = plt.subplots(panels, 1, figsize=(7, 2.6 * panels), squeeze=False)
    i = 0
    for m in models:
        ax = axes[i][0]
        i += 1
        names = [r["feature"] for r in m["features"]]
        ratios = [(r["distance"] or 0.0) / r["threshold"] for r in m["features"]]
        ax.barh(names, ratios, color=["#c0392b" if r["skewed"] else "#7f8c8d" for r in m["features"]])
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("distance / threshold (L-infinity or Jensen-Shannon)")
        ax.set_title(f"{m['model']} v{m['version']}: {m['rows']:,} logged rows vs training data")
        for feature in m["skewed"]:
            ax = axes[i][0]
            i += 1
            dist = m["histograms"].get(feature, {})
            for label, color in (("training", "#2980b9"), ("serving", "#e67e22")):
                d = dist.get(label)
                if not d:
                    continue
                if d["kind"] == "categorical":
                    keys = sorted(set(dist.get("training", {}).get("values", {})) | set(d["values"]))
                    offset = -0.2 if label == "training" else 0.2
                    ax.bar([k + offset for k in range(len(keys))], [d["values"].get(k, 0.0) for k in keys],
                           width=0.4, label=label, color=color)
                    ax.set_xticks(range(len(keys)))
                    ax.set_xticklabels(keys, rotation=30, fontsize=7)
                else:
                    buckets = d["buckets"]
                    upper = _plot_range(dist)
                    xs = [(lo + hi) / 2 for lo, hi, _ in buckets if lo <= upper]
                    ys = [share / max(hi - lo, 1e-12) for lo, hi, share in buckets if lo <= upper]
                    ax.plot(xs, ys, label=label, color=color)
            ax.set_title(f"{feature}: training vs serving")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _plot_range(dist) -> float:
    """Numeric plots stop at 4x the larger median: the tails of taxi data are a few extreme trips."""
    medians = [d.get("median") for d in dist.values() if d.get("median")]
    return 4 * max(medians) if medians else float("inf")


def main(args) -> int:
    from pipeline import report_quiet

    home = (args.home or configs.default_home()).resolve()
    config = configs.PipelineConfig(home=home)
    serving_base = (args.serving_base or config.serving_base).resolve()
    if not args.logs.exists() and not glob.glob(str(args.logs) + "*"):
        raise UserError(f"--logs {args.logs} does not exist")
    with report_quiet.quiet(home, "skew"):
        report = skew_report(args.logs, serving_base, config.schema_path, config.drift_thresholds)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        plot_path = plot(report, args.plot or config.reports_dir / f"skew-{stamp}.png")
        report["plot"] = str(plot_path)
        config.reports_dir.mkdir(parents=True, exist_ok=True)
        (config.reports_dir / LATEST_JSON).write_text(json.dumps(report, indent=1))
    print(render(report))
    print(f"plot: {plot_path}")
    return 0
