"""DriftCheck: stops the pipeline before training when the data drifted from what the served model saw.

The curated schema (ExampleValidator + AnomaliesGate) catches broken data, not a slow shift: fares
50% higher or another payment-type mix are all valid values. This gate compares the statistics of
this run's training split with the statistics of the data the latest blessed (pushed) model was
trained on, which that model carries inside itself (`assets.extra/training_statistics.pb`, written by
the Trainer), using TFDV's drift comparators: L-infinity distance for categorical features (the
largest change of any value's share), Jensen-Shannon divergence for numeric ones (between their
histograms). Thresholds come from the pipeline config, one per feature.

TFX's own DistributionValidator runs the same TFDV comparators but needs the baseline as an
ExampleStatistics artifact; here the baseline travels with the model, so the cold start (no served
model yet: nothing to compare, the check passes) and the lineage come for free.

Output: an ExampleAnomalies artifact holding `drift.json` (every compared feature, its distance and
threshold, and whether it drifted) and custom properties `drifted` and `baseline_model`.
"""

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types.standard_artifacts import ExampleAnomalies, ExampleStatistics, Model, Schema

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from components.errors import BadDataError
from components.serving_baseline import has_baseline  # an empty ServingBaseline (nothing served) is none
from kubeflow import tfx_internals
from trainer_module import records

DRIFT_FILE = "drift.json"
COMPARATORS = {"linf": "L-infinity", "jsd": "Jensen-Shannon"}
VERDICTS = {"drift": "drifted", "skew": "skewed"}  # each row's verdict key, by kind of comparison


class DataDriftError(BadDataError):
    """The data drifted beyond a threshold from the data the served model was trained on (bad input: exit 2)."""


def parse_thresholds(text: str) -> Dict[str, Tuple[str, float]]:
    """'{"fare": ["jsd", 0.1], ...}' -> {"fare": ("jsd", 0.1)}; ValueError on anything else."""
    raw = json.loads(text or "{}")
    thresholds = {}
    for feature, spec in raw.items():
        comparator, threshold = spec[0], float(spec[1])
        if comparator not in COMPARATORS:
            raise ValueError(f"drift threshold for {feature!r}: comparator must be one of {sorted(COMPARATORS)}, "
                             f"not {comparator!r}")
        thresholds[feature] = (comparator, threshold)
    return thresholds


def compare(statistics, other, schema, thresholds: Mapping[str, Tuple[str, float]],
            kind: str = "drift") -> List[Dict[str, object]]:
    """One entry per feature with a threshold, in `thresholds`' order: its TFDV distance and the verdict.

    kind "drift": `statistics` against the previous (baseline) statistics `other`, TFDV's drift comparators,
    verdict key "drifted". kind "skew": `statistics` are the training statistics and `other` the serving
    ones, TFDV's skew comparators in the SERVING environment, verdict key "skewed". `schema`: the curated
    Schema (copied, not changed). Used by the DriftCheck and by `taxi-pipeline skew`.
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    with_comparators = schema_pb2.Schema()
    with_comparators.CopyFrom(schema)
    for feature, (comparator, threshold) in thresholds.items():
        feature_schema = tfdv.get_feature(with_comparators, feature)
        comparators = feature_schema.drift_comparator if kind == "drift" else feature_schema.skew_comparator
        if comparator == "linf":
            comparators.infinity_norm.threshold = threshold
        else:
            comparators.jensen_shannon_divergence.threshold = threshold
    if kind == "drift":
        anomalies = tfdv.validate_statistics(statistics, with_comparators, previous_statistics=other)
    else:
        anomalies = tfdv.validate_statistics(statistics, with_comparators, environment="SERVING",
                                             serving_statistics=other)
    measured = {".".join(info.path.step): float(m.value) for info in anomalies.drift_skew_info
                for m in (info.drift_measurements if kind == "drift" else info.skew_measurements)}
    rows = []
    for feature, (comparator, threshold) in thresholds.items():
        distance = measured.get(feature)
        rows.append({"feature": feature, "comparator": comparator, "measure": COMPARATORS[comparator],
                     "distance": distance, "threshold": threshold,
                     VERDICTS[kind]: distance is not None and distance > threshold})
    return rows


def describe(rows: Sequence[Mapping[str, object]]) -> str:
    """'payment_type (L-infinity 0.170 > 0.050), fare (Jensen-Shannon 0.175 > 0.100)'."""
    return ", ".join(f"{r['feature']} ({r['measure']} {r['distance']:.3f} > {r['threshold']:.3f})"
                     for r in rows if r["drifted"])


def check(statistics_uri: str, schema_uri: str, baseline_model_uri: Optional[str], thresholds_json: str,
          split: str = records.TRAIN_SPLIT) -> Dict[str, object]:
    """The drift report for this run's `split` against the baseline model's training statistics."""
    import tensorflow_data_validation as tfdv

    # Here, not at the top: the Trainer's executor brings TFDV and TFX's trainer helpers (~2.6 s on top of
    # TensorFlow), and `taxi-pipeline status` imports this module for DRIFT_FILE / STOPPED_DIR alone.
    from components.multiworker_trainer.executor import training_statistics_path  # the Trainer stores them there

    thresholds = parse_thresholds(thresholds_json)
    report: Dict[str, object] = {"split": split, "baseline_model": baseline_model_uri, "features": [], "drifted": []}
    if not baseline_model_uri:
        report["note"] = "no blessed model yet: nothing to compare with"
        return report
    baseline_path = training_statistics_path(baseline_model_uri)
    if not fileio.exists(baseline_path):
        report["note"] = f"the baseline model carries no training statistics ({baseline_path})"
        return report
    current = tfdv.load_stats_binary(records.statistics_file(statistics_uri, split))
    baseline = tfdv.load_stats_binary(baseline_path)
    schema = tfdv.load_schema_text(os.path.join(schema_uri, records.SCHEMA_FILE))
    rows = compare(current, baseline, schema, dict(sorted(thresholds.items())))
    report["features"] = rows
    report["drifted"] = [r["feature"] for r in rows if r["drifted"]]
    return report


@component
def DriftCheck(
    statistics: InputArtifact[ExampleStatistics],
    schema: InputArtifact[Schema],
    drift: OutputArtifact[ExampleAnomalies],
    baseline_model: InputArtifact[Model] = None,
    thresholds: Parameter[str] = "{}",
    fail_on_drift: Parameter[int] = 1,
):
    """Raise DataDriftError when a feature's distance exceeds its threshold (unless fail_on_drift is 0)."""
    report = check(statistics.uri, schema.uri, baseline_model.uri if has_baseline(baseline_model) else None, thresholds)
    # TFX's fileio, not os/open: on Kubeflow the artifact URIs are s3:// or gs:// (os.makedirs would make a
    # local folder named "s3:" and leave the artifact in the bucket empty).
    _write_json(os.path.join(drift.uri, DRIFT_FILE), report)
    drift.set_string_custom_property("drifted", ",".join(report["drifted"]))
    drift.set_string_custom_property("baseline_model", report["baseline_model"] or "")
    if report["drifted"] and fail_on_drift:
        # TFX removes a failed execution's output folder: keep the report where the run's read-back finds it.
        _write_json(stopped_report_path(drift.uri), report)
        raise DataDriftError(
            f"the data drifted from the data the served model was trained on: {describe(report['features'])}. "
            "If the change is expected, run again with --allow-drift (the new model then becomes the baseline)")


STOPPED_DIR = "stopped"  # <pipeline_root>/DriftCheck/stopped/<output id>.json: reports of checks that stopped a run


def stopped_report_path(drift_uri: str) -> str:
    """Where a check that stops the run keeps its report: beside its output folders, which TFX removes."""
    place = tfx_internals.output_place(drift_uri)
    return os.path.join(place.node_dir, STOPPED_DIR, place.execution + ".json")


def stopped_report_of(node_dir: str, execution_id: int) -> str:
    """The report a check that stopped the run kept, from its node's folder and its execution's id (the name
    of its output folders: stopped_report_path)."""
    return os.path.join(node_dir, STOPPED_DIR, f"{execution_id}.json")


def _write_json(uri: str, document: Dict[str, object]) -> None:
    fileio.makedirs(os.path.dirname(uri))
    with fileio.open(uri, "w") as f:
        f.write(json.dumps(document, indent=1))


def load_report(drift_uri: str) -> Optional[Dict[str, object]]:
    """drift.json of a DriftCheck output (a local path or an object-store URI), None when absent."""
    path = os.path.join(drift_uri, DRIFT_FILE)
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return json.loads(f.read())
