"""A local stand-in for the open-source Kubeflow Pipelines 2.x backend: runs a compiled PipelineJob's
tasks one by one, each in a real container of the pipeline image. A test harness, not a product runtime.

It follows kubeflow/pipelines at tag 2.17.0 (the current KFP backend release), file by file:
- backend/src/v2/driver/root_dag.go, metadata/client.go (GetPipeline): the run's pipeline root
  is `<runtimeConfig.gcsOutputDirectory>/<pipelineInfo.name>/<run id>`;
- backend/src/v2/driver/resolve.go (resolveInputs): parameters come only from
  `runtimeValue.constant` (any other kind is "not implemented"), are checked against the
  component's `parameterType` (a non-string for STRING is converted to text, other mismatches
  fail), artifacts from the producer task's recorded outputs;
- backend/src/v2/metadata/converter.go (toRuntimeArtifact) and client.go (RecordArtifact,
  OutputArtifact.ToRuntimeArtifact): a downstream task sees an upstream artifact as
  name = its MLMD id, uri, metadata = properties + custom properties (ints and bools become numbers,
  `display_name` and `store_session_info` added), type = `{instanceSchema: <the producer's output schema>}`;
- backend/src/v2/driver/driver.go (provisionOutputs): output URIs `<run root>/<task>/<uuid>/<name>`,
  output parameters in /tmp/kfp/outputs/<name>, the executor output file
  `LocalPathForURI(<run root>/<task>/<uuid>)/output_metadata.json`;
- backend/src/v2/component/launcher_v2.go: the executor input gets the component's parameter
  defaults (addDefaultParams), `{{$}}` and the `{{$.inputs...}}` / `{{$.outputs...}}` placeholders are
  replaced in command and args (compileCmdAndArgs, getPlaceholders), local output folders are
  created (prepareOutputFolders), the command runs, then the executor output file is read
  (getExecutorOutputFile: missing = empty), its artifacts merged into the provisioned ones
  (mergeRuntimeArtifacts: uri and metadata), local artifact folders uploaded under the pipeline
  root (KeyFromURI must find the root's prefix), output parameters collected, artifacts recorded;
- backend/src/v2/compiler/argocompiler/dag.go: importer/resolver executors are refused.
Kubernetes specifics come from the platform spec that `taxi-pipeline submit` sends (pvcMount,
secretAsEnv as kfp-kubernetes compiles them); the volume is a host directory bind-mounted at
its in-cluster path, a secret a dict.

Not emulated: caching (every task runs), retries, the MLMD server (an in-memory record), the
Argo workflow around the pods, the `lifecycle.preCacheCheck` hook (the open-source driver ignores it too).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Dict, List, Optional

LOCAL_ROOTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
TERMINATED_ERROR_MARKERS = ("TAXI_STEP_ERROR:", "TRAINER_WORKER_ERROR:")


class TaskFailed(RuntimeError):
    """One task failed; str() is one line naming the task and the cause."""

    def __init__(self, task: str, reason: str):
        super().__init__(f"task {task} failed: {reason}")
        self.task, self.reason = task, reason


def local_path_for_uri(uri: str) -> str:
    """component.LocalPathForURI."""
    for scheme, local in LOCAL_ROOTS.items():
        if uri.startswith(scheme):
            return local + uri[len(scheme):]
    raise ValueError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


def prefixed_bucket(root: str) -> str:
    """objectstore.ParseBucketConfig(root).PrefixedBucket()."""
    match = re.match(r"(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?$", root)
    if not match or match.group(1) not in LOCAL_ROOTS:
        raise ValueError(f"parse bucket config failed: unsupported pipeline root {root!r}")
    prefix = (match.group(3) or "").strip("/")
    return match.group(1) + (f"{match.group(2)}/{prefix}" if prefix else match.group(2))


def _text(value) -> str:
    """metadata.PbValueToText (for a non-string value given to a STRING parameter)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) and value.is_integer() else str(value)
    return json.dumps(value)


@dataclasses.dataclass
class RecordedArtifact:
    """An artifact as ML Metadata holds it after the launcher's RecordArtifact."""

    id: int
    uri: str
    schema: str
    custom_properties: Dict

    def runtime_artifact(self) -> Dict:
        """OutputArtifact.ToRuntimeArtifact: what a downstream task's driver puts in its executor input."""
        return {"name": str(self.id), "uri": self.uri, "type": {"instanceSchema": self.schema},
                "metadata": dict(self.custom_properties)}


@dataclasses.dataclass
class TaskResult:
    name: str
    executor_input: Dict
    executor_output: Dict
    outputs: Dict[str, RecordedArtifact]
    log: str


class Container:
    """How a task's container is started: engine argv prefix, image, network."""

    def __init__(self, engine: List[str], network: str = "host", timeout_s: float = 900):
        self.engine, self.network, self.timeout_s = list(engine), network, timeout_s

    def run(self, image: str, command: List[str], mounts: Dict[str, str], env: Dict[str, str],
            name: str) -> subprocess.CompletedProcess:
        argv = self.engine + ["run", "--rm", "--name", name, "--network", self.network]
        for host, target in sorted(mounts.items(), key=lambda m: m[1]):
            argv += ["--volume", f"{host}:{target}"]
        for key, value in sorted(env.items()):
            argv += ["--env", f"{key}={value}"]
        argv += ["--entrypoint", command[0], image] + command[1:]
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=self.timeout_s)


class LocalKfp:
    """Runs one PipelineJob: `LocalKfp(job, ...).run()` -> {task: TaskResult}; raises TaskFailed."""

    def __init__(self, job: Dict, container: Container, *, work_dir: Path, volumes: Dict[str, Path],
                 platform: Optional[Dict] = None, secrets: Optional[Dict[str, Dict[str, str]]] = None,
                 env: Optional[Dict[str, str]] = None, s3_client=None, image: Optional[str] = None,
                 run_id: Optional[str] = None, log=print):
        self.job, self.spec = job, job["pipelineSpec"]
        self.container, self.work_dir = container, Path(work_dir)
        self.volumes = volumes  # claim name -> host directory
        self.platform = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}) \
            .get("executors", {})
        self.secrets, self.env, self.s3, self.image_override = secrets or {}, env or {}, s3_client, image
        self.run_id = run_id or str(uuid.uuid4())
        root = (job.get("runtimeConfig") or {}).get("gcsOutputDirectory") or self.spec.get("defaultPipelineRoot")
        if not root:
            raise ValueError("no pipeline root: neither runtimeConfig.gcsOutputDirectory nor defaultPipelineRoot")
        self.pipeline_root = root
        self.bucket_prefix = prefixed_bucket(root)
        self.run_root = f"{root.rstrip('/')}/{self.spec['pipelineInfo']['name']}/{self.run_id}"
        self.records: Dict[str, Dict[str, RecordedArtifact]] = {}
        self.next_id = 1
        self.log = log

    # --- order ------------------------------------------------------------------------------
    def order(self) -> List[str]:
        tasks = self.spec["root"]["dag"]["tasks"]
        deps = {name: set(task.get("dependentTasks", [])) |
                {a["taskOutputArtifact"]["producerTask"] for a in task.get("inputs", {}).get("artifacts", {}).values()
                 if "taskOutputArtifact" in a}
                for name, task in tasks.items()}
        done: List[str] = []
        while len(done) < len(tasks):
            ready = sorted(n for n in tasks if n not in done and deps[n] <= set(done))
            if not ready:
                raise ValueError(f"dependency cycle among {sorted(set(tasks) - set(done))}")
            done.append(ready[0])
        return done

    # --- driver -----------------------------------------------------------------------------
    def _inputs(self, name: str, task: Dict, component: Dict) -> Dict:
        definitions = component.get("inputDefinitions", {}).get("parameters", {})
        parameters = {}
        for param, spec in task.get("inputs", {}).get("parameters", {}).items():
            runtime = spec.get("runtimeValue")
            if runtime is None or "constant" not in runtime:
                kind = next(iter(runtime), "?") if runtime else next(iter(spec), "?")
                raise TaskFailed(name, f"driver: input parameter {param!r}: parameter spec of type {kind} not implemented")
            parameters[param] = runtime["constant"]
        for param, definition in definitions.items():  # handleParamTypeValidationAndConversion
            if param not in parameters:
                if not definition.get("isOptional") and "defaultValue" not in definition:
                    raise TaskFailed(name, f"driver: neither value nor default value provided for non-optional parameter {param!r}")
                continue
            kind, value = definition.get("parameterType"), parameters[param]
            if kind == "STRING":
                if not isinstance(value, str):
                    parameters[param] = _text(value)
            elif isinstance(value, str) or (
                    isinstance(value, bool) and kind != "BOOLEAN") or (
                    isinstance(value, (int, float)) and not isinstance(value, bool)
                    and kind not in ("NUMBER_INTEGER", "NUMBER_DOUBLE")):
                raise TaskFailed(name, f"driver: input parameter {param!r} type mismatch: expect {kind}, got {type(value).__name__}")
        artifacts = {}
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            output = spec.get("taskOutputArtifact")
            if not output:
                raise TaskFailed(name, f"driver: artifact spec {spec} not implemented")
            produced = self.records.get(output["producerTask"], {}).get(output["outputArtifactKey"])
            if produced is None:
                raise TaskFailed(name, f"driver: cannot find output artifact key {output['outputArtifactKey']!r} "
                                       f"in producer task {output['producerTask']!r}")
            artifacts[key] = {"artifacts": [produced.runtime_artifact()]}
        return {"parameterValues": parameters, "artifacts": artifacts}

    def _outputs(self, name: str, component: Dict) -> Dict:
        task_root = f"{self.run_root}/{name}/{uuid.uuid4()}"
        definitions = component.get("outputDefinitions", {})
        artifacts = {}
        for key, spec in definitions.get("artifacts", {}).items():
            artifact = {"name": key, "uri": f"{task_root}/{key}", "type": spec["artifactType"]}
            if spec.get("metadata"):
                artifact["metadata"] = spec["metadata"]
            artifacts[key] = {"artifacts": [artifact]}
        parameters = {key: {"outputFile": f"/tmp/kfp/outputs/{key}"} for key in definitions.get("parameters", {})}
        return {"artifacts": artifacts, "parameters": parameters,
                "outputFile": local_path_for_uri(task_root) + "/output_metadata.json"}

    # --- launcher ---------------------------------------------------------------------------
    @staticmethod
    def _placeholders(executor_input: Dict) -> Dict[str, str]:
        found = {}
        for key, artifacts in executor_input["inputs"].get("artifacts", {}).items():
            first = artifacts["artifacts"][0]
            found[f"{{{{$.inputs.artifacts['{key}'].uri}}}}"] = first["uri"]
            found[f"{{{{$.inputs.artifacts['{key}'].path}}}}"] = local_path_for_uri(first["uri"])
        for key, artifacts in executor_input["outputs"].get("artifacts", {}).items():
            first = artifacts["artifacts"][0]
            found[f"{{{{$.outputs.artifacts['{key}'].uri}}}}"] = first["uri"]
            found[f"{{{{$.outputs.artifacts['{key}'].path}}}}"] = local_path_for_uri(first["uri"])
        for key, value in executor_input["inputs"].get("parameterValues", {}).items():
            found[f"{{{{$.inputs.parameters['{key}']}}}}"] = value if isinstance(value, str) else (
                _text(value) if not isinstance(value, (list, dict)) else json.dumps(value, separators=(",", ":")))
        for key, param in executor_input["outputs"].get("parameters", {}).items():
            found[f"{{{{$.outputs.parameters['{key}'].output_file}}}}"] = param["outputFile"]
        return found

    def _compile_args(self, executor_input: Dict, component: Dict, container: Dict) -> List[str]:
        with_defaults = json.loads(json.dumps(executor_input))  # addDefaultParams
        for param, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if "defaultValue" in definition and param not in with_defaults["inputs"]["parameterValues"]:
                with_defaults["inputs"]["parameterValues"][param] = definition["defaultValue"]
        document = json.dumps(with_defaults, separators=(",", ":"))
        placeholders = self._placeholders(with_defaults)
        compiled = []
        for arg in list(container.get("command", [])) + list(container.get("args", [])):
            arg = arg.replace("{{$}}", document)
            for placeholder, value in placeholders.items():
                arg = arg.replace(placeholder, value)
            compiled.append(arg)
        return compiled

    def _mounts_and_env(self, label: str, local_root: Path) -> (Dict[str, str], Dict[str, str]):
        mounts = {str(local_root / local.strip("/")): local.rstrip("/") for local in LOCAL_ROOTS.values()}
        mounts[str(local_root / "tmp-kfp")] = "/tmp/kfp"
        env = dict(self.env)
        config = self.platform.get(label, {})
        for mount in config.get("pvcMount", []):
            claim = mount.get("constant") or mount.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
            if claim not in self.volumes:
                raise KeyError(f"no volume for PersistentVolumeClaim {claim!r}")
            mounts[str(self.volumes[claim])] = mount["mountPath"]
        for secret in config.get("secretAsEnv", []):
            name = secret.get("secretName") or secret.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant")
            data = self.secrets.get(name)
            if data is None:
                raise KeyError(f"secret {name!r} not found")
            for mapping in secret.get("keyToEnv", []):
                env[mapping["envVar"]] = data[mapping["secretKey"]]
        return mounts, env

    def _upload(self, local_root: Path, artifact: Dict) -> None:
        """objectstore.UploadBlob of the artifact's local folder (TFX writes remote URIs itself: usually empty)."""
        local = local_root / local_path_for_uri(artifact["uri"]).lstrip("/")
        if not local.exists():
            return
        files = [p for p in local.rglob("*") if p.is_file()] if local.is_dir() else [local]
        if files and self.s3 is None:
            raise RuntimeError(f"cannot upload {local}: no object store client")
        bucket, key = artifact["uri"].split("://", 1)[1].split("/", 1)
        for path in files:
            relative = path.relative_to(local).as_posix() if local.is_dir() else ""
            blob = "/".join(p for p in [key, relative] if p)
            self.s3.upload_file(str(path), bucket, blob)

    def _record(self, key: str, artifact: Dict) -> RecordedArtifact:
        schema_kind = artifact.get("type", {})
        if "instanceSchema" in schema_kind:
            schema = schema_kind["instanceSchema"]
        elif "schemaTitle" in schema_kind:
            schema = "title: " + schema_kind["schemaTitle"]
        else:
            raise ValueError(f"failed to determine schema for output {key!r}")
        properties = {}
        for name, value in (artifact.get("metadata") or {}).items():  # toMLMDArtifact, then toRuntimeArtifact
            if name == "_kfp_workspace":
                continue
            properties[name] = float(int(value)) if isinstance(value, bool) else (
                float(value) if isinstance(value, (int, float)) else
                {"list": value} if isinstance(value, list) else
                {"struct": value} if isinstance(value, dict) else value)
        properties.setdefault("display_name", key)
        properties.setdefault("store_session_info", json.dumps({"Provider": self.pipeline_root.split("://")[0],
                                                                 "Params": {}}))
        record = RecordedArtifact(self.next_id, artifact["uri"],
                                  # RecordArtifact keeps GetType().GetInstanceSchema(): "" for schemaTitle types
                                  schema_kind.get("instanceSchema", ""), properties)
        self.next_id += 1
        return record

    def run_task(self, name: str) -> TaskResult:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        label = component.get("executorLabel")
        executor = self.spec["deploymentSpec"]["executors"].get(label, {})
        if "container" not in executor:
            kind = next(iter(executor), "none")
            raise TaskFailed(name, f"{kind} executors not implemented (open-source KFP backend)")
        container = executor["container"]
        executor_input = {"inputs": self._inputs(name, task, component), "outputs": self._outputs(name, component)}
        argv = self._compile_args(executor_input, component, container)

        local_root = self.work_dir / name
        for sub in ("gcs", "minio", "s3", "tmp-kfp"):
            (local_root / sub).mkdir(parents=True, exist_ok=True)
        for artifacts in executor_input["outputs"]["artifacts"].values():  # prepareOutputFolders
            local = Path(local_path_for_uri(artifacts["artifacts"][0]["uri"]))
            (local_root / local.parent.relative_to("/")).mkdir(parents=True, exist_ok=True)
        for path in [local_root] + list(local_root.rglob("*")):  # the image runs as a non-root user
            if path.is_dir():
                path.chmod(0o777)
        mounts, env = self._mounts_and_env(label, local_root)
        image = self.image_override or container["image"]
        self.log(f"[kfp-local] {name}: {' '.join(argv[:4])} ... in {image}")
        result = self.container.run(image, argv, mounts, env, name=f"kfp-{self.run_id[:8]}-{name.lower()}"[:60])
        if result.returncode != 0:
            raise TaskFailed(name, _failure_line(result.stdout, result.returncode))

        output_file = local_root / executor_input["outputs"]["outputFile"].lstrip("/")
        executor_output = json.loads(output_file.read_text()) if output_file.exists() else {}
        recorded = {}
        for key, artifacts in executor_input["outputs"]["artifacts"].items():
            artifact = artifacts["artifacts"][0]
            produced = (executor_output.get("artifacts", {}).get(key) or {}).get("artifacts") or []
            if produced:  # mergeRuntimeArtifacts
                if produced[0].get("uri"):
                    artifact["uri"] = produced[0]["uri"]
                if produced[0].get("metadata"):
                    artifact.setdefault("metadata", {}).update(produced[0]["metadata"])
            if not artifact["uri"].startswith(self.bucket_prefix):
                raise TaskFailed(name, f"launcher: failed to upload output artifact {key!r}: URI {artifact['uri']!r} "
                                       f"does not have expected bucket prefix {self.bucket_prefix!r}")
            self._upload(local_root, artifact)
            recorded[key] = self._record(key, artifact)
        for key, param in executor_input["outputs"]["parameters"].items():  # collectOutputParameters
            if key not in executor_output.get("parameterValues", {}):
                path = local_root / "tmp-kfp" / Path(param["outputFile"]).relative_to("/tmp/kfp")
                if not path.exists():
                    raise TaskFailed(name, f"launcher: failed to read output parameter {key!r}")
        self.records[name] = recorded
        return TaskResult(name, executor_input, executor_output, recorded, result.stdout)

    def run(self, stop_after: Optional[str] = None) -> Dict[str, TaskResult]:
        """Every task in dependency order (or up to `stop_after` and what it needs)."""
        order = self.order()
        if stop_after:
            needed, todo = set(), [stop_after]
            tasks = self.spec["root"]["dag"]["tasks"]
            while todo:
                name = todo.pop()
                if name not in needed:
                    needed.add(name)
                    todo += list(tasks[name].get("dependentTasks", []))
            order = [n for n in order if n in needed]
        results = {}
        for name in order:
            results[name] = self.run_task(name)
        return results


def _failure_line(log: str, code: int) -> str:
    """The step's own error line (our markers, else the last exception line), with the exit code."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for marker in TERMINATED_ERROR_MARKERS:
        for line in reversed(lines):
            if marker in line:
                return line.split(marker, 1)[1].strip() + f" (exit code {code})"
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]+(Error|Exception|Exit)\b.*:", line) or line.startswith("Error:"):
            return line[:400] + f" (exit code {code})"
    return (lines[-1][:400] if lines else "no output") + f" (exit code {code})"
