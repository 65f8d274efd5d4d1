"""What a pipeline run produced, read back from ML Metadata and the artifacts themselves.

The run summary, `taxi-pipeline status` and the report all read results here, from the components'
own outputs (statistics, anomalies, TFMA metrics and validation, blessing, push), never recomputed.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class NodeResult:
    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
    seconds: Optional[float]
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]

    def output_uri(self, key: str) -> Optional[str]:
        artifacts = self.outputs.get(key) or []
        return artifacts[0].uri if artifacts else None

    def output(self, key: str) -> Optional[metadata_store_pb2.Artifact]:
        artifacts = self.outputs.get(key) or []
        return artifacts[0] if artifacts else None


@dataclasses.dataclass
class RunResult:
    run_id: str
    nodes: Dict[str, NodeResult]


def connect(metadata_path) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def run_ids(store, limit: int = 10) -> List[str]:
    """The newest pipeline runs first."""
    contexts = store.get_contexts_by_type("pipeline_run")
    contexts.sort(key=lambda c: c.create_time_since_epoch, reverse=True)
    return [c.name for c in contexts[:limit]]


def load_run(metadata_path, run_id: Optional[str] = None) -> Optional[RunResult]:
    """Every node's state, duration and outputs for `run_id` (default: the latest run)."""
    if not os.path.exists(metadata_path):
        return None
    store = connect(metadata_path)
    ids = run_ids(store, limit=1) if run_id is None else [run_id]
    if not ids:
        return None
    run = store.get_context_by_type_and_name("pipeline_run", ids[0])
    executions = store.get_executions_by_context(run.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))}
    nodes: Dict[str, NodeResult] = {}
    for execution in sorted(executions, key=lambda e: e.create_time_since_epoch):
        node_id = _node_id(store, execution)
        outputs: Dict[str, List] = {}
        for ev in events:
            if ev.execution_id == execution.id and ev.type == metadata_store_pb2.Event.OUTPUT:
                key = ev.path.steps[0].key if ev.path.steps else ""
                outputs.setdefault(key, []).append(artifacts[ev.artifact_id])
        seconds = None
        if execution.last_update_time_since_epoch and execution.create_time_since_epoch:
            seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
        nodes[node_id] = NodeResult(node_id, STATE_NAMES.get(execution.last_known_state, "UNKNOWN"), seconds, outputs)
    return RunResult(ids[0], nodes)


def _node_id(store, execution) -> str:
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node" or store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.split(".", 1)[-1]
    return execution.name or str(execution.id)


# ---- verdicts recorded on the artifacts -----------------------------------------------------------

def blessed(result: RunResult) -> Optional[bool]:
    """The Evaluator's verdict (its ModelBlessing artifact), None when the Evaluator produced none."""
    evaluator = result.nodes.get("Evaluator")
    blessing = evaluator.output("blessing") if evaluator else None
    if blessing is None or "blessed" not in blessing.custom_properties:
        return None
    return blessing.custom_properties["blessed"].int_value == 1


@dataclasses.dataclass(frozen=True)
class Push:
    version: str
    destination: str


def pushed(result: RunResult) -> Optional[Push]:
    """Where the Pusher put the model (its PushedModel artifact), None when it pushed nothing."""
    pusher = result.nodes.get("Pusher")
    artifact = pusher.output("pushed_model") if pusher else None
    if artifact is None or artifact.custom_properties["pushed"].int_value != 1:
        return None
    props = artifact.custom_properties
    return Push(props["pushed_version"].string_value, props["pushed_destination"].string_value)


# ---- reading the components' own outputs -------------------------------------------------------

def split_row_counts(statistics_uri: str) -> Dict[str, int]:
    """Rows per split, from StatisticsGen's output."""
    import tensorflow_data_validation as tfdv

    counts = {}
    for entry in sorted(os.listdir(statistics_uri)):
        path = os.path.join(statistics_uri, entry, "FeatureStats.pb")
        if entry.startswith("Split-") and os.path.exists(path):
            stats = tfdv.load_stats_binary(path)
            counts[entry[len("Split-"):]] = int(stats.datasets[0].num_examples)
    return counts


def anomalies(anomalies_uri: str) -> Dict[str, Dict[str, str]]:
    """Per split: feature -> short description, from ExampleValidator's output (empty: no anomalies).

    Through TFX's fileio: on Kubeflow the URI is on the object store (gs://, s3://)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.dsl.io import fileio

    found = {}
    for entry in sorted(e.rstrip("/") for e in fileio.listdir(anomalies_uri)):
        path = os.path.join(anomalies_uri, entry, "SchemaDiff.pb")
        if entry.startswith("Split-") and fileio.exists(path):
            proto = anomalies_pb2.Anomalies()
            with fileio.open(path, "rb") as f:
                proto.ParseFromString(f.read())
            found[entry[len("Split-"):]] = {
                name: info.short_description or info.description for name, info in proto.anomaly_info.items()
            }
            if proto.HasField("dataset_anomaly_info"):
                found[entry[len("Split-"):]]["(dataset)"] = proto.dataset_anomaly_info.short_description
    return found


def overall_metrics(evaluation_uri: str) -> Dict[str, float]:
    """The overall slice's metrics of the candidate model, from TFMA's output."""
    import tensorflow_model_analysis as tfma

    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if not slice_metrics.slice_key.single_slice_keys:  # the overall slice
            values = {}
            for kv in slice_metrics.metric_keys_and_values:
                if kv.key.model_name in ("", "candidate") and not kv.key.is_diff:
                    if kv.value.HasField("double_value"):
                        values[kv.key.name] = kv.value.double_value.value
            return values
    return {}


def metrics_by_slice(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
    """slice name ("Overall", "payment_type=Cash", ...) -> metric -> value, candidate model only."""
    import tensorflow_model_analysis as tfma

    result = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        keys = slice_metrics.slice_key.single_slice_keys
        name = "Overall" if not keys else ", ".join(f"{k.column}={_slice_value(k)}" for k in keys)
        values = result.setdefault(name, {})
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.model_name in ("", "candidate") and not kv.key.is_diff and kv.value.HasField("double_value"):
                values[kv.key.name] = kv.value.double_value.value
    return result


def _bound(threshold) -> str:
    if threshold.HasField("value_threshold"):
        return f"the bar >= {threshold.value_threshold.lower_bound.value:.4f}"
    return f"the allowed change >= {threshold.change_threshold.absolute.value:.4f}"


def _slice_value(key) -> str:
    which = key.WhichOneof("kind")
    value = getattr(key, which)
    return value.decode() if isinstance(value, bytes) else str(value)


def validation_failures(evaluation_uri: str) -> List[str]:
    """Why the Evaluator did not bless: one line per failed threshold (empty when it passed)."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for failure in result.metric_validations_per_slice:
        for f in failure.failures:
            kind = "change against the baseline" if f.metric_key.is_diff else "value"
            lines.append(f"{f.metric_key.name} {kind} {f.metric_value.double_value.value:.4f} misses {_bound(f.metric_threshold)}")
    if result.missing_thresholds:
        lines.append(f"{len(result.missing_thresholds)} thresholds could not be checked")
    return lines
