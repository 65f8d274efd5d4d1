"""A small fake of the Kubernetes API server, served on 127.0.0.1, for the TFJob launcher tests.

It implements only what the launcher uses: create/get/delete of `kubeflow.org/v1` TFJobs, listing
pods by label, reading a pod and a pod's log. What a job does after creation is decided by a
behaviour object:
- `Scripted(states, pods, logs)`: the job walks through `states` (one per GET; the last repeats),
  with the given pod statuses and logs - for success, failure, timeout and cancel paths;
- `LocalOperator()`: plays the training operator: runs each Worker replica's container command
  as a local process with an operator-style TF_CONFIG (ports on loopback), derives the job's
  conditions from their exit codes by the operator's own rules, success policy and cleanPodPolicy
  included (`operator_conditions`, `finished_pods_to_delete`), serves their output as pod logs,
  kills them on delete;
- `ContainerOperator(engine, volumes, secrets)`: the same, but each Worker replica is a container of
  the job's image (host network, so TF_CONFIG's loopback ports reach each other), with the pod
  template's volumes bind-mounted from host directories and its env, secretKeyRef values included.
Every request is recorded in `requests` so tests can assert what the launcher did.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional
from urllib.parse import parse_qs, urlparse

TFJOB_PATH = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs(?:/([^/]+))?$")
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")
JOB_NAME_LABEL = "training.kubeflow.org/job-name"


def condition(kind: str, reason: str = "", message: str = "") -> Dict:
    return {"type": kind, "status": "True", "reason": reason or f"TFJob{kind}", "message": message}


def pod(name: str, job: str, phase: str = "Running", terminated: Optional[Dict] = None,
        waiting: Optional[Dict] = None, reason: Optional[str] = None) -> Dict:
    """A pod as the API returns it (only the fields the launcher reads, plus required ones)."""
    state = {"running": {}} if not (terminated or waiting) else {}
    if terminated:
        state["terminated"] = terminated
    if waiting:
        state["waiting"] = waiting
    status = {"phase": phase, "containerStatuses": [
        {"name": "tensorflow", "image": "img", "imageID": "", "ready": phase == "Running",
         "restartCount": 0, "state": state}]}
    if reason:
        status["reason"] = reason
    return {"metadata": {"name": name, "namespace": "ns", "labels": {JOB_NAME_LABEL: job}}, "status": status}


class Scripted:
    """The job goes through `states` (lists of conditions), one step per GET of the job."""

    def __init__(self, states: List[List[Dict]], pods: Optional[List[Dict]] = None,
                 logs: Optional[Dict[str, str]] = None):
        self.states, self.pods_, self.logs = states, pods or [], logs or {}
        self.gets = 0

    def created(self, job: Dict) -> None:
        pass

    def status(self, job: Dict) -> Dict:
        state = self.states[min(self.gets, len(self.states) - 1)]
        self.gets += 1
        return {"conditions": state}

    def pods(self, job_name: str) -> List[Dict]:
        return copy.deepcopy(self.pods_)

    def log(self, pod_name: str) -> str:
        return self.logs.get(pod_name, "")

    def deleted(self, name: str) -> None:
        pass


def operator_conditions(job: Dict, exit_codes: List[Optional[int]]) -> List[Dict]:
    """The conditions kubeflow/training-operator v1.8.1 gives a Worker-only TFJob whose worker pods have
    these exit codes (None: still running), as its TFJobReconciler.UpdateJobStatus decides
    (pkg/controller.v1/tensorflow/tfjob_controller.go:464-511; same rules at v1.9.0, one line up):
    - Succeeded when every worker succeeded, or - with the default success policy ("", which
      SetDefaults_TFJob fills in: pkg/apis/kubeflow.org/v1/tensorflow_defaults.go:55-59) - as soon
      as worker 0 did (`expected == 0 || (worker0Completed && *SuccessPolicy != AllWorkers)`,
      tfjob_controller.go:468; worker0Completed: worker 0's pod Succeeded with exit code 0, :623);
    - otherwise Running while any worker runs (:478);
    - Failed when any worker failed (:486-511), appended last, which sets Running to False
      (pkg/util/status.go:141-144) and leaves a Succeeded set in the same pass in place.
    """
    workers = job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    policy = job["spec"].get("successPolicy") or ""
    succeeded = sum(1 for c in exit_codes if c == 0)
    running = sum(1 for c in exit_codes if c is None)
    failed = len(exit_codes) - succeeded - running
    worker0_completed = bool(exit_codes) and exit_codes[0] == 0
    conditions = [condition("Created")]
    if workers - succeeded == 0 or (worker0_completed and policy != "AllWorkers"):
        conditions += [dict(condition("Running"), status="False"), condition("Succeeded")]
    elif running > 0:
        conditions.append(condition("Running"))
    if failed > 0:
        for c in conditions:
            if c["type"] == "Running":
                c["status"] = "False"
        conditions.append(condition("Failed", message=f"TFJob has failed because {failed} Worker replica(s) failed."))
    return conditions


def finished_pods_to_delete(job: Dict, exit_codes: List[Optional[int]]) -> List[int]:
    """The worker indexes whose pods the operator deletes when the job has just finished, per its
    runPolicy.cleanPodPolicy (JobController.DeletePodsAndServices, pkg/controller.v1/common/job.go:43-71
    at v1.8.1): None (the default, tensorflow_defaults.go:52-54) deletes nothing; Running deletes the pods
    still Running or Pending (:57); All deletes every pod."""
    policy = job["spec"].get("runPolicy", {}).get("cleanPodPolicy") or "None"
    if policy == "None":
        return []
    return [i for i, code in enumerate(exit_codes) if policy == "All" or code is None]


class LocalOperator:
    """Runs a TFJob's Worker replicas as local processes, as the training operator would run pods."""

    def __init__(self):
        self.processes: Dict[str, List[subprocess.Popen]] = {}
        self.logs_: Dict[str, str] = {}
        self.names: Dict[str, List[str]] = {}
        self.final: Dict[str, Dict] = {}
        self.removed: set = set()

    def created(self, job: Dict) -> None:
        from components.multiworker_trainer.local_launcher import free_ports

        name = job["metadata"]["name"]
        worker = job["spec"]["tfReplicaSpecs"]["Worker"]
        container = worker["template"]["spec"]["containers"][0]
        replicas = worker["replicas"]
        ports = free_ports(replicas)
        command = list(container["command"]) + list(container.get("args", []))
        if command[0] == "python":  # the image's python is this interpreter here
            command[0] = sys.executable
        self.processes[name], self.names[name] = [], []
        for index in range(replicas):
            env = dict(os.environ)
            env.pop("TF_USE_LEGACY_KERAS", None)  # must come from the manifest, as in the pod
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": index}, "environment": "cloud"})
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            pod_name = f"{name}-worker-{index}"
            log_path = os.path.join(tempfile.gettempdir(), f"fake-k8s-{os.getpid()}-{pod_name}.log")
            self.logs_[pod_name] = log_path
            with open(log_path, "wb") as out:
                self.processes[name].append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                             start_new_session=True))
            self.names[name].append(pod_name)

    def status(self, job: Dict) -> Dict:
        """The job's status as the operator would write it; once Succeeded or Failed it no longer changes
        (ReconcileJobs only cleans up a finished job: common/job.go:122-145 at v1.8.1), and the pods the
        cleanPodPolicy names are deleted at that moment."""
        name = job["metadata"]["name"]
        if name in self.final:
            return self.final[name]
        codes = [p.poll() for p in self.processes[name]]
        conditions = operator_conditions(job, codes)
        if conditions[-1]["type"] in ("Succeeded", "Failed"):
            for index in finished_pods_to_delete(job, codes):
                self._delete_pod(name, index)
            self.final[name] = {"conditions": conditions}
        return {"conditions": conditions}

    def _delete_pod(self, job_name: str, index: int) -> None:
        process = self.processes[job_name][index]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.removed.add(self.names[job_name][index])

    def pods(self, job_name: str) -> List[Dict]:
        result = []
        for pod_name, process in zip(self.names.get(job_name, []), self.processes.get(job_name, [])):
            if pod_name in self.removed:  # deleted by the operator's cleanPodPolicy
                continue
            code = process.poll()
            if code is None:
                result.append(pod(pod_name, job_name))
            else:
                result.append(pod(pod_name, job_name, "Succeeded" if code == 0 else "Failed",
                                  terminated={"exitCode": code if code >= 0 else 128 - code,
                                              "reason": "Completed" if code == 0 else "Error"}))
        return result

    def log(self, pod_name: str) -> str:
        with open(self.logs_[pod_name], errors="replace") as f:
            return f.read()

    def deleted(self, name: str) -> None:
        for process in self.processes.get(name, []):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        for name in list(self.processes):
            self.deleted(name)
        for path in self.logs_.values():
            if os.path.exists(path):
                os.remove(path)


class ContainerOperator(LocalOperator):
    """Runs a TFJob's Worker replicas as containers of the job's image (see the module docstring)."""

    def __init__(self, engine: List[str], volumes: Dict[str, str], secrets: Dict[str, Dict[str, str]],
                 mounts: Optional[Dict[str, str]] = None):
        super().__init__()
        self.engine, self.volumes, self.secrets = list(engine), volumes, secrets
        self.mounts = dict(mounts or {})  # host -> target in every worker (the cluster's DNS as /etc/hosts)
        self.containers: Dict[str, List[str]] = {}

    def created(self, job: Dict) -> None:
        from components.multiworker_trainer.local_launcher import free_ports

        name = job["metadata"]["name"]
        worker = job["spec"]["tfReplicaSpecs"]["Worker"]
        template = worker["template"]["spec"]
        container = template["containers"][0]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template.get("volumes", [])}
        ports = free_ports(worker["replicas"])
        self.processes[name], self.names[name], self.containers[name] = [], [], []
        for index in range(worker["replicas"]):
            pod_name = f"{name}-worker-{index}"
            argv = self.engine + ["run", "--rm", "--name", pod_name, "--network", "host"]
            for mount in container.get("volumeMounts", []):
                argv += ["--volume", f"{self.volumes[claims[mount['name']]]}:{mount['mountPath']}"]
            for host, target in self.mounts.items():
                argv += ["--volume", f"{host}:{target}"]
            env = {}
            for item in container.get("env", []):
                if "value" in item:
                    env[item["name"]] = item["value"]
                else:
                    ref = item["valueFrom"]["secretKeyRef"]
                    env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": index}, "environment": "cloud"})
            for key, value in sorted(env.items()):
                argv += ["--env", f"{key}={value}"]
            argv += ["--entrypoint", container["command"][0], container["image"]]
            argv += list(container["command"][1:]) + list(container.get("args", []))
            log_path = os.path.join(tempfile.gettempdir(), f"fake-k8s-{os.getpid()}-{pod_name}.log")
            self.logs_[pod_name] = log_path
            with open(log_path, "wb") as out:
                self.processes[name].append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                             start_new_session=True))
            self.names[name].append(pod_name)
            self.containers[name].append(pod_name)

    def _delete_pod(self, job_name: str, index: int) -> None:
        subprocess.run(self.engine + ["rm", "-f", self.names[job_name][index]], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        super()._delete_pod(job_name, index)

    def deleted(self, name: str) -> None:
        for pod_name in self.containers.get(name, []):
            subprocess.run(self.engine + ["rm", "-f", pod_name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        super().deleted(name)


class FakeKubernetes:
    """`with FakeKubernetes(behaviour) as fake:` serves on `fake.url` until the block ends."""

    def __init__(self, behaviour, own_pods: Optional[Dict[str, Dict]] = None, fail_create: Optional[int] = None,
                 host: str = "127.0.0.1"):
        self.behaviour = behaviour
        self.own_pods = own_pods or {}
        self.fail_create = fail_create
        self.jobs: Dict[str, Dict] = {}
        self.created: List[Dict] = []
        self.deleted: List[str] = []
        self.requests: List[tuple] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        if hasattr(self.behaviour, "close"):
            self.behaviour.close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body, content_type="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, what):
                self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                                 "message": f"{what} not found"})

            def _route(self, method):
                url = urlparse(self.path)
                with fake.lock:
                    fake.requests.append((method, url.path))
                    job_match, pod_match = TFJOB_PATH.match(url.path), PODS_PATH.match(url.path)
                    if job_match:
                        return self._tfjob(method, job_match.group(1), job_match.group(2))
                    if pod_match and method == "GET":
                        return self._pods(pod_match.group(2), pod_match.group(3), parse_qs(url.query))
                    return self._not_found(url.path)

            def _tfjob(self, method, namespace, name):
                if method == "POST" and not name:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    if fake.fail_create:
                        return self._send(fake.fail_create, {"kind": "Status", "code": fake.fail_create,
                                                             "message": "refused"})
                    if body.get("apiVersion") != "kubeflow.org/v1" or body.get("kind") != "TFJob":
                        return self._send(400, {"kind": "Status", "code": 400, "message": "not a TFJob"})
                    job_name = body["metadata"]["name"]
                    if job_name in fake.jobs:
                        return self._send(409, {"kind": "Status", "code": 409, "message": "exists"})
                    body["metadata"].update({"namespace": namespace, "uid": f"uid-{job_name}"})
                    fake.jobs[job_name] = body
                    fake.created.append(copy.deepcopy(body))
                    fake.behaviour.created(body)
                    return self._send(201, body)
                if name not in fake.jobs:
                    return self._not_found(f"tfjobs {name}")
                if method == "GET":
                    job = copy.deepcopy(fake.jobs[name])
                    job["status"] = fake.behaviour.status(job)
                    return self._send(200, job)
                if method == "DELETE":
                    fake.jobs.pop(name)
                    fake.deleted.append(name)
                    fake.behaviour.deleted(name)
                    return self._send(200, {"kind": "Status", "status": "Success"})
                return self._send(405, {"kind": "Status", "code": 405})

            def _pods(self, name, log, query):
                if name and log:
                    return self._send(200, fake.behaviour.log(name), "text/plain")
                if name:
                    return self._send(200, fake.own_pods[name]) if name in fake.own_pods else self._not_found(name)
                selector = (query.get("labelSelector") or [""])[0]
                key, _, value = selector.partition("=")
                items = []
                for job_name in list(fake.jobs) + fake.deleted:
                    items += [p for p in fake.behaviour.pods(job_name) if p["metadata"]["labels"].get(key) == value]
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler
