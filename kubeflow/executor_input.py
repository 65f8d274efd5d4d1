"""The ExecutorInput an open-source Kubeflow Pipelines backend sends, made into the one TFX reads.

TFX 1.16's step entry point (`tfx/orchestration/kubeflow/v2/container/kubeflow_v2_run_executor.py`)
was written for Vertex AI Pipelines, which sends every artifact with its full type. The open-source
KFP backend (kubeflow/pipelines at 2.2.0, 2.5.0 and 2.17.0; lines in `tests/kubeflow/kfp_backend.py`,
which reproduces each rule) sends two things TFX cannot read:

1. Input artifacts without their type. The driver reads an upstream task's outputs back from ML
   Metadata (`metadata/client.go` GetOutputArtifactsByExecutionId: `Schema: ""`, "TODO(Bobgy):
   figure out how to get schema") and `OutputArtifact.ToRuntimeArtifact` writes
   `type: {instanceSchema: ""}`. TFX's `kubeflow_v2_entrypoint_utils._retrieve_class_path` then
   `yaml.safe_load("")` -> None -> `AttributeError: 'NoneType' object has no attribute 'get'`
   (tensorflow/tfx#7768). The compiled step carries each input's type in its own argument
   `--json_serialized_inputs_spec_args` (`artifacts.<key>.artifactType`): it is put back from there.
2. From 2.5.0, an extra output `executor-logs` of type `system.Artifact` in every task
   (`driver/driver.go` provisionOutputs, with `--publish_logs`, "true" by default). TFX parses every
   output and fails (`ImportError: Could not import system.Artifact`). It is the launcher's own
   (it uploads the step's log there): it is taken out of what TFX sees, and TFX's executor output
   does not name it, so the launcher keeps the artifact it provisioned (`mergeRuntimeArtifacts`
   changes only the outputs the executor output lists).

3. Parameters that exist only for KFP's cache key (`input_fingerprint`, kubeflow/input_fingerprint.py)
   are taken out: TFX's executors take their exec properties as given.

TFX's internals this relies on (the flag names, `_retrieve_class_path`'s reading of the type) are
checked by `tests/kubeflow/test_kubeflow_executor_input.py` against the installed TFX.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from kubeflow import input_fingerprint  # imports TFX only when it runs

INVOCATION_FLAG = "--json_serialized_invocation_args"
INPUTS_SPEC_FLAG = "--json_serialized_inputs_spec_args"
# driver/driver.go (2.5.0: provisionOutputs; 2.17.0 the same): the launcher's log artifact.
BACKEND_OUTPUT_KEYS = ("executor-logs",)
CACHE_KEY_PARAMETERS = (input_fingerprint.PARAMETER,)  # kubeflow/spec_compat.py add_input_fingerprint


def flag_value(args: List[str], flag: str) -> Tuple[Optional[int], Optional[str]]:
    """(index of the value in `args`, value) of `flag VALUE` or `flag=VALUE`; (None, None) if absent."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return i + 1, args[i + 1]
        if arg.startswith(flag + "="):
            return i, arg[len(flag) + 1:]
    return None, None


def _has_type(runtime_artifact: Dict) -> bool:
    kind = runtime_artifact.get("type") or {}
    return bool(kind.get("instanceSchema") or kind.get("schemaTitle"))


def restore_input_types(executor_input: Dict, inputs_spec: Dict) -> List[str]:
    """Puts the compiled type on every input artifact that arrived without one; returns their keys.

    An input with no type in the compiled spec either is left as it is (TFX then says which).
    """
    declared = (inputs_spec or {}).get("artifacts", {})
    restored = []
    for key, artifact_list in (executor_input.get("inputs", {}).get("artifacts") or {}).items():
        kind = (declared.get(key) or {}).get("artifactType")
        for artifact in artifact_list.get("artifacts", []):
            if not _has_type(artifact) and kind:
                artifact["type"] = dict(kind)
                restored.append(key)
    return sorted(set(restored))


def _drop(mapping: Dict, keys) -> List[str]:
    dropped = [key for key in keys if key in mapping]
    for key in dropped:
        del mapping[key]
    return dropped


def drop_backend_outputs(executor_input: Dict) -> List[str]:
    """Takes the backend's own outputs (`executor-logs`) out of what TFX sees; returns the keys taken."""
    return _drop(executor_input.get("outputs", {}).get("artifacts") or {}, BACKEND_OUTPUT_KEYS)


def drop_cache_key_parameters(executor_input: Dict) -> List[str]:
    """Takes the parameters that exist for KFP's cache key alone out of what TFX sees."""
    return _drop(executor_input.get("inputs", {}).get("parameterValues") or {}, CACHE_KEY_PARAMETERS)


def adapt_args(args: List[str]) -> Tuple[List[str], Dict[str, List[str]]]:
    """The step's arguments with the ExecutorInput adapted; and what was changed (for the log).

    Arguments without an ExecutorInput (not a TFX executor step), or with one that is not JSON,
    come back unchanged.
    """
    index, invocation = flag_value(args, INVOCATION_FLAG)
    if index is None or not invocation or not invocation.lstrip().startswith("{"):
        return list(args), {}
    _, spec_text = flag_value(args, INPUTS_SPEC_FLAG)
    try:
        executor_input = json.loads(invocation)
        inputs_spec = json.loads(spec_text) if spec_text else {}
    except ValueError:  # TFX's own parser says what is wrong with it
        return list(args), {}
    changes = {"restored input types": restore_input_types(executor_input, inputs_spec),
               "dropped backend outputs": drop_backend_outputs(executor_input),
               "dropped cache-key parameters": drop_cache_key_parameters(executor_input)}
    changes = {what: keys for what, keys in changes.items() if keys}
    if not changes:
        return list(args), {}
    text = json.dumps(executor_input, separators=(",", ":"))
    adapted = list(args)
    adapted[index] = text if adapted[index] == invocation else f"{INVOCATION_FLAG}={text}"
    return adapted, changes
