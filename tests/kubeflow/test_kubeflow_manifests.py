"""The serving manifests: valid Kubernetes, consistent with each other and with the pipeline."""
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kubeflow import storage
from pipeline import configs

MANIFESTS = Path(__file__).resolve().parents[2] / "kubeflow" / "manifests"
K8S_VERSION = "1.30.0"  # pinned: the oldest Kubernetes the manifests promise to work on
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "tfjob-example.yaml"}  # TFJobs are made at run time


def load(name):
    docs = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    assert len(docs) == 1, name
    return docs[0]


@pytest.fixture(scope="module")
def kustomization():
    return load("kustomization.yaml")


@pytest.fixture(scope="module")
def resources(kustomization):
    by_kind = {}
    for name in kustomization["resources"]:
        doc = load(name)
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def one(resources, kind):
    assert len(resources.get(kind, [])) == 1, f"expected one {kind}"
    return resources[kind][0]


def serving_container(resources):
    return one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_exactly_the_manifests_present(kustomization):
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - NOT_IN_KUSTOMIZATION
    assert sorted(kustomization["resources"]) == sorted(present)
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    assert kustomization["namespace"] == configs.PipelineConfig.kubeflow_namespace


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_manifest_is_valid_kubernetes(name):
    doc = load(name)
    if doc["apiVersion"].startswith("kubeflow.org/"):
        pytest.skip("CRD (TFJob): no schema in kubernetes_validate")
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_really_rejects_a_bad_manifest(resources):
    deployment = yaml.safe_load(yaml.safe_dump(one(resources, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kinds(resources):
    assert sorted(resources) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Role", "RoleBinding", "Service"]


def test_trainer_role_covers_what_the_tfjob_launcher_calls(resources):
    rules = {(r["apiGroups"][0], res): set(r["verbs"]) for r in one(resources, "Role")["rules"] for res in r["resources"]}
    assert {"create", "get", "delete"} <= rules[("kubeflow.org", "tfjobs")]
    assert {"get", "list"} <= rules[("", "pods")] and "get" in rules[("", "pods/log")]
    binding = one(resources, "RoleBinding")
    assert binding["roleRef"]["name"] == one(resources, "Role")["metadata"]["name"]


def test_models_config_parses_as_tf_serving_config(resources):
    config = one(resources, "ConfigMap")["data"]["models.config"]
    parsed = text_format.Parse(config, model_server_config_pb2.ModelServerConfig())
    models = parsed.model_config_list.config
    assert [m.name for m in models] == [configs.MODEL_NAME]
    assert models[0].base_path == f"{storage.SERVING_MOUNT_PATH}/{configs.MODEL_NAME}"
    assert models[0].model_platform == "tensorflow"


def test_server_reads_the_config_from_the_configmap(resources):
    container = serving_container(resources)
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    assert container["image"] == "tensorflow/serving:2.16.1"
    flags = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    config_mount = next(m for m in container["volumeMounts"] if flags["model_config_file"].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == config_mount["name"])
    configmap = one(resources, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert Path(flags["model_config_file"]).name in configmap["data"]
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0


def test_ports_and_model_name_agree(resources):
    container = serving_container(resources)
    flags = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(flags["port"]), "http": int(flags["rest_api_port"])} == {"grpc": 8500, "http": 8501}
    service = one(resources, "Service")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (8500, "grpc"), "http": (8501, "http")}
    deployment = one(resources, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    model_path = f"/v1/models/{configs.MODEL_NAME}"
    assert container["readinessProbe"]["httpGet"] == {"path": model_path, "port": "http"}
    assert "livenessProbe" in container and "resources" in container


def test_server_sees_what_the_pusher_writes(resources):
    """Pusher: <MOUNT_PATH>/serving/taxi/<v> in the pipeline pods == /models/taxi/<v> in TF Serving."""
    pvc = one(resources, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == storage.PVC_NAME
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"]["claimName"] == storage.PVC_NAME
    mount = next(m for m in serving_container(resources)["volumeMounts"] if m["name"] == claim["name"])
    assert mount["mountPath"] == str(storage.SERVING_MOUNT_PATH)
    assert mount["subPath"] == storage.SERVING_SUBPATH and mount.get("readOnly") is True
    assert storage.SERVING_BASE == storage.MOUNT_PATH / storage.SERVING_SUBPATH


def test_server_runs_as_the_pipeline_image_user(resources):
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    dockerfile = (MANIFESTS.parent / "Dockerfile").read_text()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"USER {pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" in dockerfile


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
def test_kustomize_renders_valid_namespaced_resources(kustomization):
    rendered = subprocess.run(["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(docs) == len(kustomization["resources"])
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == kustomization["namespace"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "taxi-pipeline"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    # Common labels must not leak into the (immutable) selector.
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "taxi-serving"}


def test_serving_base_is_prepared_before_the_server_mounts_it(resources):
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    mount = next(m for m in init["volumeMounts"] if m["name"] == "serving-base")
    assert "subPath" not in mount and not mount.get("readOnly")
    made = init["command"][-1]
    assert made == f"{mount['mountPath']}/{storage.SERVING_SUBPATH}/{configs.MODEL_NAME}"
