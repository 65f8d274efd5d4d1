"""A home with many runs, written in seconds: ML Metadata recorded by TFX's own publishing code, outputs in
the files and formats the components write.

A real pipeline run costs a minute or more on the test sample, too much for a history of a dozen runs.
Here each node of each run is an execution that TFX's orchestration library (`execution_publish_utils`,
`context_lib`: what the local runner's launcher calls) registers and publishes as COMPLETE, CACHED or
FAILED, under the pipeline, pipeline-run and node contexts a run has, with TFX's artifact classes as
outputs. The outputs hold what the readers read: StatisticsGen's FeatureStats.pb per split, TFMA's
metrics and validation records with the Evaluator's eval_config.json, the DriftCheck's drift.json (or
the copy a refusing check keeps), the blessing and push properties. Nothing is trained: the figures are
what each test says they are.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

PIPELINE = "taxi-pipeline"
THRESHOLDS = {"payment_type": ("L-infinity", 0.05), "company": ("L-infinity", 0.05), "fare": ("Jensen-Shannon", 0.1)}


@dataclasses.dataclass
class Run:
    """What one run did; None leaves the part out (the run stopped before it)."""

    span: Optional[int]
    rows: Dict[str, int]
    drift: Optional[Dict[str, float]] = None  # feature -> distance; None: no baseline yet (not compared)
    auc: Optional[float] = None
    accuracy: Optional[float] = None
    bars: Tuple[float, float] = (0.90, 0.85)  # AUC, accuracy: the Evaluator's value thresholds
    push: bool = False  # blessed and pushed as a new version
    refused_by: Optional[str] = None  # "AnomaliesGate" or "DriftCheck": FAILED there
    failed_at: Optional[str] = None  # another node FAILED (e.g. "Trainer")
    cached_from: Optional[int] = None  # every node CACHED from this earlier run (index): the same model
    pattern: str = "span-{SPAN}/*"  # CsvExampleGen's input pattern (pipeline.spans' layouts), before TFX resolves it
    rollback_to: Optional[int] = None  # before this run, `taxi-pipeline rollback` to the version run N pushed


def build(home: Path, runs: List[Run]) -> List[str]:
    """Record `runs` in `home/metadata.db` (oldest first) and write their outputs; returns the run ids."""
    from tfx.orchestration import metadata

    home.mkdir(parents=True, exist_ok=True)
    config = metadata.sqlite_metadata_connection_config(str(home / "metadata.db"))
    ids: List[str] = []
    outputs: List[dict] = []  # per run: node -> (its published outputs, its properties), for a cached re-run
    with metadata.Metadata(config) as m:
        for i, run in enumerate(runs):
            run_id = f"2026-12-01T10:{i:02d}:00.000000"  # as the local runner names runs
            ids.append(run_id)
            if run.rollback_to is not None:
                _roll_back(m.store, home, runs, i, run.rollback_to)
            if run.cached_from is not None:
                outputs.append(outputs[run.cached_from])
                for node, (artifacts, properties) in outputs[run.cached_from].items():
                    _publish(m, run_id, node, "CACHED", artifacts, properties)
                continue
            outputs.append(_record(m, home / "pipeline_root", run_id, run, i))
            time.sleep(0.002)  # distinct creation times, as real runs have
    return ids


def _record(m, root: Path, run_id: str, run: Run, index: int) -> Dict[str, Tuple[Dict[str, list], Optional[dict]]]:
    from tfx.types import standard_artifacts as sa

    done: Dict[str, Tuple[Dict[str, list], Optional[dict]]] = {}  # node -> (its outputs, its properties)

    def node(name: str, state: str = "COMPLETE", properties: Optional[dict] = None, **artifacts):
        outputs = _publish(m, run_id, name, state, {key: [a] for key, a in artifacts.items()}, properties)
        done[name] = (outputs, properties)

    examples = _artifact(sa.Examples(), root / "CsvExampleGen" / "examples" / str(index))
    examples.split_names = json.dumps(sorted(run.rows))
    if run.span is not None:
        examples.set_int_custom_property("span", run.span)  # where TFX's ExampleGen driver records it
    input_config = json.dumps({"splits": [{"name": "single_split", "pattern": _resolved(run.pattern, run.span)}]})
    node("CsvExampleGen", properties={"input_config": input_config}, examples=examples)
    statistics = _artifact(sa.ExampleStatistics(), root / "StatisticsGen" / "statistics" / str(index))
    statistics.split_names = json.dumps(sorted(run.rows))
    for split, rows in run.rows.items():
        _write_statistics(Path(statistics.uri) / f"Split-{split}" / "FeatureStats.pb", rows)
    node("StatisticsGen", statistics=statistics)
    report = _drift_report(run.drift)
    if run.refused_by == "DriftCheck":
        from components.drift_check import stopped_report_of  # what a refusing check keeps, named by its execution

        node("DriftCheck", "FAILED")
        execution = max(m.store.get_executions_by_type("DriftCheckExecutor"), key=lambda e: e.id)
        stopped = Path(stopped_report_of(str(root / "DriftCheck"), execution.id))
        stopped.parent.mkdir(parents=True, exist_ok=True)
        stopped.write_text(json.dumps(report))
        return done
    drift = _artifact(sa.ExampleAnomalies(), root / "DriftCheck" / "drift" / str(index))
    (Path(drift.uri) / "drift.json").write_text(json.dumps(report))
    node("DriftCheck", drift=drift)
    if run.refused_by == "AnomaliesGate":
        node("AnomaliesGate", "FAILED")
        return done
    node("AnomaliesGate")
    if run.failed_at:
        node(run.failed_at, "FAILED")
        return done
    evaluation = _artifact(sa.ModelEvaluation(), root / "Evaluator" / "evaluation" / str(index))
    blessed = _write_evaluation(Path(evaluation.uri), run.auc, run.accuracy, run.bars, regressed=not run.push)
    blessing = _artifact(sa.ModelBlessing(), root / "Evaluator" / "blessing" / str(index))
    blessing.set_int_custom_property("blessed", int(blessed))
    node("Evaluator", evaluation=evaluation, blessing=blessing)
    pushed = _artifact(sa.PushedModel(), root / "Pusher" / "pushed_model" / str(index))
    pushed.set_int_custom_property("pushed", int(run.push))
    if run.push:
        version = str(version_of(index))
        pushed.set_string_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_destination", str(root.parent / "serving" / "taxi" / version))
    node("Pusher", pushed_model=pushed)
    return done


def _resolved(pattern: str, span: Optional[int]) -> str:
    """The input pattern as TFX's ExampleGen driver records it: resolved for the span it read."""
    if span is None:
        return pattern
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=span)
    return pattern.replace("{SPAN}", str(span)).replace("{YYYY}-{MM}-{DD}", day.isoformat())


def version_of(index: int) -> int:
    """The serving version run `index` pushes."""
    return 1796000000 + 1000 * index


def _roll_back(store, home: Path, runs: List[Run], index: int, to: int) -> None:
    """What `taxi-pipeline rollback --to` records (pipeline.rollback_record), from the newest version pushed
    before run `index` back to the one run `to` pushed; a second apart from the runs around it (its time
    is in seconds)."""
    from pipeline import rollback_record

    pushed = [version_of(i) for i, run in enumerate(runs[:index]) if run.push]
    time.sleep(1.1)
    rollback_record.record(store, pushed[-1], version_of(to), [v for v in pushed if v > version_of(to)], "test")
    time.sleep(1.1)


def _publish(m, run_id: str, node_id: str, state: str, outputs: Dict[str, list],
             properties: Optional[dict] = None) -> Dict[str, list]:
    """One execution of `node_id` in run `run_id`, registered and published as the TFX launcher does;
    returns its outputs as published (with their ML Metadata ids: what a cached execution links to)."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration.portable import execution_publish_utils
    from tfx.orchestration.portable.mlmd import context_lib
    from tfx.proto.orchestration import pipeline_pb2

    spec = pipeline_pb2.NodeContexts()
    for type_name, name in (("pipeline", PIPELINE), ("pipeline_run", run_id), ("node", f"{PIPELINE}.{node_id}")):
        context = spec.contexts.add()
        context.type.name = type_name
        context.name.field_value.string_value = name
    contexts = context_lib.prepare_contexts(m, spec)
    execution = execution_publish_utils.register_execution(
        m, metadata_store_pb2.ExecutionType(name=f"{node_id}Executor"), contexts, exec_properties=properties)
    if state == "COMPLETE":
        published, _ = execution_publish_utils.publish_succeeded_execution(m, execution.id, contexts, outputs)
        return published
    if state == "CACHED":
        execution_publish_utils.publish_cached_executions(m, contexts, [execution], [outputs])
        return outputs
    execution_publish_utils.publish_failed_execution(m, contexts, execution.id)
    return {}


def _artifact(artifact, uri: Path):
    uri.mkdir(parents=True, exist_ok=True)
    artifact.uri = str(uri)
    return artifact


def _write_statistics(path: Path, rows: int) -> None:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.datasets.add(num_examples=rows)
    path.write_bytes(stats.SerializeToString())


def _drift_report(distances: Optional[Dict[str, float]]) -> dict:
    """drift.json as components.drift_check.check writes it."""
    if distances is None:
        return {"split": "train", "baseline_model": None, "features": [], "drifted": [],
                "note": "no blessed model yet: nothing to compare with"}
    features = [{"feature": f, "comparator": "linf" if measure == "L-infinity" else "jsd", "measure": measure,
                 "distance": distances[f], "threshold": threshold, "drifted": distances[f] > threshold}
                for f, (measure, threshold) in sorted(THRESHOLDS.items())]
    return {"split": "train", "baseline_model": "Trainer/model/0", "features": features,
            "drifted": [r["feature"] for r in features if r["drifted"]]}


def _write_evaluation(folder: Path, auc: float, accuracy: float, bars: Tuple[float, float], regressed: bool) -> bool:
    """TFMA's metrics and validation records and the Evaluator's eval_config.json; returns the blessing.
    `regressed`: a model that clears the bars is still refused, by the no-regression check on AUC."""
    import tensorflow as tf
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2, validation_result_pb2

    metrics = metrics_for_slice_pb2.MetricsForSlice()
    for name, value in (("auc", auc), ("binary_accuracy", accuracy), ("example_count", 1000.0)):
        kv = metrics.metric_keys_and_values.add()
        kv.key.name = name
        kv.value.double_value.value = value
    with tf.io.TFRecordWriter(str(folder / "metrics-00000-of-00001.tfrecord")) as writer:
        writer.write(metrics.SerializeToString())
    checks = (("AUC", "auc", auc, bars[0]), ("BinaryAccuracy", "binary_accuracy", accuracy, bars[1]))
    missed = [(name, value, bar) for _, name, value, bar in checks if value < bar]
    validation = validation_result_pb2.ValidationResult(validation_ok=not missed and not regressed)
    if not validation.validation_ok:
        per_slice = validation.metric_validations_per_slice.add()
        for name, value, bar in missed:
            failure = per_slice.failures.add()
            failure.metric_key.name = name
            failure.metric_threshold.value_threshold.lower_bound.value = bar
            failure.metric_value.double_value.value = value
        if not missed:
            failure = per_slice.failures.add()
            failure.metric_key.name = "auc"
            failure.metric_key.is_diff = True
            failure.metric_threshold.change_threshold.absolute.value = -0.001
            failure.metric_value.double_value.value = -0.005
    with tf.io.TFRecordWriter(str(folder / "validations.tfrecord")) as writer:
        writer.write(validation.SerializeToString())
    bounded = [{"className": cls, "perSliceThresholds": [
        {"slicingSpecs": [{}], "threshold": {"valueThreshold": {"lowerBound": bar}}}]} for cls, _, _, bar in checks]
    config = {"evalConfig": {"metricsSpecs": [{"metrics": [{"className": "ExampleCount"}] + bounded}]}}
    (folder / "eval_config.json").write_text(json.dumps(config))
    return validation.validation_ok
