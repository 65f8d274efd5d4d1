"""The `kfp-launcher` ConfigMap: which pipeline root a namespace's runs default to, and how KFP's
own launcher opens it.

TFX steps read and write artifacts themselves (`kubeflow/object_store.py`), but the KFP launcher
that wraps every step also opens the pipeline root (to upload outputs and record them), with its
own Go S3 client. For an `s3://` root it finds the endpoint and credentials only in this
ConfigMap's `providers` entry; without one it falls back to the environment (`fromEnv`), which
knows no MinIO/SeaweedFS endpoint. The driver reads the ConfigMap from the run's namespace, so a
multi-user profile namespace needs its own.

The data mirrors KFP's Go structs (kubeflow/pipelines, `backend/src/v2/config/`), which the driver
fills with `sigs.k8s.io/yaml.Unmarshal` (non-strict: a key an older backend does not know, such as
`forcePathStyle` on 2.2.0, is ignored):

- ConfigMap name `kfp-launcher`, keys `defaultPipelineRoot` and `providers`
  (2.5.0 config/env.go:36-40; 2.17.0 config/env.go:37-40);
- `providers` is YAML with top-level `minio`, `s3`, `gs` (2.5.0 config/env.go:45-49,
  2.17.0 config/env.go:51-54); `minio` has the `s3` schema (config/minio.go:21).
"""
from __future__ import annotations

from typing import Dict, Optional
from urllib.parse import urlparse

import yaml

from kubeflow import object_store
from kubeflow.errors import KubeflowError

CONFIGMAP_NAME = "kfp-launcher"  # 2.5.0 backend/src/v2/config/env.go:36 configMapName
# AWS S3's global endpoint: KFP's S3 session leaves it out and lets the SDK resolve the region's
# own (2.2.0 objectstore/object_store.go:269 exact match; 2.5.0 :270 and 2.17.0 :354 regex
# `^(https://)?s3.amazonaws.com`), which is what AWS needs.
AWS_ENDPOINT = "s3.amazonaws.com"


def _provider_default(endpoint: str, region: str, disable_ssl: bool, secret: str,
                      access_key_key: str, secret_key_key: str) -> Dict:
    """One `S3ProviderDefault` (2.5.0 backend/src/v2/config/s3.go:30-39, 2.17.0 s3.go:31-42)."""
    return {
        "endpoint": endpoint,            # s3.go:31 `json:"endpoint"` -> session param endpoint (s3.go:97)
        "region": region,                # s3.go:34 `json:"region"` -> region (s3.go:98)
        "disableSSL": disable_ssl,       # s3.go:36 `json:"disableSSL"` (*bool; absent = false, s3.go:100-104)
        "forcePathStyle": True,          # s3.go:38 `json:"forcePathStyle"` (2.5.0+; 2.2.0 always path style,
                                         # objectstore/object_store.go:260), MinIO/SeaweedFS need it
        "credentials": {                 # s3.go:32 `json:"credentials"` -> S3Credentials (s3.go:41-46)
            "fromEnv": False,            # s3.go:43 `json:"fromEnv"`; false: read the secret (s3.go:112-117)
            "secretRef": {               # s3.go:45 `json:"secretRef"` -> S3SecretRef (s3.go:60-65)
                "secretName": secret,    # s3.go:61, read in the pod's own namespace
                                         # (2.5.0 objectstore/object_store.go:296-299)
                "accessKeyKey": access_key_key,  # s3.go:63
                "secretKeyKey": secret_key_key,  # s3.go:64
            },
        },
    }


def providers(pipeline_root: str, endpoint: Optional[str] = None, region: Optional[str] = None,
              secret: str = object_store.KFP_MINIO_SECRET,
              access_key_key: str = object_store.KFP_MINIO_SECRET_KEYS["AWS_ACCESS_KEY_ID"],
              secret_key_key: str = object_store.KFP_MINIO_SECRET_KEYS["AWS_SECRET_ACCESS_KEY"]) -> Optional[Dict]:
    """The `providers` mapping for `pipeline_root`, or None when KFP's own default is right.

    - `s3://` with `endpoint` (MinIO, SeaweedFS, any S3-compatible store): that endpoint, TLS as
      its URL scheme says, `region` (default us-east-1);
    - `s3://` without `endpoint`: AWS S3, `region` required;
    - `minio://` without `endpoint`: None, the launcher's built-in MinIO session applies
      (2.5.0 config/minio.go:33-41: endpoint minio-service.kubeflow:9000, 2.17.0 seaweedfs.kubeflow:9000,
      secret mlpipeline-minio-artifact); with `endpoint`, a `minio` entry like the `s3` one;
    - `gs://`: None (the launcher uses the pod's Google credentials); an endpoint is an error.
    """
    scheme = pipeline_root.split("://", 1)[0]
    if scheme == "gs":
        if endpoint or region:
            raise KubeflowError("a gs:// pipeline root takes no --endpoint or --region (the KFP launcher "
                                "uses the pod's Google credentials)")
        return None
    if scheme not in ("s3", "minio"):
        raise KubeflowError(f"pipeline root {pipeline_root!r}: the KFP launcher knows gs://, s3:// and minio:// roots")
    if endpoint is None:
        if scheme == "minio":
            return None
        if not region:
            raise KubeflowError("an s3:// pipeline root without --endpoint is AWS S3: give --region (the bucket's "
                                "region), or --endpoint URL for MinIO/SeaweedFS")
        entry = _provider_default(AWS_ENDPOINT, region, False, secret, access_key_key, secret_key_key)
    else:
        url = urlparse(endpoint if "://" in endpoint else "http://" + endpoint)
        if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
            raise KubeflowError(f"--endpoint {endpoint!r} must be http(s)://HOST[:PORT], e.g. "
                                "http://minio-service.kubeflow:9000")
        # host:port without the scheme, as KFP writes its own (2.5.0 config/env.go:164-179); the
        # scheme becomes disableSSL, which 2.17.0 turns back into http:// (objectstore/object_store.go:358-366).
        entry = _provider_default(url.netloc, region or object_store.DEFAULT_REGION, url.scheme == "http",
                                  secret, access_key_key, secret_key_key)
    return {scheme: {"default": entry}}


def launcher_configmap(namespace: str, pipeline_root: str, endpoint: Optional[str] = None,
                       region: Optional[str] = None, secret: str = object_store.KFP_MINIO_SECRET,
                       access_key_key: str = object_store.KFP_MINIO_SECRET_KEYS["AWS_ACCESS_KEY_ID"],
                       secret_key_key: str = object_store.KFP_MINIO_SECRET_KEYS["AWS_SECRET_ACCESS_KEY"]) -> Dict:
    """The `kfp-launcher` ConfigMap for `namespace`: `defaultPipelineRoot`, plus `providers` where needed.

    The root's runs use it when the run names no pipeline root of its own (the root DAG driver,
    2.5.0 driver/driver.go:168-173); `providers` applies to every run in the namespace whose root
    has that scheme.
    """
    from kubeflow import package

    root = package.check_pipeline_root(pipeline_root)
    data = {"defaultPipelineRoot": root}
    found = providers(root, endpoint, region, secret, access_key_key, secret_key_key)
    if found:
        data["providers"] = yaml.safe_dump(found, sort_keys=False)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP_NAME, "namespace": namespace}, "data": data}
