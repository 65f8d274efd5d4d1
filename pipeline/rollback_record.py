"""A rollback in ML Metadata: which model each serving version holds, the blessings it withdraws, its record.

A local run's baseline is TFX's `LatestBlessedModelStrategy` (pipeline/pipeline.py): the Model artifact
with the highest id that has a ModelBlessing with `blessed` = 1 (`current_model_id` names the model).
After a rollback that must be the model served again, so `record` sets `blessed` = 0 (and
`rolled_back_at`, `rolled_back_to`) on the blessings of every model behind a retired version and of every
blessed model newer than the served one (one the ServingValidator refused, say, would otherwise become the
baseline), and sets it back to 1 on the served model's blessings when an earlier rollback withdrew them.
It writes those changes and a `Rollback` execution (from_version, to_version, time, reason, the retired
versions; the models and blessings as its inputs) in one MLMD transaction (`put_execution`).

Which model a version holds is read from the Pusher's own records: its PushedModel output carries
`pushed_version`, and its ModelBlessing input (the Evaluator's) names the model in `current_model_id`.
Our Pusher pushes the ServingValidator's copy of that same Trainer model (its `stamped_model/`,
pipeline/pipeline.py). A Pusher that found the same model already newest records that version again
(components/atomic_pusher.py), so a version can hold several Model artifacts with the same weights.
"""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from ml_metadata import errors as mlmd_errors
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from kubeflow import tfx_internals

EXECUTION_TYPE = "Rollback"
BLESSED = tfx_internals.BLESSED_KEY  # set by the Evaluator on a ModelBlessing, with the model it judged
CURRENT_MODEL_ID = tfx_internals.CURRENT_MODEL_ID_KEY
ROLLED_BACK_AT = "rolled_back_at"
ROLLED_BACK_TO = "rolled_back_to"
RESTORED_AT = "restored_by_rollback_at"

_INT, _STRING = metadata_store_pb2.INT, metadata_store_pb2.STRING
_PROPERTIES = {"from_version": _INT, "to_version": _INT, "time": _INT, "reason": _STRING,
               "retired_versions": _STRING}


@dataclasses.dataclass
class Recorded:
    """What `record` changed: the models whose blessings it withdrew or restored, the next baseline."""

    withdrawn: List[int]
    restored: List[int]
    baseline: Optional[int]  # the model LatestBlessedModelStrategy resolves now; None: none is blessed
    served_models: List[int]  # the Model artifacts behind the version served now ([]: unknown to MLMD)


def connect(metadata_path: Path) -> metadata_store.MetadataStore:
    """The home's store, read-write (never created: a home without one has nothing to record in)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def models_by_version(store) -> Dict[int, Set[int]]:
    """Serving version -> ids of the Model artifacts pushed as it, from every Pusher that pushed."""
    pushed = [a for a in _artifacts_of_type(store, "PushedModel") if _int(a, tfx_internals.PUSHED_KEY) == 1
              and _str(a, tfx_internals.PUSHED_VERSION_KEY).isdigit()]
    if not pushed:
        return {}
    producer = {e.artifact_id: e.execution_id for e in store.get_events_by_artifact_ids([a.id for a in pushed])
                if e.type == metadata_store_pb2.Event.OUTPUT}
    inputs: Dict[int, List[int]] = {}
    for event in store.get_events_by_execution_ids(sorted(set(producer.values()))):
        if event.type == metadata_store_pb2.Event.INPUT:
            inputs.setdefault(event.execution_id, []).append(event.artifact_id)
    blessings = {b.id: b for b in _blessings(store)}
    found: Dict[int, Set[int]] = {}
    for artifact in pushed:
        for input_id in inputs.get(producer.get(artifact.id), []):
            if input_id in blessings:
                found.setdefault(int(_str(artifact, tfx_internals.PUSHED_VERSION_KEY)), set()).add(
                    _int(blessings[input_id], CURRENT_MODEL_ID))
    return found


def record(store, served_before: int, served_now: int, retired: Sequence[int], reason: str = "",
           now: Optional[float] = None) -> Recorded:
    """Withdraw and restore blessings as the module docstring says, and write the Rollback execution."""
    import time

    now_s = int(now if now is not None else time.time())
    by_version = models_by_version(store)
    served = by_version.get(served_now, set())
    rolled_back = set().union(*(by_version.get(v, set()) for v in retired)) - served
    blessings = _blessings(store)
    changed, restored_models = [], set()
    if served and not any(_int(b, BLESSED) == 1 for b in blessings if _int(b, CURRENT_MODEL_ID) in served):
        for blessing in blessings:  # an earlier rollback withdrew it: the model serves again, so bless it again
            if _int(blessing, CURRENT_MODEL_ID) in served and ROLLED_BACK_AT in blessing.custom_properties:
                blessing.custom_properties[BLESSED].int_value = 1
                blessing.custom_properties[RESTORED_AT].int_value = now_s
                changed.append(blessing)
                restored_models.add(_int(blessing, CURRENT_MODEL_ID))
    blessed_served = [_int(b, CURRENT_MODEL_ID) for b in blessings
                      if _int(b, BLESSED) == 1 and _int(b, CURRENT_MODEL_ID) in served]
    newest_served = max(blessed_served, default=None)
    withdrawn_models = set()
    for blessing in blessings:
        model = _int(blessing, CURRENT_MODEL_ID)
        newer = newest_served is not None and model > newest_served
        if _int(blessing, BLESSED) == 1 and model not in served and (model in rolled_back or newer):
            blessing.custom_properties[BLESSED].int_value = 0
            blessing.custom_properties[ROLLED_BACK_AT].int_value = now_s
            blessing.custom_properties[ROLLED_BACK_TO].int_value = served_now
            changed.append(blessing)
            withdrawn_models.add(model)

    execution = metadata_store_pb2.Execution(type_id=_execution_type(store),
                                             last_known_state=metadata_store_pb2.Execution.COMPLETE)
    values = {"from_version": served_before, "to_version": served_now, "time": now_s, "reason": reason,
              "retired_versions": ",".join(str(v) for v in sorted(retired))}
    for name, value in values.items():
        if name == "reason" and not value:
            continue
        if isinstance(value, int):
            execution.properties[name].int_value = value
        else:
            execution.properties[name].string_value = value
    models = {m.id: m for m in store.get_artifacts_by_id(sorted(rolled_back | served))}
    inputs = [(changed, "blessing")] + [([models[i] for i in sorted(ids) if i in models], key)
                                        for ids, key in ((rolled_back, "rolled_back_model"), (served, "served_model"))]
    store.put_execution(execution, [(artifact, _input_event(key, index))
                                    for group, key in inputs for index, artifact in enumerate(group)], [])
    blessed_now = {_int(b, CURRENT_MODEL_ID) for b in _blessings(store) if _int(b, BLESSED) == 1}
    models_known = {m.id for m in _artifacts_of_type(store, "Model")}
    return Recorded(withdrawn=sorted(withdrawn_models), restored=sorted(restored_models),
                    baseline=max(blessed_now & models_known, default=None), served_models=sorted(served))


def status_lines(store, limit: int = 3) -> List[str]:
    """`status`: the newest `limit` rollbacks, newest first ([] when there has been none)."""
    try:
        type_id = store.get_execution_type(EXECUTION_TYPE).id
    except mlmd_errors.NotFoundError:
        return []
    executions = [e for e in store.get_executions_by_type(EXECUTION_TYPE)
                  if e.type_id == type_id and e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    executions.sort(key=lambda e: (e.properties["time"].int_value, e.id), reverse=True)
    lines = []
    for execution in executions[:limit]:
        p = execution.properties
        when = datetime.datetime.fromtimestamp(p["time"].int_value).strftime("%Y-%m-%d %H:%M:%S")
        reason = f"; reason: {p['reason'].string_value}" if p["reason"].string_value else ""
        retired = p["retired_versions"].string_value.replace(",", ", ")
        lines.append(f"rolled back {when}: version {p['from_version'].int_value} -> {p['to_version'].int_value}"
                     f" (retired {retired}{reason})")
    return lines


def withdrawal(blessing) -> str:
    """"by the rollback to version V on DATE" for a blessing a rollback withdrew (still withdrawn), else ""."""
    if ROLLED_BACK_AT not in blessing.custom_properties or _int(blessing, BLESSED) == 1:
        return ""
    when = datetime.datetime.fromtimestamp(_int(blessing, ROLLED_BACK_AT)).strftime("%Y-%m-%d %H:%M:%S")
    return f"by the rollback to version {_int(blessing, ROLLED_BACK_TO)} on {when}"


def _execution_type(store) -> int:
    execution_type = metadata_store_pb2.ExecutionType(name=EXECUTION_TYPE)
    for name, value_type in _PROPERTIES.items():
        execution_type.properties[name] = value_type
    return store.put_execution_type(execution_type, can_add_fields=True)


def _input_event(key: str, index: int) -> metadata_store_pb2.Event:
    event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)
    event.path.steps.add().key = key
    event.path.steps.add().index = index
    return event


def _artifacts_of_type(store, type_name: str) -> List[metadata_store_pb2.Artifact]:
    try:
        return store.get_artifacts_by_type(type_name)
    except mlmd_errors.NotFoundError:
        return []


def _blessings(store) -> List[metadata_store_pb2.Artifact]:
    """The Evaluator's ModelBlessings (the ones naming a model), oldest first."""
    return sorted((b for b in _artifacts_of_type(store, "ModelBlessing") if CURRENT_MODEL_ID in b.custom_properties),
                  key=lambda b: b.id)


def _int(artifact, name: str) -> int:
    return artifact.custom_properties[name].int_value if name in artifact.custom_properties else 0


def _str(artifact, name: str) -> str:
    return artifact.custom_properties[name].string_value if name in artifact.custom_properties else ""
