"""S3 settings, the step entry point and the platform spec for object-store roots (no containers)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeflow import entrypoint, object_store, package, storage

REPO = Path(__file__).resolve().parents[2]


def test_boto3_and_tensorflow_io_settings_are_filled_in_from_each_other():
    env = {"AWS_ENDPOINT_URL": "http://minio.example:9000"}
    object_store.configure_environment(env)
    assert env["S3_ENDPOINT"] == "http://minio.example:9000" and env["S3_USE_HTTPS"] == "0"
    assert env["S3_VERIFY_SSL"] == "0" and env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    env = {"S3_ENDPOINT": "s3.example:443", "AWS_REGION": "eu-west-1"}
    object_store.configure_environment(env)
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example:443" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    env = {"MINIO_SERVICE_SERVICE_HOST": "10.0.0.7", "MINIO_SERVICE_SERVICE_PORT": "9000"}  # KFP <= 2.15, same ns
    object_store.configure_environment(env, minio=True)
    assert env["AWS_ENDPOINT_URL"] == "http://10.0.0.7:9000" and env["S3_USE_HTTPS"] == "0"


@pytest.mark.parametrize("names, expected", [
    ({"seaweedfs.kubeflow"}, "seaweedfs.kubeflow:9000"),  # KFP 2.16+ installs SeaweedFS
    ({"minio-service.kubeflow"}, "minio-service.kubeflow:9000"),  # KFP 2.2-2.15: MinIO
    ({"seaweedfs.kubeflow", "minio-service.kubeflow"}, "seaweedfs.kubeflow:9000"),
    (set(), "seaweedfs.kubeflow:9000"),
])
def test_a_minio_root_finds_the_store_the_cluster_has(names, expected):
    assert object_store.default_minio_endpoint({}, resolves=names.__contains__) == expected


def test_workers_get_settings_by_value_and_credentials_only_by_secret_reference():
    env = {"AWS_ENDPOINT_URL": "http://e:1", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}
    plain, secret = object_store.worker_environment("s3://b/run/spec.json", env)
    assert plain == {"AWS_ENDPOINT_URL": "http://e:1"}
    assert secret == {"AWS_ACCESS_KEY_ID": (object_store.KFP_MINIO_SECRET, "accesskey"),
                      "AWS_SECRET_ACCESS_KEY": (object_store.KFP_MINIO_SECRET, "secretkey")}
    assert object_store.worker_environment("gs://b/x", env) == ({}, {})


def _executors(platform):
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_object_store_roots_mount_the_minio_secret_in_every_step():
    spec = {"defaultPipelineRoot": "minio://mlpipeline/v2",
            "deploymentSpec": {"executors": {"a": {"container": {}}, "r": {"resolver": {}}}}}
    executors = _executors(package.platform_spec(spec, storage.PVC_NAME))
    assert set(executors) == {"a"}
    assert executors["a"]["secretAsEnv"] == [{"secretName": "mlpipeline-minio-artifact", "keyToEnv": [
        {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
        {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]}]
    spec["defaultPipelineRoot"] = "gs://bucket/root"
    assert "secretAsEnv" not in _executors(package.platform_spec(spec, storage.PVC_NAME))["a"]
    assert package.platform_spec(spec, None) is None  # gs:// and no volume: nothing to add


def test_the_secret_reaches_every_step_without_a_compiled_root_and_without_a_volume():
    """`submit` of a spec compiled without --pipeline-root: the cluster's default root is MinIO."""
    spec = {"deploymentSpec": {"executors": {"a": {"container": {}}}}}
    for platform in (package.platform_spec(spec, storage.PVC_NAME), package.platform_spec(spec, None),
                     package.platform_spec(spec, None, "s3://bucket/root")):
        assert _executors(platform)["a"]["secretAsEnv"][0]["secretName"] == "mlpipeline-minio-artifact"
    assert "pvcMount" not in _executors(package.platform_spec(spec, None))["a"]
    assert "secretAsEnv" not in _executors(package.platform_spec(spec, "claim", "gs://b/r"))["a"]


def test_submit_without_a_pipeline_root_gives_every_step_the_credentials(tmp_path):
    from kubeflow import submit

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"pipelineSpec": {
        "root": {"dag": {"tasks": {}}}, "pipelineInfo": {"name": "p"},
        "deploymentSpec": {"executors": {"a": {"container": {"image": "i"}}}}}}))
    for root in (None, "s3://bucket/root"):
        package_path, _ = submit.build_package(spec_path, tmp_path, "claim", root)
        platform = list(yaml.safe_load_all(package_path.read_text()))[1]
        assert _executors(platform)["a"]["secretAsEnv"][0]["secretName"] == "mlpipeline-minio-artifact", root


@pytest.fixture
def fake_step(tmp_path, monkeypatch):
    """A module standing in for TFX's entry point: records the argv it got, writes an executor output."""
    (tmp_path / "fake_tfx_step.py").write_text(
        "import json, sys\n"
        "executor_input = json.loads(sys.argv[2])\n"
        "open(sys.argv[1], 'w').write(json.dumps(sys.argv[1:]))\n"
        "out = executor_input['outputs']['outputFile']\n"
        "uri = executor_input['outputs']['artifacts']['examples']['artifacts'][0]['uri']\n"
        "json.dump({'artifacts': {'examples': {'artifacts': [{'uri': uri}]}}}, open(out, 'w'))\n"
        "from tfx.utils import dependency_utils\n"  # what TFX's Beam executors call with their options
        "flags = dependency_utils.make_beam_dependency_flags(['--direct_num_workers=1'])\n"
        "json.dump(flags, open(sys.argv[1] + '.beam_flags', 'w'))\n"
        "sys.exit(int(executor_input.get('exit', 0)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from tfx.utils import dependency_utils
    # The entry point replaces it for the rest of its process (one step); here, for this test only.
    monkeypatch.setattr(dependency_utils, "make_beam_dependency_flags", dependency_utils.make_beam_dependency_flags)
    monkeypatch.setattr(object_store, "check_reachable", lambda uri: None)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    saved = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT"):
        os.environ.pop(name, None)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)  # the entry point sets the S3 variables of this process


def _executor_input(tmp_path, root, code=0):
    return {"exit": code, "outputs": {"outputFile": str(tmp_path / "output_metadata.json"), "artifacts": {
        "examples": {"artifacts": [{"name": "examples", "uri": f"{root}/CsvExampleGen/1/examples"}]}}}}


def test_entry_point_hands_tfx_s3_uris_for_minio_and_the_launcher_minio_back(fake_step, monkeypatch):
    document = _executor_input(fake_step, "minio://mlpipeline/v2")
    argv_file = fake_step / "argv.json"
    assert entrypoint.main(["fake_tfx_step", str(argv_file), json.dumps(document)]) == 0
    seen = json.loads(argv_file.read_text())
    assert "minio://" not in seen[1] and "s3://mlpipeline/v2/CsvExampleGen/1/examples" in seen[1]
    output = json.loads((fake_step / "output_metadata.json").read_text())
    assert output["artifacts"]["examples"]["artifacts"][0]["uri"] == "minio://mlpipeline/v2/CsvExampleGen/1/examples"
    assert os.environ["AWS_ENDPOINT_URL"] in ["http://" + e for e in object_store.KFP_MINIO_ENDPOINTS]
    # The step's Beam options reach its workers as given: no sdist of TFX (they run this image).
    assert json.loads((fake_step / "argv.json.beam_flags").read_text()) == ["--direct_num_workers=1"]


def test_entry_point_keeps_the_steps_exit_status(fake_step):
    document = _executor_input(fake_step, "s3://bucket/root", code=3)
    assert entrypoint.main(["fake_tfx_step", str(fake_step / "argv.json"), json.dumps(document)]) == 3


def test_entry_point_runs_tfx_steps_without_importing_every_tfx_component(tmp_path):
    """TFX's step entry point imports the Evaluator's executor, and through `tfx.components`' package
    __init__ every other component (InfraValidator's Kubernetes client, the Tuner's keras_tuner): ~2 s
    of each step's start. The entry point defers that __init__ (kubeflow.tfx_internals)."""
    import subprocess

    (tmp_path / "probe_step.py").write_text(
        "import sys\n"
        "import tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor  # what each step runs\n"
        "unused = ('tfx.components.infra_validator', 'tfx.components.tuner', 'keras_tuner')\n"
        "print(sorted(m for m in unused if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "kubeflow.entrypoint", "probe_step"], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]



DRIFT_ON_S3 = """
import json, os, sys
from kubeflow import object_store
object_store.configure_environment()
object_store.register_tf_plugin()
from tfx.types import standard_artifacts
from components.drift_check import DriftCheck, load_report
drift = standard_artifacts.ExampleAnomalies()
drift.uri = sys.argv[1]
statistics, schema = standard_artifacts.ExampleStatistics(), standard_artifacts.Schema()
statistics.uri, schema.uri = sys.argv[1] + "-statistics", sys.argv[1] + "-schema"
DriftCheck.EXECUTOR_SPEC.executor_class._FUNCTION(  # the decorated function, as TFX's executor calls it
    statistics=statistics, schema=schema, drift=drift, baseline_model=None, thresholds='{"fare": ["jsd", 0.1]}',
    fail_on_drift=1)
print(json.dumps({"report": load_report(sys.argv[1]), "local": sorted(os.listdir("."))}), flush=True)
os._exit(0)  # tensorflow-io's AWS SDK aborts at interpreter shutdown (kubeflow/entrypoint.py)
"""


def test_drift_check_writes_its_report_into_the_bucket(tmp_path):
    """On Kubeflow the DriftCheck's output URI is s3:// (or gs://): the report must land in the bucket."""
    from kfp_s3 import ACCESS_KEY, SECRET_KEY, client, s3_server

    with s3_server("mlpipeline") as endpoint:
        uri = "s3://mlpipeline/root/DriftCheck/run/drift"
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", DRIFT_ON_S3, uri], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        body = client(endpoint).get_object(Bucket="mlpipeline", Key="root/DriftCheck/run/drift/drift.json")["Body"]
        stored = json.loads(body.read())
    assert result["local"] == [], "no local folder named s3:"
    assert stored == result["report"] and stored["note"].startswith("no blessed model yet")


@pytest.mark.parametrize("status, refused", [(403, False), (404, True)])
def test_a_key_limited_to_its_prefix_may_not_head_the_bucket_and_the_step_goes_on(status, refused, monkeypatch):
    """Multi-user KFP 2.15+ gives a namespace a key for its own prefixes only (profile controller sync.py,
    2.17.0 :465-492): HEAD bucket answers 403, which proves the store is there; a missing bucket does not."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Store(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
                            "AWS_ACCESS_KEY_ID": "ns-key", "AWS_SECRET_ACCESS_KEY": "ns-secret"}.items():
            monkeypatch.setenv(name, value)
        uri = "s3://mlpipeline/private-artifacts/team-a/v2/artifacts/p/run/CsvExampleGen/examples"
        if refused:
            with pytest.raises(object_store.ObjectStoreError, match="refused bucket"):
                object_store.check_reachable(uri)
        else:
            object_store.check_reachable(uri)
    finally:
        server.shutdown()
        server.server_close()
