"""The pipeline root on an S3-compatible store (AWS S3, or the MinIO that Kubeflow installs).

TFX steps read and write artifact URIs themselves, through two filesystems:
- `tf.io.gfile` (TensorFlow: Trainer, Transform, Evaluator, ...): `s3://` comes from
  tensorflow-io's filesystem plugin (tensorflow-io 0.37.1, the release for TF 2.16), registered
  here right after TensorFlow loads, in every process of the image
  (a `.pth` file in the image calls `install_import_hook`, so Beam's worker processes get it too);
- Beam's `FileSystems` (ExampleGen, StatisticsGen, Transform, Evaluator): `s3://` comes from
  `apache-beam[aws]` (boto3).

Both read the usual environment variables; `configure_environment` fills in each one's names
from the other's: `AWS_ENDPOINT_URL` (boto3) <-> `S3_ENDPOINT`, `S3_USE_HTTPS`, `S3_VERIFY_SSL`
(tensorflow-io), `AWS_REGION` <-> `AWS_DEFAULT_REGION`, credentials `AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY` (Kubeflow's `mlpipeline-minio-artifact` secret has keys `accesskey` and
`secretkey`; kubeflow/manifests maps them to these names).

`minio://BUCKET/PATH` is the pipeline root self-hosted Kubeflow Pipelines uses by default: its
launcher talks to the in-cluster object store for it. Neither filesystem knows that scheme, so the step
entry point (`kubeflow.entrypoint`) hands TFX the same objects as `s3://BUCKET/PATH`. KFP gives the
step's pod no endpoint (no AWS_ENDPOINT_URL at any release), so it is found as the launcher finds it
(`default_minio_endpoint`), unless `compile --s3-endpoint` put one in every step's environment.

Nothing here imports TensorFlow at module level: it is imported by every Python process of the image.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Dict, MutableMapping, Optional
from urllib.parse import urlparse

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
MINIO_SCHEME = "minio://"
SCHEMES = ("gs://", S3_SCHEME, MINIO_SCHEME)
# The object store Kubeflow Pipelines installs, newest first (kubeflow/pipelines, backend/src/v2/objectstore/
# config.go): SeaweedFS from 2.16.0 (2.17.0 :29 DefaultEndpointInMultiUserMode "seaweedfs.kubeflow:9000";
# its Service maps 9000 to the S3 port 8333, manifests/kustomize/third-party/seaweedfs/base/seaweedfs/
# seaweedfs-service.yaml), MinIO before (2.2.0 :31 and 2.5.0 :32 "minio-service.kubeflow:9000").
KFP_MINIO_ENDPOINTS = ("seaweedfs.kubeflow:9000", "minio-service.kubeflow:9000")
KFP_MINIO_SECRET = "mlpipeline-minio-artifact"
KFP_MINIO_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
DEFAULT_REGION = "us-east-1"  # MinIO's default; the AWS SDKs need some region to sign requests


class ObjectStoreError(RuntimeError):
    """The object store is misconfigured or unreachable; the message says which and how to fix it."""


def is_object_store(uri: str) -> bool:
    return uri.startswith(SCHEMES)


def to_s3(uri: str) -> str:
    """`minio://b/p` -> `s3://b/p`; anything else unchanged."""
    return S3_SCHEME + uri[len(MINIO_SCHEME):] if uri.startswith(MINIO_SCHEME) else uri


def configure_environment(env: Optional[MutableMapping[str, str]] = None, minio: bool = False) -> Dict[str, str]:
    """Makes boto3 (Beam) and tensorflow-io (tf.io.gfile) see the same endpoint, region and TLS settings.

    Returns the variables it set. `minio`: default the endpoint to Kubeflow's MinIO service.
    """
    env = os.environ if env is None else env
    changed: Dict[str, str] = {}

    def put(name: str, value: str) -> None:
        if not env.get(name):
            env[name] = changed[name] = value

    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("S3_ENDPOINT")
    if not endpoint and minio:
        endpoint = "http://" + default_minio_endpoint(env)  # KFP's store is plain HTTP (disableSSL "true")
    if endpoint:
        url = endpoint if "://" in endpoint else ("https://" if env.get("S3_USE_HTTPS", "1") != "0" else "http://") + endpoint
        put("AWS_ENDPOINT_URL", url)
        put("S3_ENDPOINT", url)
        put("S3_USE_HTTPS", "1" if urlparse(url).scheme == "https" else "0")
        if urlparse(url).scheme != "https":
            put("S3_VERIFY_SSL", "0")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    put("AWS_REGION", region)
    put("AWS_DEFAULT_REGION", region)
    # tensorflow-io otherwise asks the EC2 metadata service for credentials/region first (slow off AWS).
    put("AWS_EC2_METADATA_DISABLED", "true")
    return changed


# Non-secret settings a process started for a step (a TFJob worker) needs to reach the same store.
FORWARDED_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL",
                      "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")


def worker_environment(uri: str, env: Optional[MutableMapping[str, str]] = None):
    """(plain env, env from secrets {name: (secret, key)}) for a pod that must read `uri` as this step does.

    Credentials are never copied as values: the pod reads them from Kubeflow's MinIO secret.
    """
    env = os.environ if env is None else env
    if not uri.startswith((S3_SCHEME, MINIO_SCHEME)):
        return {}, {}
    plain = {k: env[k] for k in FORWARDED_SETTINGS if env.get(k)}
    secret = {name: (KFP_MINIO_SECRET, key) for name, key in KFP_MINIO_SECRET_KEYS.items()}
    return plain, secret


def default_minio_endpoint(env: Optional[MutableMapping[str, str]] = None, resolves=None) -> str:
    """host:port of the object store a `minio://` root means, as KFP's launcher finds it.

    KFP 2.2-2.15 take `$MINIO_SERVICE_SERVICE_HOST:$MINIO_SERVICE_SERVICE_PORT` when the pod sees that
    Service (objectstore/config.go 2.2.0:154-168, MinioDefaultEndpoint), else `minio-service.kubeflow:9000`;
    2.16 and later `seaweedfs.kubeflow:9000`. A pod cannot tell which release runs it, so the first
    of those names that resolves in the cluster's DNS is taken (SeaweedFS first); with none, SeaweedFS's
    (the step then fails in one line naming it: `check_reachable`).
    """
    env = os.environ if env is None else env
    if env.get("MINIO_SERVICE_SERVICE_HOST"):
        return f"{env['MINIO_SERVICE_SERVICE_HOST']}:{env.get('MINIO_SERVICE_SERVICE_PORT') or '9000'}"
    resolves = resolves or _resolves
    for candidate in KFP_MINIO_ENDPOINTS:
        if resolves(candidate.rsplit(":", 1)[0]):
            return candidate
    return KFP_MINIO_ENDPOINTS[0]


def _resolves(host: str) -> bool:
    import socket

    try:
        socket.getaddrinfo(host, None)
        return True
    except OSError:
        return False


def endpoint(env: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("S3_ENDPOINT") or None


def register_tf_plugin() -> bool:
    """Registers s3:// (and tensorflow-io's other schemes) with tf.io.gfile; True when it is there.

    `import tensorflow_io` registers its filesystem plugin (`libtensorflow_io_plugins.so`) and loads
    its op library lazily (~0.2 s); registering the plugin file directly instead would make a later
    `import tensorflow_io` fail ("File system for az already registered").
    """
    try:
        import tensorflow_io  # noqa: F401
    except ImportError:
        return False
    return True


class _AfterTensorFlow(importlib.abc.MetaPathFinder):
    """Runs `register_tf_plugin` as soon as `import tensorflow` has finished, in any process."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            try:
                register_tf_plugin()
            except Exception:  # noqa: BLE001  (never break `import tensorflow`; s3:// errors then say why)
                log.warning("could not register tensorflow-io's s3:// filesystem", exc_info=True)

        spec.loader.exec_module = exec_module
        return spec


def install_import_hook() -> None:
    """Called from the image's `.pth` file: s3:// for tf.io.gfile in every process, and the env bridged."""
    if "tensorflow" in sys.modules:
        register_tf_plugin()
        return
    if not any(isinstance(f, _AfterTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTensorFlow())
    configure_environment()


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """One quick request to the bucket of `uri` (s3:// or minio://), so an unreachable endpoint or a
    missing bucket fails in seconds and in one line instead of after the AWS SDKs' retries."""
    import boto3
    import botocore.config
    import botocore.exceptions

    bucket = urlparse(to_s3(uri)).netloc
    url = endpoint()
    client = boto3.client("s3", endpoint_url=url, config=botocore.config.Config(
        connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1}))
    where = f"S3 endpoint {url}" if url else "AWS S3"
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.EndpointConnectionError:
        raise ObjectStoreError(f"cannot reach the {where} for pipeline root {uri}; check AWS_ENDPOINT_URL "
                               "(or S3_ENDPOINT) and that the store is up") from None
    except botocore.exceptions.NoCredentialsError:
        raise ObjectStoreError(f"no credentials for pipeline root {uri}: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY") from None
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        if code in ("403", "AccessDenied", "Forbidden"):
            # The store answered. Multi-user KFP 2.15+ gives each namespace a key limited to its own prefixes
            # (profile controller sync.py, 2.17.0 :465-492): it may not HEAD the bucket, yet may write the root.
            return
        raise ObjectStoreError(f"{where} refused bucket {bucket!r} of pipeline root {uri} (HTTP/S3 error {code}); "
                               "check the bucket exists and the credentials may use it") from None
