"""Makes TFX's compiled PipelineJob runnable by the open-source Kubeflow Pipelines 2.x backend.

TFX's KubeflowV2DagRunner targets Vertex AI Pipelines. What the open-source backend (read from
kubeflow/pipelines 2.17.0: backend/src/v2/driver, backend/src/v2/compiler/argocompiler,
backend/src/v2/component/launcher_v2.go) does differently, and what is done about it here:

1. Parameters: the driver resolves only `runtimeValue.constant` and checks `parameterType`
   (resolve.go: resolveInputParameter, handleParamTypeValidationAndConversion); TFX's default
   schema 2.0.0 writes the deprecated `constantValue` and `type`. The runner compiles with
   `use_pipeline_spec_2_1=True`; `check` refuses a spec that still has the old fields.
2. Resolver executors (TFX's LatestBlessedModelResolver, `deploymentSpec.executors.*.resolver`,
   an MLMD query Vertex runs): the argo compiler rejects the whole pipeline ("resolver executors
   not implemented", compiler/argocompiler/dag.go). They are removed, with the inputs that read
   them (the Evaluator's `baseline_model`): on Kubeflow the Evaluator checks the absolute bars
   only, as on a first local run, not "no regression against the last blessed model".
3. Every container command goes through `kubeflow.entrypoint` (minio:// roots, S3 settings, the
   step's true exit status; see that module).

4. Settings every step needs and KFP does not give (it sets no AWS_ENDPOINT_URL at any release):
   `with_env` adds them to each container's `env`, which the driver puts in the pod (driver/driver.go
   2.2.0:380-384, 2.17.0:289-293).

Nothing here imports TFX; it edits the JSON.
"""
from __future__ import annotations

import copy
from typing import Dict, List

ENTRYPOINT = ["python", "-m", "kubeflow.entrypoint"]


class SpecCompatError(ValueError):
    """The compiled spec uses something the open-source KFP backend cannot run."""


def resolver_tasks(spec: Dict) -> List[str]:
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    components = spec.get("components", {})
    names = []
    for task_name, task in spec["root"]["dag"]["tasks"].items():
        label = components.get(task["componentRef"]["name"], {}).get("executorLabel")
        if label and "resolver" in executors.get(label, {}):
            names.append(task_name)
    return sorted(names)


def _drop_resolvers(spec: Dict) -> List[str]:
    dropped = resolver_tasks(spec)
    if not dropped:
        return []
    tasks = spec["root"]["dag"]["tasks"]
    for name in dropped:
        component = tasks.pop(name)["componentRef"]["name"]
        label = spec["components"].pop(component, {}).get("executorLabel")
        spec["deploymentSpec"]["executors"].pop(label, None)
    for task in tasks.values():
        artifacts = task.get("inputs", {}).get("artifacts", {})
        for key in [k for k, v in artifacts.items()
                    if v.get("taskOutputArtifact", {}).get("producerTask") in dropped]:
            del artifacts[key]
            definitions = spec["components"][task["componentRef"]["name"]].get("inputDefinitions", {})
            definitions.get("artifacts", {}).pop(key, None)
        if "dependentTasks" in task:
            task["dependentTasks"] = [t for t in task["dependentTasks"] if t not in dropped]
    return dropped


def _wrap_commands(spec: Dict) -> None:
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        containers = [executor.get("container")] if "container" in executor else []
        hook = executor.get("container", {}).get("lifecycle", {}).get("preCacheCheck")
        containers += [hook] if hook else []
        for container in containers:
            command = container.get("command") or []
            if command[:2] == ["python", "-m"] and len(command) == 3 and command[2] != ENTRYPOINT[2]:
                container["command"] = ENTRYPOINT + [command[2]]


def with_env(spec: Dict, env: Dict[str, str]) -> None:
    """Sets `env` (name -> value) in every container step of `spec`, in place."""
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        container = executor.get("container")
        if container is None or not env:
            continue
        kept = [item for item in container.get("env", []) if item.get("name") not in env]
        container["env"] = kept + [{"name": name, "value": value} for name, value in sorted(env.items())]


def check(spec: Dict) -> None:
    """Raises SpecCompatError for what the open-source driver would refuse."""
    problems = []
    for name, task in spec["root"]["dag"]["tasks"].items():
        for param, value in task.get("inputs", {}).get("parameters", {}).items():
            if "constantValue" in value.get("runtimeValue", {}):
                problems.append(f"{name}.{param}: runtimeValue.constantValue (schema 2.0; the KFP driver reads `constant`)")
    for name, component in spec.get("components", {}).items():
        for param, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if "parameterType" not in definition:
                problems.append(f"{name}.{param}: no parameterType")
    if resolver_tasks(spec):
        problems.append("resolver executors: " + ", ".join(resolver_tasks(spec)))
    if problems:
        raise SpecCompatError("not runnable by open-source Kubeflow Pipelines: " + "; ".join(problems[:5]))


def for_open_source_kfp(job: Dict) -> Dict:
    """A copy of the PipelineJob with the changes of the module docstring."""
    job = copy.deepcopy(job)
    spec = job["pipelineSpec"]
    _drop_resolvers(spec)
    _wrap_commands(spec)
    check(spec)
    return job
