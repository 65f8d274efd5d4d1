"""Runs a training as a Kubeflow TFJob: create it, follow it to Succeeded/Failed, delete it.

The Trainer step's pod is the TFJob's owner in spirit: the job is deleted on every way out of
`run` (success, failure, timeout, KeyboardInterrupt, SIGTERM when Kubeflow terminates the run), so
no worker pods outlive the step. On success the job is deleted only after `on_success` (the
executor's check of the saved model and of every worker's report) has returned or raised. A
failure is reported with the failing pod's reason (OOMKilled, Error with exit code,
ImagePullBackOff, Evicted, ...) and the worker's own error line from its log.
Talks to the API server through the official `kubernetes` client; `base_url` points it at any
server (a `kubectl proxy`, or the fake API of the tests) instead of the in-cluster/kubeconfig one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Dict, List, Optional

from components.multiworker_trainer import cancellation
from components.multiworker_trainer import tfjob_manifest as manifest
from components.multiworker_trainer import worker as worker_module

log = logging.getLogger(__name__)

IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
REQUEST_TIMEOUT_S = 30
LOG_TAIL_LINES = 20


class TFJobFailedError(RuntimeError):
    """The TFJob failed; the message carries the failing pod's reason and error line."""


class TFJobTimedOutError(TFJobFailedError):
    """The TFJob did not finish before the deadline (often: pods never started)."""


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def api_client(base_url: Optional[str] = None):
    """A kubernetes ApiClient: for `base_url` when given, else in-cluster, else the kubeconfig."""
    from kubernetes import client, config

    if base_url:
        configuration = client.Configuration()
        configuration.host = base_url.rstrip("/")
        return client.ApiClient(configuration)
    if in_cluster():
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.ApiClient()


def current_namespace(default: str) -> str:
    """The namespace this pod runs in (where its service account may create TFJobs), else `default`."""
    try:
        with open(IN_CLUSTER_NAMESPACE_FILE) as f:
            return f.read().strip() or default
    except OSError:
        return default


@dataclasses.dataclass
class TFJobResult:
    name: str
    namespace: str
    seconds: float
    conditions: List[Dict]


def conditions_of(job: Dict) -> List[Dict]:
    return list((job.get("status") or {}).get("conditions") or [])


def terminal_condition(job: Dict) -> Optional[Dict]:
    """The Succeeded or Failed condition when it is the job's current state, else None."""
    for condition in reversed(conditions_of(job)):
        if condition.get("type") in ("Succeeded", "Failed") and str(condition.get("status")) == "True":
            return condition
    return None


class TFJobLauncher:
    """Creates one TFJob and follows it; see the module docstring."""

    def __init__(self, namespace: str, timeout_s: float, *, api=None, base_url: Optional[str] = None,
                 poll_interval_s: float = 5.0):
        if timeout_s <= 0:
            raise ValueError(f"trainer timeout must be positive, not {timeout_s}")
        from kubernetes import client

        self.namespace = namespace
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.api = api or api_client(base_url)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def run(self, job: Dict, on_success: Optional[Callable[[TFJobResult], None]] = None) -> TFJobResult:
        """Creates `job`, waits for its end, calls `on_success(result)` if it Succeeded, then deletes it;
        raises TFJobFailedError/TFJobTimedOutError/cancellation.TrainingCancelled, or what on_success raises."""
        name = job["metadata"]["name"]
        started = time.monotonic()
        with cancellation.sigterm_raises(f"deleted TFJob {self.namespace}/{name}"):
            self._create(job)
            try:
                final = self._follow(name, started + self.timeout_s)
                result = TFJobResult(name, self.namespace, time.monotonic() - started, conditions_of(final))
                if on_success is not None:
                    on_success(result)
            finally:
                self.delete(name)
        return result

    def _create(self, job: Dict) -> None:
        from kubernetes.client.rest import ApiException

        name = job["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(manifest.GROUP, manifest.VERSION, self.namespace,
                                                        manifest.PLURAL, job, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as err:
            hint = {404: ("this cluster has no TFJob kind (tfjobs.kubeflow.org/v1): standalone Kubeflow Pipelines ships "
                          "no training operator; install it with kubectl apply --server-side -k "
                          '"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.2" '
                          "(kubeflow/README.md), or train with --workers 1"),
                    403: "does the pipeline's service account have RBAC to create tfjobs.kubeflow.org?",
                    409: "a TFJob of that name already exists"}.get(err.status, "")
            raise TFJobFailedError(f"could not create TFJob {self.namespace}/{name}: HTTP {err.status} "
                                   f"{err.reason}{'; ' + hint if hint else ''}") from err
        log.info("created TFJob %s/%s with %s workers", self.namespace, name,
                 job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"])

    def _follow(self, name: str, deadline: float) -> Dict:
        last_state = None
        while True:
            job = self.custom.get_namespaced_custom_object(manifest.GROUP, manifest.VERSION, self.namespace,
                                                           manifest.PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S)
            conditions = conditions_of(job)
            state = conditions[-1].get("type") if conditions else "Pending"
            if state != last_state:
                log.info("TFJob %s/%s: %s", self.namespace, name, state)
                last_state = state
            condition = terminal_condition(job)
            if condition and condition["type"] == "Succeeded":
                return job
            if condition and condition["type"] == "Failed":
                raise TFJobFailedError(
                    f"TFJob {self.namespace}/{name} failed: {self.failure_reason(name, condition)}")
            if time.monotonic() > deadline:
                pods = self.pod_problems(name)
                raise TFJobTimedOutError(
                    f"TFJob {self.namespace}/{name} did not finish within {self.timeout_s:g} s (state {state}"
                    f"{'; ' + pods if pods else ''}); deleted it; raise worker_timeout_s if training is just slow")
            time.sleep(self.poll_interval_s)

    def delete(self, name: str) -> None:
        """Deletes the TFJob and (foreground propagation) its pods; a job already gone is fine."""
        from kubernetes.client.rest import ApiException

        try:
            self.custom.delete_namespaced_custom_object(manifest.GROUP, manifest.VERSION, self.namespace,
                                                        manifest.PLURAL, name, propagation_policy="Foreground",
                                                        _request_timeout=REQUEST_TIMEOUT_S)
            log.info("deleted TFJob %s/%s", self.namespace, name)
        except ApiException as err:
            if err.status != 404:
                log.error("could not delete TFJob %s/%s (HTTP %s %s): delete it with "
                          "`kubectl delete tfjob -n %s %s`", self.namespace, name, err.status, err.reason,
                          self.namespace, name)

    def _pods(self, name: str):
        return self.core.list_namespaced_pod(self.namespace, label_selector=f"{manifest.JOB_NAME_LABEL}={name}",
                                             _request_timeout=REQUEST_TIMEOUT_S).items or []

    def failure_reason(self, name: str, condition: Dict) -> str:
        """The failing pod's reason and the worker's own error line; the job condition's message otherwise."""
        job_message = condition.get("message") or condition.get("reason") or "no reason given"
        try:
            pods = self._pods(name)
        except Exception as err:  # noqa: BLE001  (the job's own message is still worth reporting)
            return f"{job_message} (could not list its pods: {err})"
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            problem = _pod_problem(pod)
            if problem and pod.status.phase == "Failed":
                line = self._worker_error_line(pod.metadata.name)
                return f"pod {pod.metadata.name} {problem}" + (f": {line}" if line else "") + f" (job: {job_message})"
        problems = self.pod_problems(name, pods)
        return job_message + (f"; {problems}" if problems else "")

    def pod_problems(self, name: str, pods=None) -> str:
        """Why pods are not running, e.g. 'pod x-worker-1 waiting: ImagePullBackOff (...)'."""
        try:
            pods = self._pods(name) if pods is None else pods
        except Exception:  # noqa: BLE001
            return ""
        found = [f"pod {p.metadata.name} {problem}" for p in sorted(pods, key=lambda p: p.metadata.name)
                 if (problem := _pod_problem(p))]
        return "; ".join(found)

    def _worker_error_line(self, pod_name: str) -> Optional[str]:
        try:
            text = self.core.read_namespaced_pod_log(pod_name, self.namespace, container=manifest.CONTAINER_NAME,
                                                     tail_lines=200, _request_timeout=REQUEST_TIMEOUT_S)
        except Exception:  # noqa: BLE001  (the pod's reason alone is still a useful message)
            return None
        lines = [line for line in str(text).splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith(worker_module.ERROR_MARKER):
                return line[len(worker_module.ERROR_MARKER):].strip()
        return lines[-1].strip() if lines else None


def _pod_problem(pod) -> Optional[str]:
    """One phrase for what went wrong with a pod, or None if nothing did (yet)."""
    status = pod.status
    if status is None:
        return None
    if status.reason:  # e.g. Evicted, DeadlineExceeded
        return f"{status.phase or 'failed'}: {status.reason}" + (f" ({status.message})" if status.message else "")
    for cs in status.container_statuses or []:
        state = cs.state
        if state and state.terminated and state.terminated.exit_code:
            t = state.terminated
            return f"terminated: {t.reason or 'Error'}, exit code {t.exit_code}" + (f" ({t.message})" if t.message else "")
        if state and state.waiting and state.waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
            w = state.waiting
            return f"waiting: {w.reason}" + (f" ({w.message})" if w.message else "")
    if status.phase == "Failed":
        return "failed"
    return None
