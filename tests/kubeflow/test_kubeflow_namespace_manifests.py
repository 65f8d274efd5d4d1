"""`taxi-pipeline kubeflow-manifests`: what it writes for a namespace is valid Kubernetes, lands in
that namespace, binds the account KFP runs steps as, and its kfp-launcher ConfigMap is what KFP's
Go code would read."""
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubeflow import launcher_config, storage
from kubeflow.errors import KubeflowError
from pipeline import kubeflow_manifests
from pipeline.cli import main

K8S_VERSION = "1.30.0"  # as tests/kubeflow/test_kubeflow_manifests.py
NS = "kubeflow-user-example-com"
MIRROR = Path("/work/.mirror/kubeflow+pipelines/repo")

# JSON names of KFP's S3ProviderDefault / S3Credentials / S3SecretRef fields (sigs.k8s.io/yaml
# decodes through encoding/json, so these are the keys it fills; anything else is silently dropped).
# 2.5.0 backend/src/v2/config/s3.go:30-39, 41-46, 60-65; 2.17.0 s3.go:31-42 adds maxRetries.
S3_DEFAULT_FIELDS = {"endpoint": str, "credentials": dict, "region": str, "disableSSL": bool,
                     "forcePathStyle": bool}
S3_CREDENTIALS_FIELDS = {"fromEnv": bool, "secretRef": dict}
S3_SECRET_REF_FIELDS = {"secretName": str, "accessKeyKey": str, "secretKeyKey": str}
PROVIDER_KEYS = {"minio", "s3", "gs"}  # 2.5.0 backend/src/v2/config/env.go:45-49 BucketProviders


def session_params(provider_config):
    """KFP's S3ProviderConfig.ProvideSessionInfo for a root with no override (2.5.0
    backend/src/v2/config/s3.go:93-117): the parameters the launcher opens the bucket with."""
    default = provider_config["default"]
    creds = default["credentials"]
    params = {"endpoint": default["endpoint"], "region": default["region"],
              "disableSSL": str(bool(default.get("disableSSL", False))).lower(),
              "forcePathStyle": str(bool(default.get("forcePathStyle", True))).lower(),
              "fromEnv": str(bool(creds["fromEnv"])).lower()}
    if not creds["fromEnv"]:
        params.update(creds["secretRef"])
    return params


def check_fields(doc, fields):
    assert set(doc) <= set(fields), f"unknown to KFP: {set(doc) - set(fields)}"
    for key, value in doc.items():
        assert isinstance(value, fields[key]), (key, value)


def providers_of(configmap):
    assert configmap["metadata"]["name"] == "kfp-launcher"  # 2.5.0 config/env.go:36
    assert set(configmap["data"]) <= {"defaultPipelineRoot", "providers"}  # env.go:38-39
    assert all(isinstance(v, str) for v in configmap["data"].values())  # ConfigMap data is strings
    providers = yaml.safe_load(configmap["data"].get("providers", "{}"))
    assert set(providers) <= PROVIDER_KEYS
    for entry in providers.values():
        assert set(entry) == {"default"}
        check_fields(entry["default"], S3_DEFAULT_FIELDS)
        check_fields(entry["default"]["credentials"], S3_CREDENTIALS_FIELDS)
        check_fields(entry["default"]["credentials"]["secretRef"], S3_SECRET_REF_FIELDS)
    return providers


def test_minio_endpoint_for_an_s3_root_reaches_the_launchers_session():
    cm = launcher_config.launcher_configmap(NS, "s3://mlpipeline/taxi/", "http://minio-service.kubeflow:9000")
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    assert cm["metadata"]["namespace"] == NS
    assert cm["data"]["defaultPipelineRoot"] == "s3://mlpipeline/taxi"
    providers = providers_of(cm)
    assert set(providers) == {"s3"}
    assert session_params(providers["s3"]) == {
        "endpoint": "minio-service.kubeflow:9000", "region": "us-east-1", "disableSSL": "true",
        "forcePathStyle": "true", "fromEnv": "false", "secretName": "mlpipeline-minio-artifact",
        "accessKeyKey": "accesskey", "secretKeyKey": "secretkey"}


def test_https_endpoint_keeps_tls_and_minio_root_gets_a_minio_entry():
    cm = launcher_config.launcher_configmap(NS, "minio://mlpipeline/v2/artifacts", "https://s3.example.com",
                                            region="eu-west-1", secret="my-store")
    providers = providers_of(cm)
    assert set(providers) == {"minio"}  # config/minio.go:21: same schema as s3
    params = session_params(providers["minio"])
    assert (params["endpoint"], params["disableSSL"], params["region"], params["secretName"]) == (
        "s3.example.com", "false", "eu-west-1", "my-store")


def test_aws_s3_needs_a_region_and_leaves_the_endpoint_to_the_sdk():
    with pytest.raises(KubeflowError, match="--region"):
        launcher_config.launcher_configmap(NS, "s3://bucket/root")
    providers = providers_of(launcher_config.launcher_configmap(NS, "s3://bucket/root", region="eu-central-1"))
    params = session_params(providers["s3"])
    # KFP skips this endpoint and lets the SDK resolve the region's (2.5.0 objectstore/object_store.go:270).
    assert params["endpoint"] == "s3.amazonaws.com" and params["region"] == "eu-central-1"
    assert params["disableSSL"] == "false"


def test_roots_kfp_already_knows_get_no_providers():
    for root in ("minio://mlpipeline/v2/artifacts", "gs://bucket/root"):
        cm = launcher_config.launcher_configmap(NS, root)
        assert cm["data"] == {"defaultPipelineRoot": root}
        kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    with pytest.raises(KubeflowError, match="gs://"):
        launcher_config.launcher_configmap(NS, "gs://bucket/root", "http://x:9000")
    with pytest.raises(KubeflowError, match="pipeline-root"):
        launcher_config.launcher_configmap(NS, "/mnt/taxi/root")
    with pytest.raises(KubeflowError, match="--endpoint"):
        launcher_config.launcher_configmap(NS, "s3://b/r", "ftp://x")


@pytest.mark.skipif(not MIRROR.is_dir(), reason="no kubeflow/pipelines mirror on this machine")
@pytest.mark.parametrize("tag", ["2.5.0", "2.17.0"])
def test_field_tables_match_kfp_source(tag):
    """The field tables above are KFP's json tags at that tag (2.17.0 only adds maxRetries)."""
    import re

    source = subprocess.run(["git", "-C", str(MIRROR), "show", f"{tag}:backend/src/v2/config/s3.go"],
                            capture_output=True, text=True, check=True).stdout

    def tags(struct):
        body = re.search(r"type %s struct \{(.*?)\n\}" % struct, source, re.S).group(1)
        return set(re.findall(r'json:"([^"]+)"', body))

    assert tags("S3ProviderDefault") - {"maxRetries"} == set(S3_DEFAULT_FIELDS)
    assert tags("S3Credentials") == set(S3_CREDENTIALS_FIELDS)
    assert tags("S3SecretRef") == set(S3_SECRET_REF_FIELDS)


def generate(tmp_path, *extra):
    out = tmp_path / "out"
    assert main(["kubeflow-manifests", "--namespace", NS, "--output", str(out), *extra]) == 0
    return out, {p.name: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}


@pytest.mark.parametrize("mode, account", [("multi-user", "default-editor"), ("standalone", "pipeline-runner")])
def test_every_generated_manifest_is_valid_and_in_the_namespace(mode, account, tmp_path):
    out, files = generate(tmp_path, "--mode", mode, "--pipeline-root", "s3://mlpipeline/taxi",
                          "--endpoint", "http://minio-service.kubeflow:9000")
    kustomization = files.pop("kustomization.yaml")
    assert kustomization["namespace"] == NS
    assert set(kustomization["resources"]) | {kubeflow_manifests.DATA_LOADER_FILE} == set(files)
    for name, doc in files.items():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == NS, name
    binding = files["trainer-rolebinding.yaml"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NS}]
    assert binding["roleRef"]["name"] == files["trainer-role.yaml"]["metadata"]["name"]
    assert files["storage-pvc.yaml"]["metadata"]["name"] == storage.PVC_NAME
    providers_of(files[kubeflow_manifests.LAUNCHER_FILE])
    assert (out / "trainer-role.yaml").read_text().startswith("# Generated by `taxi-pipeline kubeflow-manifests`")


def test_without_a_root_no_launcher_configmap(tmp_path):
    _, files = generate(tmp_path)
    assert kubeflow_manifests.LAUNCHER_FILE not in files
    assert kubeflow_manifests.LAUNCHER_FILE not in files["kustomization.yaml"]["resources"]


def test_resources_are_the_base_ones_with_only_namespace_and_subject_changed(tmp_path):
    _, files = generate(tmp_path)
    base, resources = kubeflow_manifests.base_resources()
    for name, doc in resources:
        generated = files[name]
        generated["metadata"].pop("namespace")
        if doc["kind"] == "RoleBinding":
            generated.pop("subjects"), doc.pop("subjects")
        assert generated == doc, name
    assert files["kustomization.yaml"]["labels"] == base["labels"]


def test_data_loader_mounts_the_volume_where_the_steps_do(tmp_path):
    _, files = generate(tmp_path)
    pod = files[kubeflow_manifests.DATA_LOADER_FILE]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == storage.PVC_NAME
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == str(storage.MOUNT_PATH)
    assert str(storage.DATA_DIR) in pod["containers"][0]["command"][-1]
    dockerfile = (kubeflow_manifests.BASE.parent / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" in dockerfile


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
def test_kustomize_renders_the_overlay_into_the_namespace(tmp_path):
    out, files = generate(tmp_path, "--pipeline-root", "s3://mlpipeline/taxi", "--endpoint", "http://seaweedfs.kubeflow:9000")
    rendered = subprocess.run(["kubectl", "kustomize", str(out)], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(docs) == len(files["kustomization.yaml"]["resources"])
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == NS
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["namespace"] == NS and binding["subjects"][0]["name"] == "default-editor"


@pytest.mark.parametrize("args, fragment", [
    (["--namespace", "Bad_NS"], "--namespace"),
    (["--namespace", NS, "--endpoint", "http://x:9000"], "--pipeline-root"),
    (["--namespace", NS, "--pipeline-root", "s3://b/r"], "--region"),
])
def test_bad_input_is_one_line(args, fragment, tmp_path, capsys):
    assert main(["kubeflow-manifests", *args, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err
