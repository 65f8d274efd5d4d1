"""A pipeline run as ML Metadata recorded it: each node's execution state, duration and output artifacts.

`run_view` turns this into the typed view the summary, `status` and `report` render.
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
    # Its ML Metadata id, which names its output folders (and what a failed execution kept: a stopped DriftCheck's report).
    execution_id: Optional[int] = None

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
    started_ms: int = 0  # the run context's creation time


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
        nodes[node_id] = NodeResult(node_id, STATE_NAMES.get(execution.last_known_state, "UNKNOWN"), seconds, outputs,
                                    execution.id)
    return RunResult(ids[0], nodes, run.create_time_since_epoch)


def _node_id(store, execution) -> str:
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node" or store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.split(".", 1)[-1]
    return execution.name or str(execution.id)
