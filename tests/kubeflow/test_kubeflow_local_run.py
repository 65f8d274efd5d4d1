"""The compiled pipeline, run task by task as open-source KFP 2.x runs it (kfp_local.py), each task in
a container of the built image, on an S3 pipeline root (moto standing in for MinIO)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))  # the fake Kubernetes API

from kfp_image import engine, pipeline_image  # noqa: F401  (fixture)
from kfp_local import Container, LocalKfp, TaskFailed
from kfp_s3 import ACCESS_KEY, SECRET_KEY, client, free_port, keys, s3_server
from trainer_fake_kubernetes import ContainerOperator, FakeKubernetes
from tests_support import write_sample

from kubeflow import object_store, package, storage

BUCKET = "mlpipeline"
ROWS = 1500  # small sample, few steps: the whole run takes minutes, not tens of minutes
SECRETS = {object_store.KFP_MINIO_SECRET: {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY}}


def compile_spec(image: str, root: str, out: Path, **changes) -> dict:
    """What `taxi-pipeline compile --image IMAGE --pipeline-root ROOT` writes (same functions), with a
    short training and bars a 1,500-row sample reaches."""
    from pipeline.kubeflow_runner import compile_job, kubeflow_config, write_spec

    config = kubeflow_config(image, train_steps=60, eval_steps=4, batch_size=64, min_auc=0.6,
                             min_accuracy=0.6, beam_workers=1, **changes)
    write_spec(compile_job(config, root), out)
    return json.loads(out.read_text())


def volume(tmp_path: Path) -> Path:
    """The shared volume (PVC) as a host directory: data/ copied in, as the README says."""
    root = tmp_path / "volume"
    write_sample(root / "data" / "data.csv", rows=ROWS)
    for path in [root, root / "data"]:
        path.chmod(0o777)
    return root


def local_kfp(job, image, endpoint, tmp_path, vol, **kwargs):
    spec = job["pipelineSpec"]
    return LocalKfp(job, Container(engine(image)), work_dir=tmp_path / "pods", volumes={storage.PVC_NAME: vol},
                    platform=package.platform_spec(spec, storage.PVC_NAME), secrets=SECRETS,
                    env={"AWS_ENDPOINT_URL": endpoint}, log=lambda line: print(line, flush=True), **kwargs)


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
    with s3_server(BUCKET) as endpoint:
        yield endpoint


def test_whole_pipeline_runs_as_kfp_runs_it_on_an_s3_root(pipeline_image, s3_endpoint, tmp_path):
    root = f"minio://{BUCKET}/v2/artifacts"  # self-hosted KFP's default root, MinIO's S3 API
    job = compile_spec(pipeline_image, root, tmp_path / "taxi-pipeline.json")
    vol = volume(tmp_path)
    kfp = local_kfp(job, pipeline_image, s3_endpoint, tmp_path, vol)
    results = kfp.run()

    assert set(results) == set(job["pipelineSpec"]["root"]["dag"]["tasks"])
    # TFX wrote its artifacts to the bucket itself (s3://), under the run's root as the driver laid it out.
    written = keys(s3_endpoint, BUCKET, f"v2/artifacts/{job['pipelineSpec']['pipelineInfo']['name']}/{kfp.run_id}/")
    for task in ("CsvExampleGen", "Transform", "Trainer", "Evaluator"):
        assert any(f"/{task}/" in key for key in written), task
    model = results["Trainer"].outputs["model"]
    assert model.uri.startswith(root + "/")  # the launcher's own scheme, as it records it
    pushed = results["Pusher"].outputs["pushed_model"].custom_properties
    assert pushed.get("pushed") == 1.0, pushed

    versions = [p for p in (vol / "serving" / "taxi").iterdir()]
    assert len(versions) == 1 and versions[0].name.isdigit() and (versions[0] / "saved_model.pb").is_file()
    assert not [p for p in (vol / "serving" / "taxi").glob(".*")], "a temporary push directory was left"
    output = serve_and_predict(vol / "serving" / "taxi", tmp_path)
    assert "probabilit" in output.lower() or "0." in output, output


def test_two_trainer_workers_run_as_containers_of_the_image_in_sync(pipeline_image, s3_endpoint, tmp_path):
    root = f"s3://{BUCKET}/workers"
    job = compile_spec(pipeline_image, root, tmp_path / "taxi-pipeline.json", workers=2)
    vol = volume(tmp_path)
    operator = ContainerOperator(engine(pipeline_image), {storage.PVC_NAME: str(vol)}, SECRETS)
    with FakeKubernetes(operator) as fake:
        kfp = local_kfp(job, pipeline_image, s3_endpoint, tmp_path, vol)
        # The Trainer step believes it is in a pod; its Kubernetes API is the fake one.
        kfp.env.update({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "TRAINER_KUBE_API_URL": fake.url})
        results = kfp.run(stop_after="Trainer")
        created = fake.created
    assert len(created) == 1
    worker = created[0]["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2 and worker["template"]["spec"]["containers"][0]["image"] == pipeline_image
    env = {e["name"]: e for e in worker["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": object_store.KFP_MINIO_SECRET,
                                                                      "key": "accesskey"}
    assert sorted(operator.containers[created[0]["metadata"]["name"]]) == [
        f"{created[0]['metadata']['name']}-worker-{i}" for i in range(2)]
    model_run = results["Trainer"].outputs["model_run"].uri
    bucket, prefix = model_run.split("://", 1)[1].split("/", 1)
    reports = [json.loads(client(s3_endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
               for key in keys(s3_endpoint, bucket, prefix + "/workers/")]
    assert sorted(r["task_index"] for r in reports) == [0, 1]
    assert all(r["num_replicas_in_sync"] == 2 for r in reports), reports


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
    job = compile_spec("localhost/no-such-taxi-image:0", f"s3://{BUCKET}/bad-image", tmp_path / "spec.json")
    vol = volume(tmp_path)
    _fails_in_one_line(local_kfp(job, pipeline_image, s3_endpoint, tmp_path, vol), "CsvExampleGen",
                       "no-such-taxi-image")
    _nothing_served(vol)


def test_unreachable_s3_endpoint_ends_the_run_in_one_line_naming_the_step(pipeline_image, tmp_path):
    job = compile_spec(pipeline_image, f"s3://{BUCKET}/unreachable", tmp_path / "spec.json")
    vol = volume(tmp_path)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _fails_in_one_line(local_kfp(job, pipeline_image, closed, tmp_path, vol), "CsvExampleGen",
                       "cannot reach the S3 endpoint", closed)
    _nothing_served(vol)


def test_failing_step_ends_the_run_in_one_line_and_nothing_is_pushed(pipeline_image, s3_endpoint, tmp_path):
    job = compile_spec(pipeline_image, f"s3://{BUCKET}/failing", tmp_path / "spec.json")
    vol = volume(tmp_path)
    (vol / "data" / "data.csv").unlink()  # CsvExampleGen finds no input
    message = _fails_in_one_line(local_kfp(job, pipeline_image, s3_endpoint, tmp_path, vol), "CsvExampleGen")
    assert "exit code" in message
    _nothing_served(vol)
