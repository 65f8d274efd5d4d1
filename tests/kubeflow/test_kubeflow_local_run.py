"""The compiled pipeline, run task by task as open-source KFP 2.x runs it (kfp_local.py), each task in
a container of the built image, on an S3 pipeline root (moto standing in for MinIO)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))  # the fake Kubernetes API

import yaml
from kfp_backend import VERSIONS
from kfp_image import engine, pipeline_image  # noqa: F401  (fixture)
from kfp_local import Container, LocalKfp, TaskFailed
from kfp_s3 import ACCESS_KEY, SECRET_KEY, client, free_port, keys, port_is_free, s3_server
from trainer_fake_kubernetes import ContainerOperator, FakeKubernetes
from tests_support import write_sample

from kubeflow import launcher_config, object_store, package, storage

BUCKET = "mlpipeline"
ROWS = 1500  # small sample, few steps: the whole run takes minutes, not tens of minutes
SECRETS = {object_store.KFP_MINIO_SECRET: {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY}}
STORE_PORT = 9000  # the port of KFP's own store (minio-service / seaweedfs :9000): a pod's default endpoint
STORE = f"http://127.0.0.1:{STORE_PORT}"


def compile_spec(image: str, root: str, out: Path, s3_endpoint=None, **changes) -> dict:
    """What `taxi-pipeline compile --image IMAGE --pipeline-root ROOT [--s3-endpoint URL]` writes (same
    functions), with a short training and bars a 1,500-row sample reaches."""
    from pipeline.kubeflow_runner import compile_job, kubeflow_config, write_spec

    config = kubeflow_config(image, train_steps=60, eval_steps=4, batch_size=64, min_auc=0.6,
                             min_accuracy=0.6, beam_workers=1, **changes)
    write_spec(compile_job(config, root, s3_endpoint=s3_endpoint), out)
    return json.loads(out.read_text())


def volume(tmp_path: Path) -> Path:
    """The shared volume (PVC) as a host directory: data/ copied in, as the README says."""
    root = tmp_path / "volume"
    write_sample(root / "data" / "data.csv", rows=ROWS)
    for path in [root, root / "data"]:
        path.chmod(0o777)
    return root


def local_kfp(job, image, tmp_path, vol, version="2.17.0", **kwargs):
    """The release's backend, its store's DNS name pointing at the test's S3 server (the cluster's DNS),
    and the kfp-launcher ConfigMap that `taxi-pipeline kubeflow-manifests` writes for the run's root."""
    backend = VERSIONS[version]
    spec = job["pipelineSpec"]
    root = spec.get("defaultPipelineRoot", "")
    configmap = launcher_config.launcher_configmap("kubeflow", root, endpoint=STORE) if root.startswith("s3://") \
        else {"data": {}}
    data = dict(configmap["data"])
    if "providers" in data:
        data["providers"] = yaml.safe_load(data["providers"])
    return LocalKfp(job, Container(engine(image)), backend=backend, work_dir=tmp_path / "pods",
                    volumes={storage.PVC_NAME: vol}, platform=package.platform_spec(spec, storage.PVC_NAME),
                    secrets=SECRETS, launcher_config=data,
                    cluster_hosts={backend.default_minio_endpoint.split(":")[0]: "127.0.0.1"},
                    log=lambda line: print(line, flush=True), **kwargs)


def serve_and_predict(serving_dir: Path, tmp_path: Path) -> str:
    """`taxi-pipeline serve` on the pushed models, then `taxi-pipeline predict` over gRPC."""
    bin_dir = Path(sys.executable).parent
    port, rest = free_port(), free_port()
    rows = write_sample(tmp_path / "rows.csv", rows=3, skip=ROWS)
    server = subprocess.Popen([str(bin_dir / "taxi-pipeline"), "serve", "--model_name", "taxi",
                               "--model_base_path", str(serving_dir), "--port", str(port),
                               "--rest_api_port", str(rest)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            result = subprocess.run([str(bin_dir / "taxi-pipeline"), "predict", str(rows), "--server",
                                     f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                return result.stdout if result.returncode == 0 else pytest.fail("predict failed: " + result.stdout[-2000:])
            time.sleep(2)
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def s3_endpoint():
    if not port_is_free(STORE_PORT):
        pytest.fail(f"port {STORE_PORT} is taken: the emulated cluster's object store (KFP's default endpoint "
                    f"minio-service/seaweedfs.kubeflow:{STORE_PORT}) must listen there")
    with s3_server(BUCKET, port=STORE_PORT) as endpoint:
        yield endpoint


def _cluster_hosts(tmp_path: Path, version: str) -> Path:
    """The cluster's DNS as an /etc/hosts file: the release's own store name, and nothing else."""
    hosts = tmp_path / "cluster-hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {VERSIONS[version].default_minio_endpoint.split(':')[0]}\n")
    return hosts


@pytest.mark.parametrize("version, workers", [("2.2.0", 1), ("2.17.0", 2)])
def test_whole_pipeline_runs_as_kfp_runs_it_on_the_default_minio_root(version, workers, pipeline_image, s3_endpoint,
                                                                       tmp_path):
    """Self-hosted KFP's own root and store, and nothing else: no endpoint in the pod (KFP gives none),
    only the emptyDirs the release mounts, the image's own user (uid 1000). On 2.17.0 the Trainer runs
    two workers as a TFJob (a fake Kubernetes API starting each as a container of the image)."""
    root = f"minio://{BUCKET}/v2/artifacts"
    job = compile_spec(pipeline_image, root, tmp_path / "taxi-pipeline.json", workers=workers)
    vol = volume(tmp_path)
    operator = ContainerOperator(engine(pipeline_image), {storage.PVC_NAME: str(vol)}, SECRETS,
                                 mounts={str(_cluster_hosts(tmp_path, version)): "/etc/hosts"})
    with FakeKubernetes(operator) as fake:
        # The Trainer step believes it is in a pod; its Kubernetes API is the fake one.
        kfp = local_kfp(job, pipeline_image, tmp_path, vol, version,
                        kubelet_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "TRAINER_KUBE_API_URL": fake.url})
        results = kfp.run()
        created = fake.created

    assert set(results) == set(job["pipelineSpec"]["root"]["dag"]["tasks"])
    # TFX wrote its artifacts to the bucket itself (s3://), under the run's root as the driver laid it out.
    written = keys(s3_endpoint, BUCKET, f"v2/artifacts/{job['pipelineSpec']['pipelineInfo']['name']}/{kfp.run_id}/")
    for task in ("CsvExampleGen", "Transform", "Trainer", "Evaluator"):
        assert any(f"/{task}/" in key for key in written), task
    model = results["Trainer"].outputs["model"]
    assert model["uri"].startswith(root + "/")  # the launcher's own scheme, as it records it
    pushed = results["Pusher"].outputs["pushed_model"]["custom_properties"]
    assert pushed.get("pushed") in (("int", 1), ("double", 1.0)), pushed
    steps = [r for r in results.values() if r.executor_input["inputs"]["artifacts"]]
    assert all(a["type"] == {"instanceSchema": ""} for r in steps  # as the driver sends them: no type
               for inputs in r.executor_input["inputs"]["artifacts"].values() for a in inputs["artifacts"])
    assert ("executor-logs" in results["Trainer"].executor_input["outputs"]["artifacts"]) == \
        VERSIONS[version].publish_logs
    baseline = results["ServingBaseline"].outputs["baseline_model"]["custom_properties"]
    assert baseline["serving_version"] == ("string", ""), baseline  # nothing served before this run
    # The launcher downloads every input before the step runs (TFX reads the URIs itself): what it cost.
    assert results["Evaluator"].downloaded["objects"] > 0, "the launcher's download of the inputs is emulated"
    print(f"[kfp-{version}] launcher downloads: " + ", ".join(
        f"{n} {r.downloaded['bytes'] / 2**20:.1f} MiB" for n, r in results.items() if r.downloaded["objects"]))

    if workers > 1:
        assert len(created) == 1
        worker = created[0]["spec"]["tfReplicaSpecs"]["Worker"]
        assert worker["replicas"] == 2 and worker["template"]["spec"]["containers"][0]["image"] == pipeline_image
        env = {e["name"]: e for e in worker["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": object_store.KFP_MINIO_SECRET,
                                                                          "key": "accesskey"}
        model_run = results["Trainer"].outputs["model_run"]["uri"].replace("minio://", "s3://")
        bucket, prefix = model_run.split("://", 1)[1].split("/", 1)
        reports = [json.loads(client(s3_endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
                   for key in keys(s3_endpoint, bucket, prefix + "/workers/")]
        assert sorted(r["task_index"] for r in reports) == [0, 1]
        assert all(r["num_replicas_in_sync"] == 2 for r in reports), reports
    else:
        assert not created

    versions = [p for p in (vol / "serving" / "taxi").iterdir()]
    assert len(versions) == 1 and versions[0].name.isdigit() and (versions[0] / "saved_model.pb").is_file()
    assert not [p for p in (vol / "serving" / "taxi").glob(".*")], "a temporary push directory was left"
    output = serve_and_predict(vol / "serving" / "taxi", tmp_path)
    assert "probabilit" in output.lower() or "0." in output, output


def _fails_in_one_line(kfp, task: str, *fragments: str):
    with pytest.raises(TaskFailed) as failure:
        kfp.run()
    message = str(failure.value)
    assert failure.value.task == task and "\n" not in message and message.startswith(f"task {task} failed: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _nothing_served(vol: Path):
    serving = vol / "serving"
    assert not serving.exists() or not [p for p in serving.rglob("*") if p.is_file()]


def test_bad_image_name_ends_the_run_in_one_line_naming_the_step(pipeline_image, s3_endpoint, tmp_path):
    job = compile_spec("localhost/no-such-taxi-image:0", f"s3://{BUCKET}/bad-image", tmp_path / "spec.json",
                       s3_endpoint=STORE)
    vol = volume(tmp_path)
    kfp = local_kfp(job, pipeline_image, tmp_path, vol)
    _fails_in_one_line(kfp, kfp.order()[0], "no-such-taxi-image")  # the first step to start (ImportSchemaGen)
    _nothing_served(vol)


def test_unreachable_s3_endpoint_ends_the_run_in_one_line_naming_the_step(pipeline_image, s3_endpoint, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    job = compile_spec(pipeline_image, f"s3://{BUCKET}/unreachable", tmp_path / "spec.json", s3_endpoint=closed)
    vol = volume(tmp_path)
    kfp = local_kfp(job, pipeline_image, tmp_path, vol)
    _fails_in_one_line(kfp, kfp.order()[0], "cannot reach the S3 endpoint", closed)
    _nothing_served(vol)


def test_failing_step_ends_the_run_in_one_line_and_nothing_is_pushed(pipeline_image, s3_endpoint, tmp_path):
    job = compile_spec(pipeline_image, f"s3://{BUCKET}/failing", tmp_path / "spec.json", s3_endpoint=STORE)
    vol = volume(tmp_path)
    (vol / "data" / "data.csv").unlink()  # CsvExampleGen finds no input
    message = _fails_in_one_line(local_kfp(job, pipeline_image, tmp_path, vol), "CsvExampleGen")
    assert "exit code" in message
    _nothing_served(vol)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_the_first_steps_complete_with_each_releases_inputs_on_an_s3_root(version, pipeline_image, s3_endpoint,
                                                                          tmp_path):
    """CsvExampleGen, StatisticsGen and Transform (and what they need) on an s3:// root on an S3-compatible
    store (the kfp-launcher ConfigMap's providers for the launcher, `compile --s3-endpoint` for the
    steps), each input as the release's driver sends it: untyped, with executor-logs from 2.5.0."""
    job = compile_spec(pipeline_image, f"s3://{BUCKET}/first-steps-{version}", tmp_path / "spec.json",
                       s3_endpoint=STORE)
    kfp = local_kfp(job, pipeline_image, tmp_path, volume(tmp_path), version)
    results = kfp.run(stop_after=("StatisticsGen", "Transform"))  # beside each other: neither needs the other
    assert {"CsvExampleGen", "StatisticsGen", "Transform"} <= set(results)
    transform = results["Transform"].executor_input
    assert transform["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == {"instanceSchema": ""}
    assert ("executor-logs" in transform["outputs"]["artifacts"]) == VERSIONS[version].publish_logs
    graph = results["Transform"].outputs["transform_graph"]["uri"]
    assert keys(s3_endpoint, BUCKET, graph.split(f"s3://{BUCKET}/", 1)[1] + "/transform_fn/")
