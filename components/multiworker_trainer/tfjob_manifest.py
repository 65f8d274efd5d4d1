"""Builds the `kubeflow.org/v1` TFJob that runs N trainer workers in the pipeline image.

Only `Worker` replicas: the training operator then gives each pod a TF_CONFIG of a workers-only
cluster, in which MultiWorkerMirroredStrategy makes worker 0 the chief, exactly as the local
launcher does. Every pod runs the same worker entry point on the execution spec that the
executor wrote to the shared pipeline root. `restartPolicy: Never` and `backoffLimit: 0`: a
restarted MWMS worker cannot rejoin a running collective, so a failure fails the job and the
Trainer reports it instead of the operator looping.

`successPolicy: AllWorkers`: with Worker replicas only, the operator's default policy calls the job
Succeeded as soon as worker 0 exits, and then its cleanPodPolicy deletes the workers still
running, possibly before they wrote their reports. With AllWorkers the job is Succeeded only once
every worker pod has succeeded. The rules, from kubeflow/training-operator at v1.8.1 (what
Kubeflow 1.9 ships; the same lines at v1.9.0 for Kubeflow 1.10 unless noted):
- the field: `SuccessPolicy *SuccessPolicy json:"successPolicy,omitempty"` and
  `SuccessPolicyAllWorkers SuccessPolicy = "AllWorkers"`, pkg/apis/kubeflow.org/v1/tensorflow_types.go:79
  and :98; unset, SetDefaults_TFJob makes it "" (tensorflow_defaults.go:55-59);
- the decision, for a job without Chief/Master: `if expected == 0 || (worker0Completed &&
  *tfJob.Spec.SuccessPolicy != kubeflowv1.SuccessPolicyAllWorkers)` then Succeeded, where
  expected = replicas - succeeded pods (pkg/controller.v1/tensorflow/tfjob_controller.go:468; :467 at v1.9.0);
- on Succeeded or Failed the operator deletes, per `cleanPodPolicy`, the pods still Running or
  Pending ("Running", pkg/controller.v1/common/job.go:57), none ("None", the default, job.go:49 and
  tensorflow_defaults.go:52-54) or all ("All"); it deletes the TFJob itself only after
  `ttlSecondsAfterFinished`, which we leave unset (job.go:420-425), so the launcher deletes it, after
  the executor has read every worker's report.
We keep cleanPodPolicy Running: after a worker failure the surviving peers (blocked in a collective)
are stopped at once, and after an AllWorkers success there is no running pod left to delete.
"""
from __future__ import annotations

import re
import uuid
from typing import Dict, List, Optional, Sequence

API_VERSION = "kubeflow.org/v1"
KIND = "TFJob"
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
# The training operator finds the TensorFlow container by this name (and its port by "tfjob-port").
CONTAINER_NAME = "tensorflow"
DEFAULT_PORT = 2222
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
# Succeeded only when every Worker succeeded (see the module docstring for the operator's rules).
SUCCESS_POLICY_ALL_WORKERS = "AllWorkers"
WORKER_COMMAND = ["python", "-m", "components.multiworker_trainer.worker"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def job_name(prefix: str = "trainer", suffix: Optional[str] = None) -> str:
    """A DNS-1123 name, unique per call unless `suffix` is given (pods append '-worker-<i>')."""
    prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "trainer"
    name = f"{prefix}-{suffix or uuid.uuid4().hex[:8]}"
    if not _DNS_LABEL.match(name) or len(name) > 52:
        raise ValueError(f"TFJob name {name!r} is not a valid DNS label of at most 52 characters")
    return name


def build_tfjob(*, name: str, namespace: str, image: str, num_workers: int, spec_path: str,
                env: Optional[Dict[str, str]] = None, secret_env: Optional[Dict[str, tuple]] = None,
                resources: Optional[Dict] = None,
                service_account: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
                pvc_mounts: Optional[Dict[str, str]] = None, image_pull_secrets: Sequence[str] = (),
                active_deadline_s: Optional[int] = None, image_pull_policy: str = "IfNotPresent") -> Dict:
    """The TFJob as a plain dict (what CustomObjectsApi posts and what `kubectl apply` reads).

    `secret_env` (env name -> (secret, key)): object-store credentials, read from the secret in the pod;
    `service_account`: the Trainer step's own, so workers get the same object-store access to the
    pipeline root; `pvc_mounts` (claim name -> mount path): the volumes the pipeline steps mount,
    so paths in the spec (data, logs) mean the same in the workers; `image_pull_secrets`: Secret
    names for the pod's `imagePullSecrets`, so workers can pull the image from the private registry
    the step's own image came from.
    """
    if num_workers < 1:
        raise ValueError(f"a TFJob needs at least 1 worker, not {num_workers}")
    if not image:
        raise ValueError("a TFJob needs the pipeline image: set the Kubeflow image in the pipeline config")
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise ValueError(f"TFJob name {name!r} is not a valid DNS-1123 label")
    container_env: List[Dict[str, str]] = [{"name": "TF_USE_LEGACY_KERAS", "value": "1"},
                                           {"name": "PYTHONUNBUFFERED", "value": "1"}]
    container_env += [{"name": k, "value": str(v)} for k, v in sorted((env or {}).items())
                      if k not in ("TF_USE_LEGACY_KERAS", "PYTHONUNBUFFERED")]
    container_env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                      for k, (secret, key) in sorted((secret_env or {}).items())]
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(WORKER_COMMAND),
        "args": ["--spec", spec_path],
        "env": container_env,
        "ports": [{"name": "tfjob-port", "containerPort": DEFAULT_PORT}],
    }
    if resources:
        container["resources"] = resources
    pod_spec: Dict = {"containers": [container]}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in image_pull_secrets]
    if pvc_mounts:
        volumes = [(f"volume-{i}", claim, path) for i, (claim, path) in enumerate(sorted(pvc_mounts.items()))]
        container["volumeMounts"] = [{"name": v, "mountPath": path} for v, _, path in volumes]
        pod_spec["volumes"] = [{"name": v, "persistentVolumeClaim": {"claimName": claim}} for v, claim, _ in volumes]
    run_policy: Dict = {"cleanPodPolicy": "Running", "backoffLimit": 0}
    if active_deadline_s:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_s)
    job_labels = {"app.kubernetes.io/name": "taxi-pipeline", "app.kubernetes.io/component": "trainer",
                  **(labels or {})}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels},
        "spec": {
            "runPolicy": run_policy,
            "successPolicy": SUCCESS_POLICY_ALL_WORKERS,
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": num_workers,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": {"labels": dict(job_labels),
                                     # Istio sidecars keep pods Running after the worker exits.
                                     "annotations": {"sidecar.istio.io/inject": "false"}},
                        "spec": pod_spec,
                    },
                },
            },
        },
    }


def example_tfjob() -> Dict:
    """The TFJob the Trainer creates for `--workers 2` in a compiled pipeline, with placeholder values
    (kubeflow/manifests/tfjob-example.yaml is this, for readers; a test keeps the two equal)."""
    from kubeflow import storage

    return build_tfjob(
        name="taxi-trainer-0123abcd", namespace="kubeflow", image="REGISTRY/taxi-pipeline:TAG", num_workers=2,
        spec_path="gs://BUCKET/PIPELINE_ROOT/taxi-pipeline/RUN_ID/Trainer_EXECUTION/model_run/multiworker_spec.json",
        service_account="pipeline-runner", pvc_mounts={storage.PVC_NAME: str(storage.MOUNT_PATH)},
        active_deadline_s=960)


def render_example() -> str:
    import yaml

    header = ("# An example of the TFJob the multi-worker Trainer creates at run time (do not apply it by hand).\n"
              "# Rendered by `python -m components.multiworker_trainer.tfjob_manifest` from\n"
              "# components/multiworker_trainer/tfjob_manifest.py; placeholders: REGISTRY/...:TAG, the spec path on the (object-store) pipeline root.\n"
              "# Each Worker pod gets TF_CONFIG from the training operator; worker 0 is the chief and saves the\n"
              "# model; all read the execution spec the Trainer step wrote to the pipeline root.\n")
    return header + yaml.safe_dump(example_tfjob(), sort_keys=False)


if __name__ == "__main__":
    print(render_example(), end="")
