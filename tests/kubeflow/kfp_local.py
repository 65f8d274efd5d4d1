"""A local stand-in for the open-source Kubeflow Pipelines 2.x backend, by release: runs a compiled
PipelineJob's tasks one by one, each in a real container of the pipeline image, as that release's driver
and launcher would. A test harness, not a product runtime.

The rules are `kfp_backend.py`'s (one per release: 2.2.0, 2.5.0, 2.17.0), each cited to its Go file and
line at that tag; the launcher's in-pod work is `kfp_launcher.py`, run inside the task's container as the
image's user. Per task:
- driver (here): input parameters (`resolve_parameters`), input artifacts as the driver reads them back
  from ML Metadata (`runtime_artifact_from_mlmd`: no type, `instanceSchema: ""`), outputs provisioned
  (`provision_outputs`: `executor-logs` from 2.5.0, the release's URI layout and output file), the
  component's `{{$}}` and placeholders filled in after the launcher's addDefaultParams;
- pod: only the emptyDirs the release mounts (`Backend.empty_dirs`: /kfp-launcher alone on 2.2.0), each
  world-writable as an emptyDir is; the PVCs of the platform spec; the environment exactly as the release
  gives it (`pod_environment`: no AWS_ENDPOINT_URL unless the compiled step sets one) plus what
  Kubernetes itself adds (`kubelet_env`); the cluster's DNS names (`cluster_hosts`) as /etc/hosts;
- launcher (in the pod): output folders, download of every input, the command, the executor output
  merged, uploads, output parameters (`kfp_launcher.py`);
- record (here): each output as RecordArtifact stores it (`record_artifact`), which is all a
  downstream task's driver will see.
The launcher opens the object store with the run's session (`session_info`: the default MinIO session
of the release for a minio:// root, the `kfp-launcher` ConfigMap's `providers` otherwise).

Not emulated (one place: kfp_backend.py's docstring lists them): the Argo workflow, the MLMD server,
the cache (every task runs; `kfp_backend.cache_fingerprint` says what its key would see), retries.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import kfp_backend as kb

HERE = Path(__file__).resolve().parent
TERMINATED_ERROR_MARKERS = ("TAXI_STEP_ERROR:", "TRAINER_WORKER_ERROR:")


class TaskFailed(RuntimeError):
    """One task failed; str() is one line naming the task and the cause."""

    def __init__(self, task: str, reason: str):
        super().__init__(f"task {task} failed: {reason}")
        self.task, self.reason = task, reason


@dataclasses.dataclass
class TaskResult:
    name: str
    executor_input: Dict
    executor_output: Dict
    outputs: Dict[str, Dict]  # key -> the MLMD record (kfp_backend.record_artifact)
    log: str
    downloaded: Dict  # what the launcher downloaded before the command: {"objects": n, "bytes": n}


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
    """Runs one PipelineJob as KFP `backend` would: `LocalKfp(job, ...).run()` -> {task: TaskResult}."""

    def __init__(self, job: Dict, container: Container, *, backend: kb.Backend, work_dir: Path,
                 volumes: Dict[str, Path], platform: Optional[Dict] = None,
                 secrets: Optional[Dict[str, Dict[str, str]]] = None, launcher_config: Optional[Dict] = None,
                 cluster_hosts: Optional[Dict[str, str]] = None, kubelet_env: Optional[Dict[str, str]] = None,
                 image: Optional[str] = None, run_id: Optional[str] = None, log=print):
        self.job, self.spec, self.backend = job, job["pipelineSpec"], backend
        self.container, self.work_dir = container, Path(work_dir)
        self.volumes = volumes  # claim name -> host directory
        self.platform = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}) \
            .get("executors", {})
        self.secrets, self.image_override = secrets or {}, image
        self.cluster_hosts = cluster_hosts or {}
        self.env = dict(kubelet_env or {})  # what Kubernetes adds to every pod (KUBERNETES_SERVICE_HOST, ...)
        self.run_id = run_id or str(uuid.uuid4())
        launcher_config = launcher_config or {}
        # The root DAG driver: runtimeConfig's root, else the kfp-launcher ConfigMap's, else the default.
        root = (job.get("runtimeConfig") or {}).get("gcsOutputDirectory") or self.spec.get("defaultPipelineRoot") \
            or launcher_config.get("defaultPipelineRoot") or kb.DEFAULT_PIPELINE_ROOT
        self.pipeline_root = root
        self.run_root = backend.run_root(root, self.spec["pipelineInfo"]["name"], self.run_id)
        self.session = kb.session_info(backend, root, launcher_config.get("providers"))
        self.mlmd: Dict[str, Dict[str, Dict]] = {}  # task -> output key -> {"id", "record"}
        self.output_parameters: Dict[str, Dict[str, object]] = {}  # task -> its output parameters
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
        try:
            parameters = kb.resolve_parameters(task.get("inputs", {}), definitions, self.output_parameters)
        except ValueError as err:
            raise TaskFailed(name, f"driver: {err}") from None
        artifacts = {}
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            output = spec.get("taskOutputArtifact")
            if not output:
                raise TaskFailed(name, f"driver: artifact spec {spec} not implemented")
            produced = self.mlmd.get(output["producerTask"], {}).get(output["outputArtifactKey"])
            if produced is None:
                raise TaskFailed(name, f"driver: cannot find output artifact key {output['outputArtifactKey']!r} "
                                       f"in producer task {output['producerTask']!r}")
            artifacts[key] = {"artifacts": [kb.runtime_artifact_from_mlmd(produced["id"], produced["record"])]}
        return {"parameterValues": parameters, "artifacts": artifacts}

    # --- launcher: placeholders (launcher_v2.go compileCmdAndArgs / getPlaceholders) ----------
    @staticmethod
    def _placeholders(executor_input: Dict) -> Dict[str, str]:
        found = {}
        for key, artifacts in executor_input["inputs"].get("artifacts", {}).items():
            first = artifacts["artifacts"][0]
            found[f"{{{{$.inputs.artifacts['{key}'].uri}}}}"] = first["uri"]
            found[f"{{{{$.inputs.artifacts['{key}'].path}}}}"] = kb.local_path_for_uri(first["uri"])
        for key, artifacts in executor_input["outputs"].get("artifacts", {}).items():
            first = artifacts["artifacts"][0]
            found[f"{{{{$.outputs.artifacts['{key}'].uri}}}}"] = first["uri"]
            found[f"{{{{$.outputs.artifacts['{key}'].path}}}}"] = kb.local_path_for_uri(first["uri"])
        for key, value in executor_input["inputs"].get("parameterValues", {}).items():
            found[f"{{{{$.inputs.parameters['{key}']}}}}"] = value if isinstance(value, str) else (
                kb.pb_value_to_text(value) if not isinstance(value, (list, dict)) else json.dumps(value, separators=(",", ":")))
        for key, param in executor_input["outputs"].get("parameters", {}).items():
            found[f"{{{{$.outputs.parameters['{key}'].output_file}}}}"] = param["outputFile"]
        return found

    def _compile_args(self, executor_input: Dict, component: Dict, container: Dict) -> List[str]:
        with_defaults = kb.add_default_params(executor_input, component.get("inputDefinitions", {}).get("parameters", {}))
        document = json.dumps(with_defaults, separators=(",", ":"))
        placeholders = self._placeholders(with_defaults)
        compiled = []
        for arg in list(container.get("command", [])) + list(container.get("args", [])):
            arg = arg.replace("{{$}}", document)
            for placeholder, value in placeholders.items():
                arg = arg.replace(placeholder, value)
            compiled.append(arg)
        return compiled

    # --- pod --------------------------------------------------------------------------------
    def _pod(self, name: str, label: str, container: Dict, pod_dir: Path):
        """(mounts host -> target, environment) of the task's pod."""
        mounts = {}
        for target in self.backend.empty_dirs:  # emptyDirs: world-writable, as Kubernetes makes them
            host = pod_dir / ("emptydir" + target.replace("/", "-"))
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o777)
            mounts[str(host)] = target
        hosts = pod_dir / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {host}\n" for host, ip in self.cluster_hosts.items()))
        mounts[str(hosts)] = "/etc/hosts"
        config = self.platform.get(label, {})
        for mount in config.get("pvcMount", []):
            claim = mount.get("constant") or mount.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
            if claim not in self.volumes:
                raise TaskFailed(name, f"PersistentVolumeClaim {claim!r} not found")
            mounts[str(self.volumes[claim])] = mount["mountPath"]
        secret_env = {}
        for secret in config.get("secretAsEnv", []):
            secret_name = secret.get("secretName") or \
                secret.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant")
            data = self.secrets.get(secret_name)
            if data is None:
                raise TaskFailed(name, f"secret {secret_name!r} not found")
            for mapping in secret.get("keyToEnv", []):
                secret_env[mapping["envVar"]] = data[mapping["secretKey"]]
        env = {**self.env, **kb.pod_environment(self.backend, f"kfp-{name.lower()}", str(uuid.uuid4()),
                                                  container.get("env", []), secret_env)}
        return mounts, env

    def _launcher_session(self) -> Dict:
        """The session as the launcher opens it, the secret read for it (the Kubernetes API read)."""
        params = dict(self.session.get("Params", {}))
        if params.get("fromEnv") == "true":
            raise ValueError("a fromEnv session (an s3:// root with no kfp-launcher providers entry) opens AWS "
                             "itself; give the harness a launcher_config with providers")
        secret = self.secrets[params["secretName"]]
        return {"endpoint": params.get("endpoint"), "region": params.get("region"),
                "disableSSL": params.get("disableSSL", "false") == "true",
                "accessKey": secret[params["accessKeyKey"]], "secretKey": secret[params["secretKeyKey"]]}

    def run_task(self, name: str) -> TaskResult:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        label = component.get("executorLabel")
        executor = self.spec["deploymentSpec"]["executors"].get(label, {})
        if "container" not in executor:
            kind = next(iter(executor), "none")
            raise TaskFailed(name, f"{kind} executors not implemented (open-source KFP backend)")
        container = executor["container"]
        task_root = self.backend.task_root(self.run_root, name, str(uuid.uuid4()))
        executor_input = {"inputs": self._inputs(name, task, component),
                          "outputs": kb.provision_outputs(self.backend, task_root, component.get("outputDefinitions", {}))}
        argv = self._compile_args(executor_input, component, container)

        pod_dir = self.work_dir / name
        if pod_dir.exists():
            shutil.rmtree(pod_dir)
        mounts, env = self._pod(name, label, container, pod_dir)
        launcher_dir = next(Path(h) for h, t in mounts.items() if t == "/kfp-launcher")
        for source in ("kfp_launcher.py", "kfp_backend.py"):
            shutil.copy(HERE / source, launcher_dir / source)
        (launcher_dir / "task.json").write_text(json.dumps({
            "version": self.backend.version, "executorInput": executor_input, "runRoot": self.run_root,
            "session": self._launcher_session()}))
        image = self.image_override or container["image"]
        self.log(f"[kfp-{self.backend.version}] {name}: {' '.join(argv[:4])} ... in {image}")
        command = ["python", "/kfp-launcher/kfp_launcher.py", "/kfp-launcher/task.json", "--"] + argv
        result = self.container.run(image, command, mounts, env, name=f"kfp-{self.run_id[:8]}-{name.lower()}"[:60])
        outcome_file = launcher_dir / "result.json"
        outcome = json.loads(outcome_file.read_text()) if outcome_file.exists() else {}
        if result.returncode != 0:
            reason = outcome.get("launcherError") or _failure_line(result.stdout, result.returncode)
            raise TaskFailed(name, reason if "exit code" in reason else f"{reason} (exit code {result.returncode})")

        recorded = {}
        for key, artifact in outcome["outputs"].items():  # the launcher's RecordArtifact
            try:
                record = kb.record_artifact(self.backend, key, artifact, self.session)
            except ValueError as err:
                raise TaskFailed(name, f"launcher: {err}") from None
            recorded[key] = {"id": self.next_id, "record": record}
            self.next_id += 1
        self.mlmd[name] = recorded
        self.output_parameters[name] = outcome.get("parameters", {})
        return TaskResult(name, executor_input, outcome.get("executorOutput", {}),
                          {k: v["record"] for k, v in recorded.items()}, result.stdout, outcome["downloaded"])

    def run(self, stop_after: Union[None, str, Sequence[str]] = None) -> Dict[str, TaskResult]:
        """Every task in dependency order (or up to the task(s) `stop_after` and what they need)."""
        order = self.order()
        if stop_after:
            needed, todo = set(), [stop_after] if isinstance(stop_after, str) else list(stop_after)
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
