"""Re-runs the Trainer of a finished pipeline run with other trainer settings, outside the pipeline.

Reads the last Trainer execution from ML Metadata (its input artifacts and exec properties, i.e.
exactly what its executor's Do received) and runs MultiWorkerExecutor on them again with, say,
`workers=2` or `training_loop="custom"`, into a fresh output directory. The benchmark and the
integration tests use it to compare 1 vs N workers and fit vs custom loop on identical inputs
without re-running ExampleGen and Transform.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from trainer_module import records

TRAINER_TYPE_SUFFIX = ".Trainer"


@dataclasses.dataclass
class ReplayResult:
    serving_model_dir: Path
    model_run_dir: Path
    seconds: float
    worker_reports: List[Dict[str, Any]]


def _store(metadata_path: Path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not Path(metadata_path).exists():
        raise FileNotFoundError(f"no ML Metadata at {metadata_path}: run the pipeline first (taxi-pipeline run)")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def last_trainer_execution(metadata_path: Path) -> Tuple[Dict[str, list], Dict[str, Any]]:
    """(input_dict, exec_properties) of the most recent completed Trainer execution."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    store = _store(metadata_path)
    trainer_types = [t for t in store.get_execution_types() if t.name.endswith(TRAINER_TYPE_SUFFIX)]
    executions = [e for t in trainer_types for e in store.get_executions_by_type(t.name)
                  if e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    if not executions:
        raise LookupError(f"ML Metadata at {metadata_path} has no completed Trainer execution")
    execution = max(executions, key=lambda e: e.id)
    exec_properties = {k: v.string_value if v.HasField("string_value") else v.int_value
                       for k, v in execution.custom_properties.items() if not k.startswith("__")}

    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    types = {t.id: t for t in store.get_artifact_types_by_id(list({a.type_id for a in artifacts.values()}))}
    input_dict: Dict[str, list] = defaultdict(list)
    for event in sorted(events, key=lambda e: [s.index for s in e.path.steps if s.HasField("index")]):
        key = event.path.steps[0].key
        artifact = artifacts[event.artifact_id]
        input_dict[key].append(artifact_utils.deserialize_artifact(types[artifact.type_id], artifact))
    return dict(input_dict), exec_properties


def replay(metadata_path: Path, out_dir: Path, train_steps: Optional[int] = None,
           **custom_config_changes) -> ReplayResult:
    """Runs MultiWorkerExecutor on the last Trainer execution's inputs, with custom_config changed
    (and the number of training steps, if given)."""
    from tfx.types import standard_artifacts

    from components.multiworker_trainer.executor import MultiWorkerExecutor

    input_dict, exec_properties = last_trainer_execution(metadata_path)
    custom_config = {**json.loads(exec_properties.get("custom_config") or "{}"), **custom_config_changes}
    exec_properties = {**exec_properties, "custom_config": json.dumps(custom_config)}
    if train_steps is not None:
        train_args = json.loads(exec_properties.get("train_args") or "{}")
        exec_properties["train_args"] = json.dumps({**train_args, "num_steps": int(train_steps)})
    out_dir = Path(out_dir)
    model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, model_run.uri = str(out_dir / "model"), str(out_dir / "model_run")
    for artifact in (model, model_run):
        os.makedirs(artifact.uri, exist_ok=True)
    started = time.monotonic()
    MultiWorkerExecutor().Do(input_dict, {"model": [model], "model_run": [model_run]}, exec_properties)
    seconds = time.monotonic() - started
    reports = [json.loads(Path(p).read_text()) for p in records.worker_reports(model_run.uri)]
    return ReplayResult(out_dir / "model" / "Format-Serving", out_dir / "model_run", seconds, reports)


def eval_auc(serving_model_dir: Path, examples_uri: str, split: str = records.EVAL_SPLIT,
             label_fn=None, limit: Optional[int] = None) -> float:
    """AUC of a model's `serving_default` (serialized tf.Example in) on an ExampleGen split.

    `label_fn(parsed_feature_dict) -> 0/1 labels`; the default is the taxi label (tips > 0.2 fare).
    """
    import numpy as np
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(records.split_dir(examples_uri, split), "*"))
    if not files:
        raise FileNotFoundError(f"no {split} split under {examples_uri}")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    if limit:
        serialized = serialized[:limit]
    model = tf.saved_model.load(str(serving_model_dir))
    serve = model.signatures["serving_default"]
    scores, labels = [], []
    for start in range(0, len(serialized), 1024):
        batch = tf.constant(serialized[start:start + 1024])
        out = serve(examples=batch)
        scores.append(np.asarray(next(iter(out.values()))).reshape(-1))
        example = [tf.train.Example.FromString(s) for s in serialized[start:start + 1024]]
        labels.append(np.array([label_fn(e) if label_fn else _taxi_label(e) for e in example], dtype=np.float32))
    metric = tf.keras.metrics.AUC(num_thresholds=1000)
    metric.update_state(np.concatenate(labels), np.concatenate(scores))
    return float(metric.result())


def _taxi_label(example) -> float:
    feature = example.features.feature
    tips = feature["tips"].float_list.value
    fare = feature["fare"].float_list.value
    return float(bool(tips) and bool(fare) and tips[0] > 0.2 * fare[0])
