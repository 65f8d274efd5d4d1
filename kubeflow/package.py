"""Turn what TFX's KubeflowV2DagRunner writes into what a Kubeflow Pipelines backend runs.

`KubeflowV2DagRunner` writes a `PipelineJob` JSON (`displayName`, `pipelineSpec`,
`runtimeConfig.gcsOutputDirectory` = pipeline root): the Vertex AI format. A Kubeflow Pipelines
2.x backend instead takes a pipeline *package*: a YAML file whose first document is the
`PipelineSpec` and whose optional second document is the `PlatformSpec` (Kubernetes extras such
as volume mounts), which is also the only format `kfp.Client` 2.5 reads. This module does that
conversion in one place, for `compile --output x.yaml` and for `submit`.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from kubeflow import object_store, storage
from kubeflow.errors import KubeflowError

# A KFP launcher accepts only these pipeline roots; TFX steps then read and write artifact URIs
# directly (tf.io.gfile: gs:// built in, s3:// from tensorflow-io; Beam: gs://, s3:// from boto3);
# minio:// is handed to them as s3:// by kubeflow.entrypoint (kubeflow/object_store.py).
OBJECT_STORE_SCHEMES = ("gs://", "s3://", "minio://")


DEFAULT_SPEC_NAME = "taxi-pipeline.json"  # <home>/kubeflow/<this>: where compile writes and submit reads
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path.
_IMAGE_RE = re.compile(r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*"
                       r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


class SpecError(KubeflowError):
    """The file is not a compiled pipeline (its message says what is wrong with it)."""


def default_spec_path(home: Path) -> Path:
    """Where `compile` writes and `submit` reads by default: <home>/kubeflow/taxi-pipeline.json."""
    return Path(home) / "kubeflow" / DEFAULT_SPEC_NAME


def check_image(image: str) -> str:
    """`image` if it is an image reference (REGISTRY/NAME:TAG or @sha256:...), else KubeflowError."""
    if not _IMAGE_RE.match(image):
        raise KubeflowError(f"--image {image!r} is not an image reference; give REGISTRY/NAME:TAG")
    return image


def check_pipeline_root(uri: Optional[str]) -> Optional[str]:
    """An object-store URI, or None to leave the choice to the cluster's default pipeline root."""
    if uri is None:
        return None
    if not uri.startswith(OBJECT_STORE_SCHEMES) or len(uri.split("://", 1)[1].strip("/")) == 0:
        raise KubeflowError(f"--pipeline-root {uri!r} must be an object-store URI ({', '.join(OBJECT_STORE_SCHEMES)}"
                            "<bucket>/<path>): the KFP launcher accepts no local paths")
    return uri.rstrip("/")


def load_spec(path: Path) -> Tuple[Dict, Optional[str], Optional[Dict]]:
    """Reads a compiled pipeline: (pipeline spec, pipeline root or None, platform spec or None).

    Accepts the PipelineJob JSON that `compile` writes by default and the KFP package YAML it
    writes for a .yaml/.yml output (or that the KFP SDK compiler writes).
    """
    text = Path(path).read_text()
    try:
        if Path(path).suffix == ".json":
            docs = [json.loads(text)]
        else:
            docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (ValueError, yaml.YAMLError) as err:
        kind = "JSON" if Path(path).suffix == ".json" else "YAML"
        raise SpecError(f"{path} is not valid {kind} ({err.__class__.__name__})") from None
    if not docs or not isinstance(docs[0], dict):
        raise SpecError(f"{path} holds no pipeline spec")
    first = docs[0]
    if "pipelineSpec" in first:  # PipelineJob (TFX's JSON)
        spec = first["pipelineSpec"]
        root = (first.get("runtimeConfig") or {}).get("gcsOutputDirectory") or None
    elif "deploymentSpec" in first and "root" in first:  # bare PipelineSpec (package YAML)
        spec, root = first, None
    else:
        raise SpecError(f"{path} is not a compiled pipeline (no pipelineSpec or deploymentSpec in it)")
    root = root or spec.get("defaultPipelineRoot") or None
    platform = docs[1] if len(docs) > 1 and isinstance(docs[1], dict) else None
    return spec, root, platform


def container_executors(spec: Dict) -> List[str]:
    """Labels of the executors that run a container (not importers or resolvers)."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return sorted(label for label, executor in executors.items() if "container" in executor)


def platform_spec(spec: Dict, pvc_name: Optional[str], pipeline_root: Optional[str] = None,
                  mount_path: str = str(storage.MOUNT_PATH)) -> Optional[Dict]:
    """The KFP `PlatformSpec` of every container step: the shared volume, and the object store's credentials.

    `pvc_name`: the PersistentVolumeClaim mounted at `mount_path` (None: no volume).
    The credentials of Kubeflow's MinIO secret reach every step as AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY unless the pipeline root (given, else the spec's default) is `gs://`
    (Google's credentials come from the pod's service account). With no root at all the run takes the
    cluster's default, which on self-hosted KFP is MinIO (`minio://mlpipeline/v2/artifacts`, or the
    `kfp-launcher` ConfigMap's `defaultPipelineRoot`): TFX's steps read and write it themselves and
    need the secret as much as the launcher does. None when there is nothing to add.
    """
    labels = container_executors(spec)
    executors: Dict[str, Dict] = {label: {} for label in labels}
    if pvc_name:
        pvc = storage.pvc_platform_spec(labels, pvc_name, mount_path)
        executors = pvc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    root = pipeline_root or spec.get("defaultPipelineRoot") or ""
    if not root.startswith("gs://"):
        for executor in executors.values():
            executor["secretAsEnv"] = [object_store_secret_env()]
    if not any(executors.values()):
        return None
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}


def object_store_secret_env() -> Dict:
    """`secretAsEnv` as kfp-kubernetes' use_secret_as_env compiles it, for the mlpipeline-minio-artifact secret."""
    return {"secretName": object_store.KFP_MINIO_SECRET,
            "keyToEnv": [{"secretKey": key, "envVar": env} for env, key in object_store.KFP_MINIO_SECRET_KEYS.items()]}


def dump_package(spec: Dict, platform: Optional[Dict]) -> str:
    """The package YAML text: the pipeline spec, then the platform spec when there is one."""
    docs = [spec] + ([platform] if platform else [])
    return yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False)


def write_atomic(path: Path, text: str) -> None:
    """Writes next to the target and renames, so a reader never sees half a spec."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def dump_job(job: Dict) -> str:
    return json.dumps(job, sort_keys=True, indent=1)
