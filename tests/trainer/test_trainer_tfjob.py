"""The Kubeflow path: the TFJob manifest's structure, and the launcher's control flow (success,
failure with the failing pod's reason, timeout, cancel) against the fake Kubernetes API on loopback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainer_fake_kubernetes import FakeKubernetes, LocalOperator, Scripted, condition, pod
from components.multiworker_trainer import tfjob_manifest, worker
from components.multiworker_trainer.tfjob_launcher import TFJobFailedError, TFJobLauncher, TFJobTimedOutError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAME = "taxi-trainer-test1234"
SPEC = "gs://bucket/root/Trainer/model_run/7/multiworker_spec.json"


def _job(workers=2, name=NAME):
    return tfjob_manifest.build_tfjob(name=name, namespace="ns", image="registry.example/taxi:1", num_workers=workers,
                                      spec_path=SPEC)


# --- manifest -----------------------------------------------------------------------------------

def test_manifest_runs_n_workers_of_the_worker_entry_point():
    job = _job(workers=3)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert job["metadata"]["name"] == NAME and job["metadata"]["namespace"] == "ns"
    replicas = job["spec"]["tfReplicaSpecs"]
    assert list(replicas) == ["Worker"]  # workers only: worker 0 is MWMS's chief, as locally
    spec = replicas["Worker"]
    assert spec["replicas"] == 3 and spec["restartPolicy"] == "Never"
    assert job["spec"]["runPolicy"]["backoffLimit"] == 0
    [container] = spec["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the name the training operator looks for
    assert container["image"] == "registry.example/taxi:1"
    assert container["command"] + container["args"] == ["python", "-m", "components.multiworker_trainer.worker",
                                                        "--spec", SPEC]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    assert "TF_CONFIG" not in env  # the operator sets it per pod


def test_manifest_asks_the_operator_to_wait_for_every_worker():
    """Worker replicas only: with the default success policy the operator calls the job Succeeded when
    worker 0 exits and then deletes the workers still running (cleanPodPolicy Running)."""
    spec = _job()["spec"]
    assert spec["successPolicy"] == "AllWorkers"
    assert spec["runPolicy"]["cleanPodPolicy"] == "Running"  # a failed job's peers stop; a finished one keeps its pods


def test_manifest_pulls_with_the_given_image_pull_secrets():
    pod_spec = tfjob_manifest.build_tfjob(name=NAME, namespace="ns", image="i", num_workers=2, spec_path=SPEC,
                                          image_pull_secrets=["regcred", "mirror"])["spec"]["tfReplicaSpecs"]["Worker"]
    assert pod_spec["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert "imagePullSecrets" not in _job()["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]


def _job_with_every_option():
    return tfjob_manifest.build_tfjob(
        name=NAME, namespace="ns", image="registry.example/taxi:1", num_workers=2, spec_path=SPEC,
        env={"AWS_REGION": "us-east-1"}, secret_env={"AWS_ACCESS_KEY_ID": ("mlpipeline-minio-artifact", "accesskey")},
        resources={"limits": {"memory": "4Gi"}}, service_account="pipeline-runner",
        pvc_mounts={"run-claim": "/mnt/taxi"}, image_pull_secrets=["regcred"], active_deadline_s=960)


def test_manifest_pod_template_is_a_valid_kubernetes_pod_template():
    """kubernetes-validate ships core schemas only, none for a CRD's kind such as TFJob: the Worker pod
    template, the part the operator copies into each pod, is checked against the core schema."""
    import kubernetes_validate

    job = _job_with_every_option()
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(job, "1.29.0", strict=True)  # if this starts to pass: validate the TFJob
    template = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                  "template": template}, "1.29.0", strict=True)


# The TFJob CRD's structural schema at kubeflow/training-operator v1.8.1
# (manifests/base/crds/kubeflow.org_tfjobs.yaml: spec properties at lines 49-124, runPolicy's at 58-110,
# a replica spec's at 128-140). The API server silently prunes fields a CRD does not declare, so a
# misspelt `successPolicy` would leave the default policy in force without any error.
CRD_SPEC_FIELDS = {"enableDynamicWorker", "runPolicy", "successPolicy", "tfReplicaSpecs"}
CRD_RUN_POLICY_FIELDS = {"activeDeadlineSeconds", "backoffLimit", "cleanPodPolicy", "schedulingPolicy", "suspend",
                         "ttlSecondsAfterFinished"}
CRD_REPLICA_FIELDS = {"replicas", "restartPolicy", "template"}


def test_manifest_uses_only_fields_the_tfjob_crd_declares():
    spec = _job_with_every_option()["spec"]
    assert set(spec) <= CRD_SPEC_FIELDS
    assert set(spec["runPolicy"]) <= CRD_RUN_POLICY_FIELDS
    assert set(spec["tfReplicaSpecs"]["Worker"]) <= CRD_REPLICA_FIELDS


@pytest.mark.parametrize("bad, message", [
    (dict(num_workers=0), "at least 1 worker"),
    (dict(image=""), "needs the pipeline image"),
    (dict(name="Not_A_Name"), "not a valid DNS-1123 label"),
])
def test_manifest_rejects_bad_input_with_one_line(bad, message):
    args = {**dict(name=NAME, namespace="ns", image="i", num_workers=2, spec_path=SPEC), **bad}
    with pytest.raises(ValueError, match=message):
        tfjob_manifest.build_tfjob(**args)


def test_job_names_are_unique_dns_labels():
    names = {tfjob_manifest.job_name("Taxi Trainer") for _ in range(20)}
    assert len(names) == 20 and all(n.startswith("taxi-trainer-") for n in names)


def test_example_manifest_is_what_the_builder_renders():
    path = REPO / "kubeflow" / "manifests" / "tfjob-example.yaml"
    assert path.read_text() == tfjob_manifest.render_example(), \
        "regenerate: python -m components.multiworker_trainer.tfjob_manifest > kubeflow/manifests/tfjob-example.yaml"


def test_manifest_mounts_the_pipeline_volumes_and_uses_the_steps_service_account():
    job = tfjob_manifest.example_tfjob()
    pod_spec = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "pipeline-runner"
    assert pod_spec["volumes"] == [{"name": "volume-0", "persistentVolumeClaim": {"claimName": "taxi-pipeline-data"}}]
    assert pod_spec["containers"][0]["volumeMounts"] == [{"name": "volume-0", "mountPath": "/mnt/taxi"}]


# --- launcher control flow ----------------------------------------------------------------------

def _launcher(fake, timeout_s=30.0):
    return TFJobLauncher("ns", timeout_s, base_url=fake.url, poll_interval_s=0.05)


def test_launcher_follows_the_job_to_success_and_deletes_it():
    states = [[], [condition("Created")], [condition("Created"), condition("Running")],
              [condition("Created"), condition("Running"), condition("Succeeded")]]
    with FakeKubernetes(Scripted(states)) as fake:
        result = _launcher(fake).run(_job())
    assert result.name == NAME and result.conditions[-1]["type"] == "Succeeded"
    assert [j["metadata"]["name"] for j in fake.created] == [NAME]
    assert fake.created[0]["spec"] == _job()["spec"]
    assert fake.deleted == [NAME]
    assert sum(1 for m, p in fake.requests if m == "GET" and p.endswith(f"/tfjobs/{NAME}")) == 4


def test_failed_job_reports_the_failing_pods_reason_and_error_and_is_deleted():
    states = [[condition("Created"), condition("Running")],
              [condition("Created"), condition("Running"),
               condition("Failed", message="TFJob has failed because 1 Worker replica(s) failed.")]]
    pods = [pod(f"{NAME}-worker-0", NAME, "Running"),
            pod(f"{NAME}-worker-1", NAME, "Failed", terminated={"exitCode": 1, "reason": "Error"})]
    logs = {f"{NAME}-worker-1": f"Traceback ...\n{worker.ERROR_MARKER} ValueError: bad feature 'fare'\n"}
    with FakeKubernetes(Scripted(states, pods, logs)) as fake:
        with pytest.raises(TFJobFailedError) as failure:
            _launcher(fake).run(_job())
    assert str(failure.value) == (
        f"TFJob ns/{NAME} failed: pod {NAME}-worker-1 terminated: Error, exit code 1: ValueError: bad feature "
        "'fare' (job: TFJob has failed because 1 Worker replica(s) failed.)")
    assert fake.deleted == [NAME]


def test_oom_killed_pod_is_named_with_its_reason():
    states = [[condition("Created"), condition("Failed", message="replica failed")]]
    pods = [pod(f"{NAME}-worker-0", NAME, "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})]
    with FakeKubernetes(Scripted(states, pods)) as fake:
        with pytest.raises(TFJobFailedError, match=f"pod {NAME}-worker-0 terminated: OOMKilled, exit code 137"):
            _launcher(fake).run(_job())
    assert fake.deleted == [NAME]


def test_job_that_never_finishes_times_out_with_why_and_is_deleted():
    pods = [pod(f"{NAME}-worker-0", NAME, "Pending",
                waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image"}),
            pod(f"{NAME}-worker-1", NAME, "Running")]
    with FakeKubernetes(Scripted([[condition("Created")]], pods)) as fake:
        started = time.monotonic()
        with pytest.raises(TFJobTimedOutError) as failure:
            _launcher(fake, timeout_s=1.0).run(_job())
    assert time.monotonic() - started < 5
    assert f"did not finish within 1 s (state Created; pod {NAME}-worker-0 waiting: ImagePullBackOff " \
           "(Back-off pulling image))" in str(failure.value)
    assert fake.deleted == [NAME]


def test_create_refused_says_what_to_check():
    with FakeKubernetes(Scripted([[]]), fail_create=404) as fake:
        with pytest.raises(TFJobFailedError) as failure:
            _launcher(fake).run(_job())
    message = str(failure.value)
    assert "no TFJob kind" in message and "training-operator.git/manifests/overlays/standalone" in message
    assert "\n" not in message
    assert fake.deleted == []


_CANCELLED = """
import sys
sys.path.insert(0, {here!r})
from test_trainer_tfjob import _job
from components.multiworker_trainer.tfjob_launcher import TFJobLauncher
TFJobLauncher("ns", 300, base_url={url!r}, poll_interval_s=0.05).run(_job())
"""


def test_cancelled_trainer_deletes_its_job():
    with FakeKubernetes(Scripted([[condition("Created"), condition("Running")]])) as fake:
        child = subprocess.Popen([sys.executable, "-c", _CANCELLED.format(here=str(HERE), url=fake.url)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 60
            while not fake.created and time.monotonic() < end:
                time.sleep(0.05)
            assert fake.created, "the launcher never created the job"
            time.sleep(0.3)  # a few status polls
            child.send_signal(signal.SIGTERM)
            output = child.communicate(timeout=30)[0].decode(errors="replace")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode != 0
    assert f"TrainingCancelled: the trainer was asked to stop (SIGTERM); deleted TFJob ns/{NAME}" in output
    assert fake.deleted == [NAME]


# --- the fake operator's success policy, as the training operator's source decides it -------------

_TWO_SPEED_WORKER = """
import json, os, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
while index and not os.path.exists(os.environ["RELEASE"]):
    time.sleep(0.05)
"""


def _wait_for(predicate, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("policy", ["AllWorkers", None])
def test_fake_operator_succeeds_by_the_success_policy(tmp_path, policy):
    """Worker 0 exits at once, worker 1 waits for a file: with AllWorkers the job stays Running while
    worker 1 runs; with the default policy it is Succeeded at once and worker 1's pod is deleted."""
    job = tfjob_manifest.build_tfjob(name=NAME, namespace="ns", image="i", num_workers=2, spec_path=SPEC,
                                     env={"RELEASE": str(tmp_path / "release")})
    job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "-c", _TWO_SPEED_WORKER]
    job["spec"]["successPolicy"] = policy
    operator = LocalOperator()
    try:
        operator.created(job)
        worker0, worker1 = operator.processes[NAME]
        _wait_for(lambda: worker0.poll() is not None)
        state = operator.status(job)["conditions"][-1]["type"]
        if policy == "AllWorkers":
            assert state == "Running" and worker1.poll() is None
            assert [p["metadata"]["name"] for p in operator.pods(NAME)] == [f"{NAME}-worker-0", f"{NAME}-worker-1"]
            (tmp_path / "release").touch()
            _wait_for(lambda: worker1.poll() is not None)
            assert operator.status(job)["conditions"][-1]["type"] == "Succeeded"
            assert worker1.returncode == 0
        else:
            assert state == "Succeeded"
            assert worker1.returncode == -signal.SIGKILL  # deleted by cleanPodPolicy Running
            assert [p["metadata"]["name"] for p in operator.pods(NAME)] == [f"{NAME}-worker-0"]
    finally:
        operator.close()


# --- the executor on the Kubeflow path, with the fake playing the training operator ----------------

def test_executor_trains_through_a_tfjob_whose_pods_run_the_worker_entry_point(trainer_execution):
    """Worker 1 writes its report seconds after worker 0 has exited: the job must not end before it."""
    execution = trainer_execution(workers=2, train_steps=10, image="registry.example/taxi:1", namespace="ns",
                                  tfjob_poll_interval_s=0.2, toy_report_delay_s=3)
    operator = LocalOperator()
    with FakeKubernetes(operator) as fake:
        execution.custom_config["kubernetes_api_url"] = fake.url
        execution.exec_properties["custom_config"] = json.dumps(execution.custom_config)
        execution.run()
    [job] = fake.created
    assert [p.returncode for p in operator.processes[job["metadata"]["name"]]] == [0, 0]
    container = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/taxi:1"
    assert container["args"] == ["--spec", str(execution.model_run_dir / "multiworker_spec.json")]
    assert fake.deleted == [job["metadata"]["name"]]
    reports = execution.reports()
    assert {r["task_index"] for r in reports.values()} == {0, 1}
    assert all(r["num_replicas_in_sync"] == 2 for r in reports.values())
    assert (execution.serving_model_dir / "saved_model.pb").exists()


def _step_pod(pull_secrets=("private-registry",), claim="run-claim-from-submit", **spec):
    """A KFP step pod as the API returns it: the PVC the run was submitted with, KFP's own volumes."""
    volumes = [{"name": "kfp-launcher", "emptyDir": {}}]
    mounts = [{"name": "kfp-launcher", "mountPath": "/kfp-launcher"}]
    if claim:
        volumes.append({"name": "pvc-1a2b", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "pvc-1a2b", "mountPath": "/mnt/taxi"})
    return {"metadata": {"name": "trainer-step-pod", "namespace": "ns"},
            "spec": {"serviceAccountName": "pipeline-runner", "volumes": volumes,
                     "imagePullSecrets": [{"name": n} for n in pull_secrets],
                     "containers": [{"name": "wait", "image": "argoproj/argoexec"},
                                    {"name": "main", "image": "registry.example/taxi@sha256:abc",
                                     "volumeMounts": mounts}], **spec}}


def _job_from_a_step_pod(trainer_execution, monkeypatch, own_pod, **custom_config):
    """The TFJob the executor creates inside a step pod (the job 'succeeds' without a model: the
    Trainer then fails, which these tests do not look at)."""
    states = [[condition("Created"), condition("Running"), condition("Succeeded")]]
    with FakeKubernetes(Scripted(states), own_pods={"trainer-step-pod": own_pod}) as fake:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("HOSTNAME", "trainer-step-pod")
        monkeypatch.delenv("KFP_POD_NAME", raising=False)
        execution = trainer_execution(workers=3, namespace="ns", kubernetes_api_url=fake.url,
                                      tfjob_poll_interval_s=0.05, **custom_config)
        with pytest.raises(RuntimeError, match="all 3 trainer workers succeeded but none saved a model"):
            execution.run()
    [job] = fake.created
    assert fake.deleted == [job["metadata"]["name"]]
    return job


def test_in_a_pod_the_job_runs_the_steps_own_image_and_service_account(trainer_execution, monkeypatch):
    """Inside a Kubeflow step pod with no image configured, the workers run the step's image with the
    step's service account; a job that 'succeeds' without saving a model still fails the Trainer."""
    job = _job_from_a_step_pod(trainer_execution, monkeypatch, _step_pod())
    pod_spec = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod_spec["containers"][0]["image"] == "registry.example/taxi@sha256:abc"
    assert pod_spec["serviceAccountName"] == "pipeline-runner"
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 3


@pytest.mark.parametrize("configured, expected", [
    (None, [{"name": "private-registry"}]),  # default: what the step itself was pulled with
    (["other-registry", "private-registry"], [{"name": "other-registry"}, {"name": "private-registry"}]),
    ([], None),  # configured off
])
def test_workers_get_the_steps_image_pull_secrets_unless_configured(trainer_execution, monkeypatch,
                                                                   configured, expected):
    extra = {} if configured is None else {"image_pull_secrets": configured}
    job = _job_from_a_step_pod(trainer_execution, monkeypatch, _step_pod(), **extra)
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"].get("imagePullSecrets") == expected


@pytest.mark.parametrize("claim", ["run-claim-from-submit", None])
def test_workers_mount_the_claim_the_step_has_mounted(trainer_execution, monkeypatch, tmp_path, claim):
    """`submit --pvc NAME` reaches the step pod only; the workers mount what it mounted, at the same
    path, and nothing when it has no claim (`--no-pvc`), even where the default mount path exists."""
    from kubeflow import storage

    monkeypatch.setattr(storage, "MOUNT_PATH", tmp_path)  # a mount path that exists here
    job = _job_from_a_step_pod(trainer_execution, monkeypatch, _step_pod(claim=claim))
    pod_spec = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    if claim:
        assert pod_spec["volumes"] == [{"name": "volume-0", "persistentVolumeClaim": {"claimName": claim}}]
        assert pod_spec["containers"][0]["volumeMounts"] == [{"name": "volume-0", "mountPath": "/mnt/taxi"}]
    else:
        assert "volumes" not in pod_spec and "volumeMounts" not in pod_spec["containers"][0]


def test_a_step_pod_that_cannot_be_read_falls_back_to_the_compiled_in_claim(trainer_execution, monkeypatch,
                                                                            tmp_path, caplog):
    from kubeflow import storage

    monkeypatch.setattr(storage, "MOUNT_PATH", tmp_path)
    states = [[condition("Created"), condition("Succeeded")]]
    with FakeKubernetes(Scripted(states)) as fake:  # no such pod: 404, as when RBAC forbids it
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("HOSTNAME", "trainer-step-pod")
        execution = trainer_execution(workers=2, namespace="ns", kubernetes_api_url=fake.url, image="reg/taxi:1",
                                      tfjob_poll_interval_s=0.05)
        with pytest.raises(RuntimeError, match="none saved a model"):
            execution.run()
    pod_spec = fake.created[0]["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod_spec["volumes"] == [{"name": "volume-0", "persistentVolumeClaim": {"claimName": storage.PVC_NAME}}]
    assert f"TFJob workers mount claim {storage.PVC_NAME}" in caplog.text


def test_the_reports_are_read_before_the_job_is_deleted_and_a_missing_one_fails(trainer_execution, monkeypatch):
    """The job Succeeded and worker 0 saved the model, but worker 1 wrote no report: the Trainer fails
    with one line naming worker 1, and it read the reports while the job (and its pods) still existed."""
    from components.multiworker_trainer import executor

    execution = trainer_execution(workers=2, image="registry.example/taxi:1", namespace="ns",
                                  tfjob_poll_interval_s=0.05)
    (execution.serving_model_dir).mkdir(parents=True)
    (execution.serving_model_dir / "saved_model.pb").write_bytes(b"")
    (execution.model_run_dir / "workers").mkdir()
    (execution.model_run_dir / "workers" / "worker-0.json").write_text(
        json.dumps({"task_index": 0, "num_replicas_in_sync": 2}))
    deleted_when_read = []
    check = executor.check_worker_reports
    monkeypatch.setattr(executor, "check_worker_reports",
                        lambda *a, **k: deleted_when_read.append(list(fake.deleted)) or check(*a, **k))
    with FakeKubernetes(Scripted([[condition("Created"), condition("Running"), condition("Succeeded")]])) as fake:
        execution.custom_config["kubernetes_api_url"] = fake.url
        execution.exec_properties["custom_config"] = json.dumps(execution.custom_config)
        with pytest.raises(RuntimeError) as failure:
            execution.run()
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("trainer worker 1 of 2 wrote no report "), message
    assert deleted_when_read == [[]]
    assert fake.deleted == [fake.created[0]["metadata"]["name"]]
