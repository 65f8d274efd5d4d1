"""What the HTML report shows, read from the components' outputs into plain Python values.

`run_results` has the readers the summary needs; the report needs more detail from the same files:
per-feature statistics (TFDV's DatasetFeatureStatistics protos), the Trainer's epoch history, TFMA's
calibration histogram and the thresholds the Evaluator applied next to the values it measured. Each
reader returns None or an empty value when its input is absent, so a failed or partial run still
gets a report of what it did produce. Nothing here draws or formats: see report_plots/report_html.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Dict, List, Optional, Tuple

from trainer_module import records

# ---- data statistics (StatisticsGen) ---------------------------------------------------------------


@dataclasses.dataclass
class SplitFeature:
    """One feature in one split."""

    missing_fraction: float  # rows without a value (absent, or an empty CSV cell) / rows
    numeric: Optional[Dict[str, float]] = None  # mean, std_dev, min, median, max
    histogram: Optional[Tuple[List[float], List[float]]] = None  # (bucket edges, rows per bucket), equal width
    unique: Optional[int] = None
    top_values: List[Tuple[str, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Feature:
    name: str
    kind: str  # "numeric", "categorical" or "other"
    splits: Dict[str, SplitFeature]


@dataclasses.dataclass
class DataStatistics:
    rows: Dict[str, int]  # split -> examples
    features: List[Feature]


def split_order(name: str) -> Tuple[int, str]:
    """train before eval before anything else: the order every table and legend uses."""
    return ({records.TRAIN_SPLIT: 0, records.EVAL_SPLIT: 1}.get(name, 2), name)


def data_statistics(statistics_uri: str) -> DataStatistics:
    """Rows per split and every feature's statistics per split, from StatisticsGen's FeatureStats.pb."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    rows: Dict[str, int] = {}
    by_feature: Dict[str, Feature] = {}
    splits = [s for s in map(records.split_of, os.listdir(statistics_uri)) if s is not None]
    for split in sorted(splits, key=split_order):
        path = records.statistics_file(statistics_uri, split)
        if not os.path.exists(path):
            continue
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        with open(path, "rb") as f:
            stats.ParseFromString(f.read())
        dataset = stats.datasets[0]
        rows[split] = int(dataset.num_examples)
        for feature in dataset.features:
            name = ".".join(feature.path.step) or feature.name
            kind = {"num_stats": "numeric", "string_stats": "categorical"}.get(feature.WhichOneof("stats"), "other")
            entry_ = by_feature.setdefault(name, Feature(name, kind, {}))
            entry_.splits[split] = _split_feature(feature, int(dataset.num_examples))
    return DataStatistics(rows, sorted(by_feature.values(), key=lambda f: (f.kind != "numeric", f.name)))


def _split_feature(feature, num_examples: int) -> SplitFeature:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    which = feature.WhichOneof("stats")
    stats = getattr(feature, which) if which else None
    common = stats.common_stats if stats is not None and stats.HasField("common_stats") else None
    result = SplitFeature(missing_fraction=_missing_fraction(common, num_examples))
    if which == "num_stats":
        n = feature.num_stats
        if common is not None and common.tot_num_values > 0:
            result.numeric = {"mean": n.mean, "std_dev": n.std_dev, "min": n.min, "median": n.median, "max": n.max}
        standard = [h for h in n.histograms if h.type == statistics_pb2.Histogram.STANDARD and h.buckets]
        if standard and result.numeric is not None:
            buckets = standard[0].buckets
            edges = [b.low_value for b in buckets] + [buckets[-1].high_value]
            result.histogram = (edges, [b.sample_count for b in buckets])
    elif which == "string_stats":
        s = feature.string_stats
        result.unique = int(s.unique)
        result.top_values = [(v.value, v.frequency) for v in s.top_values]
    return result


def _missing_fraction(common, num_examples: int) -> float:
    """Rows that carry no value.

    CsvExampleGen writes an empty CSV cell as a feature with an empty value list, which TFDV counts as
    "non-missing"; for single-valued features (every column of a CSV) the rows that do carry a value
    are exactly `tot_num_values`. Multi-valued features fall back to TFDV's own num_missing.
    """
    if common is None or num_examples == 0:
        return 1.0 if num_examples else 0.0
    if common.max_num_values <= 1:
        return max(0.0, 1.0 - common.tot_num_values / num_examples)
    return common.num_missing / num_examples


# ---- training history (Trainer) ---------------------------------------------------------------------


def training_history(model_run_uri: Optional[str]) -> Optional[Dict[str, List[float]]]:
    """`<model_run>/history.json` (metric -> value per epoch) as run_fn wrote it; None when absent or unreadable."""
    if not model_run_uri:
        return None
    path = os.path.join(model_run_uri, records.HISTORY_FILE)
    try:
        with open(path) as f:
            history = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(history, dict):
        return None
    return {
        str(k): [float(x) for x in v]
        for k, v in history.items()
        if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)
    }


def curve_pairs(history: Dict[str, List[float]]) -> List[Tuple[str, Optional[str]]]:
    """(train key, validation key or None) per metric, loss first: what the training-curve panels show."""
    names = [k for k in history if not k.startswith("val_")]
    names.sort(key=lambda k: (k != "loss", k))
    return [(k, f"val_{k}" if f"val_{k}" in history else None) for k in names]


# ---- evaluation (Evaluator / TFMA) ---------------------------------------------------------------


@dataclasses.dataclass
class SliceTable:
    """Metrics of the candidate model per slice value of one feature (or the single Overall row)."""

    feature: str
    rows: List[Tuple[str, Dict[str, float]]]  # (slice value, metric -> value)


def slices_by_feature(by_slice: Dict[str, Dict[str, float]]) -> Dict[str, SliceTable]:
    """run_results.metrics_by_slice regrouped: "Overall" and one table per sliced feature.

    Values that read as numbers (hours) sort numerically; others by example count, biggest first.
    """
    tables: Dict[str, SliceTable] = {}
    for name, metrics in by_slice.items():
        if name == "Overall":
            tables["Overall"] = SliceTable("Overall", [("Overall", metrics)])
            continue
        if "," in name or "=" not in name:
            continue  # crossed slices: not configured in this pipeline
        feature, value = name.split("=", 1)
        tables.setdefault(feature, SliceTable(feature, [])).rows.append((value, metrics))
    for table in tables.values():
        if all(_is_number(v) for v, _ in table.rows):
            table.rows.sort(key=lambda r: float(r[0]))
        else:
            table.rows.sort(key=lambda r: (-r[1].get("example_count", 0.0), r[0]))
    return tables


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclasses.dataclass
class CalibrationBin:
    lower: float
    upper: float
    examples: float
    mean_prediction: float
    observed_rate: float


def calibration_bins(evaluation_uri: str, bins: int = 10) -> List[CalibrationBin]:
    """TFMA's calibration histogram of the overall slice (candidate model), merged into `bins` equal bins.

    TFMA records 1,000 fine buckets (plus under/overflow); merging sums examples, labels and
    predictions, so each bin's mean prediction and observed positive rate stay exact.
    """
    import tensorflow_model_analysis as tfma

    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for kv in plots.plot_keys_and_values:
            if kv.key.model_name not in ("", "candidate") or not kv.value.HasField("calibration_histogram_buckets"):
                continue
            sums = [[0.0, 0.0, 0.0] for _ in range(bins)]
            for b in kv.value.calibration_histogram_buckets.buckets:
                n = b.num_weighted_examples.value
                if n <= 0:
                    continue
                middle = _clip01((b.lower_threshold_inclusive + b.upper_threshold_exclusive) / 2)
                i = min(bins - 1, int(middle * bins))
                sums[i][0] += n
                sums[i][1] += b.total_weighted_label.value
                sums[i][2] += b.total_weighted_refined_prediction.value
            return [
                CalibrationBin(i / bins, (i + 1) / bins, n, p / n, y / n)
                for i, (n, y, p) in enumerate(sums)
                if n > 0
            ]
    return []


def _clip01(x: float) -> float:
    if math.isnan(x):
        return 0.0
    return 0.0 if x < 0 else (1.0 if x > 1 else x)


@dataclasses.dataclass
class Check:
    """One bar a model had to clear to be blessed."""

    metric: str
    kind: str  # "value" or "change against the baseline"
    bound: str  # e.g. ">= 0.9000"
    value: Optional[float]  # what TFMA measured (None: not computed, e.g. no baseline yet)
    passed: bool  # TFMA's own verdict (from its validation result), not recomputed here


def blessing_checks(evaluation_uri: str) -> List[Check]:
    """The thresholds the Evaluator applied (its eval_config.json) with the measured values and verdicts."""
    import tensorflow_model_analysis as tfma

    eval_config = applied_eval_config(evaluation_uri)
    if eval_config is None:
        return []
    values = _overall_values(evaluation_uri)
    result = tfma.load_validation_result(evaluation_uri)
    failed = {(f.metric_key.name, f.metric_key.is_diff) for s in result.metric_validations_per_slice for f in s.failures}
    checks = []
    for spec in eval_config.get("metricsSpecs", []):
        for metric in spec.get("metrics", []):
            name = _metric_name(metric)
            thresholds = [metric["threshold"]] if "threshold" in metric else []
            thresholds += [t.get("threshold", {}) for t in metric.get("perSliceThresholds", [])]
            for threshold in thresholds:
                for key, is_diff, kind in (("valueThreshold", False, "value"),
                                           ("changeThreshold", True, "change against the baseline")):
                    if key in threshold:
                        checks.append(Check(name, kind, bound_text(threshold[key]), values.get((name, is_diff)),
                                            (name, is_diff) not in failed))
    return checks


def value_bars(evaluation_uri: str) -> Dict[str, float]:
    """metric -> the lowest value the Evaluator accepted on the overall slice (the lower bounds of the value
    thresholds in its eval_config.json: the bars it applied, whatever the config says today); {} without one."""
    eval_config = applied_eval_config(evaluation_uri)
    if eval_config is None:
        return {}
    bars = {}
    for spec in eval_config.get("metricsSpecs", []):
        for metric in spec.get("metrics", []):
            thresholds = [metric["threshold"]] if "threshold" in metric else []
            thresholds += [t.get("threshold", {}) for t in metric.get("perSliceThresholds", [])
                           if any(not s for s in t.get("slicingSpecs", [{}]))]  # {}: the overall slice
            for threshold in thresholds:
                if "lowerBound" in threshold.get("valueThreshold", {}):
                    bars[_metric_name(metric)] = float(threshold["valueThreshold"]["lowerBound"])
    return bars


def had_baseline(evaluation_uri: str) -> bool:
    """Whether the Evaluator compared against a baseline model (a model spec marked is_baseline)."""
    eval_config = applied_eval_config(evaluation_uri)
    return any(spec.get("isBaseline") for spec in (eval_config or {}).get("modelSpecs", []))


EVAL_CONFIG_FILE = "eval_config.json"  # TFMA writes the EvalConfig it ran with beside its results


def applied_eval_config(evaluation_uri: str) -> Optional[dict]:
    """The EvalConfig (JSON) the Evaluator ran with, None when it is missing or unreadable."""
    try:
        with open(os.path.join(evaluation_uri, EVAL_CONFIG_FILE)) as f:
            return json.load(f).get("evalConfig", {})
    except (OSError, ValueError):
        return None


def _metric_name(metric: dict) -> str:
    """TFMA's metric key name for a MetricConfig: its configured name, else the snake_cased class name."""
    try:
        configured = json.loads(metric.get("config") or "{}").get("name")
    except ValueError:
        configured = None
    if configured:
        return configured
    class_name = metric.get("className", "")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()


def bound_text(threshold: dict) -> str:
    """A TFMA value or change threshold (as JSON: eval_config.json, or a proto through MessageToDict) in words."""
    parts = []
    if "lowerBound" in threshold:
        parts.append(f">= {float(threshold['lowerBound']):.4f}")
    if "upperBound" in threshold:
        parts.append(f"<= {float(threshold['upperBound']):.4f}")
    if "absolute" in threshold:
        higher = threshold.get("direction", "HIGHER_IS_BETTER") == "HIGHER_IS_BETTER"
        parts.append(f"{'>=' if higher else '<='} {float(threshold['absolute']):+.4f}")
    if "relative" in threshold:
        parts.append(f"relative {float(threshold['relative']):+.4f}")
    return ", ".join(parts) or "(none)"


def _overall_values(evaluation_uri: str) -> Dict[Tuple[str, bool], float]:
    """(metric, is_diff) -> value on the overall slice for the candidate model, diffs included."""
    from pipeline.run_view import OVERALL, candidate_metrics

    return candidate_metrics(evaluation_uri).get(OVERALL, {})
