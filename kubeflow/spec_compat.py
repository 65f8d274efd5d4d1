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
   not implemented", compiler/argocompiler/dag.go). The pipeline compiled for Kubeflow has none
   (its baseline is `components/serving_baseline.py`); any left are removed with the inputs that
   read them, and `check` refuses them.
3. Every container command goes through `kubeflow.entrypoint` (minio:// roots, S3 settings, the
   step's true exit status; see that module).

4. The input data's fingerprint in KFP's cache key (`add_input_fingerprint`, `kubeflow/input_fingerprint.py`),
   and no cache for the tasks whose result is the volume's state now rather than a function of their
   inputs (`VOLUME_STATE_TASKS`): KFP's cache key sees only parameters, input artifact ids, image and
   command (backend/src/v2/cacheutils/cache.go GenerateCacheKey), so a cached ServingBaseline would
   hand every later run the first run's answer ("nothing served"), and a cached ServedModel (the scoring
   pipeline's) would score with the first run's model.
5. Settings every step needs and KFP does not give (it sets no AWS_ENDPOINT_URL at any release):
   `with_env` adds them to each container's `env`, which the driver puts in the pod (driver/driver.go
   2.2.0:380-384, 2.17.0:289-293).

Nothing here imports TFX; it edits the JSON.
"""
from __future__ import annotations

import copy
from typing import Dict, List

from kubeflow import input_fingerprint  # imports TFX only when it runs

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


FINGERPRINT_TASK = "InputFingerprint"
FINGERPRINT_PARAMETER = input_fingerprint.PARAMETER
SERVING_BASELINE_TASK = "ServingBaseline"  # components/serving_baseline.py, on Kubeflow (PipelineConfig.baseline)
SERVED_MODEL_TASK = "ServedModel"  # the same component in the scoring pipeline (pipeline/score_pipeline.py)
VOLUME_STATE_TASKS = (FINGERPRINT_TASK, SERVING_BASELINE_TASK, SERVED_MODEL_TASK)


def add_input_fingerprint(spec: Dict, example_gen: str = "CsvExampleGen") -> None:
    """An uncached first task fingerprinting `example_gen`'s input files, its output a parameter of
    `example_gen`, so KFP's cache key changes when the data does (kubeflow/input_fingerprint.py)."""
    tasks = spec["root"]["dag"]["tasks"]
    if example_gen not in tasks or FINGERPRINT_TASK in tasks:
        return
    task = tasks[example_gen]
    component = spec["components"][task["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    label, name = f"{FINGERPRINT_TASK}_executor", FINGERPRINT_TASK
    spec["deploymentSpec"]["executors"][label] = {"container": {
        "image": container["image"], "command": ENTRYPOINT + ["kubeflow.input_fingerprint"],
        "args": ["--input-base", "{{$.inputs.parameters['input_base']}}",
                 "--input-config", "{{$.inputs.parameters['input_config']}}",
                 "--output", "{{$.outputs.parameters['fingerprint'].output_file}}"]}}
    spec["components"][name] = {
        "executorLabel": label,
        "inputDefinitions": {"parameters": {"input_base": {"parameterType": "STRING"},
                                            "input_config": {"parameterType": "STRING"}}},
        "outputDefinitions": {"parameters": {"fingerprint": {"parameterType": "STRING"}}}}
    parameters = task["inputs"]["parameters"]
    tasks[FINGERPRINT_TASK] = {
        "taskInfo": {"name": FINGERPRINT_TASK}, "componentRef": {"name": name},
        "inputs": {"parameters": {"input_base": parameters["input_base"], "input_config": parameters["input_config"]}}}
    parameters[FINGERPRINT_PARAMETER] = {"taskOutputParameter": {"producerTask": FINGERPRINT_TASK,
                                                                 "outputParameterKey": "fingerprint"}}
    component["inputDefinitions"]["parameters"][FINGERPRINT_PARAMETER] = {"parameterType": "STRING"}
    task["dependentTasks"] = sorted(set(task.get("dependentTasks", [])) | {FINGERPRINT_TASK})


def _uncache_volume_state_tasks(spec: Dict) -> None:
    """enableCache false (an empty `cachingOptions`) for VOLUME_STATE_TASKS: they look at the volume on every run."""
    for name, task in spec["root"]["dag"]["tasks"].items():
        if name in VOLUME_STATE_TASKS:
            task["cachingOptions"] = {}


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
            if "runtimeValue" not in value and "taskOutputParameter" not in value:
                problems.append(f"{name}.{param}: neither a constant nor an upstream task's output")
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


def for_open_source_kfp(job: Dict, fingerprint: bool = True) -> Dict:
    """A copy of the PipelineJob with the changes of the module docstring. `fingerprint=False` for a
    pipeline compiled with caching off (the scoring pipeline): the fingerprint serves only the cache key."""
    job = copy.deepcopy(job)
    spec = job["pipelineSpec"]
    _drop_resolvers(spec)
    _wrap_commands(spec)
    if fingerprint:
        add_input_fingerprint(spec)
    _uncache_volume_state_tasks(spec)
    check(spec)
    return job
