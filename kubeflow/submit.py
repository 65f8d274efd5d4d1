"""Submitting a compiled pipeline to a Kubeflow Pipelines endpoint (`taxi-pipeline submit` is its CLI).

`compile` writes TFX's PipelineJob JSON; the KFP 2.x backend and `kfp.Client` take a pipeline
package YAML instead, so the spec is converted (`kubeflow/package.py`) into a temporary package
that also mounts the shared volume in every step, then submitted with
`kfp.Client(host=...).create_run_from_pipeline_package`. Every expected failure (no spec, a wrong
URL, a refused run) raises `KubeflowError` with the line the user sees.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import kubeflow  # noqa: F401  (TF_USE_LEGACY_KERAS, though nothing here loads TensorFlow)
from kubeflow import package
from kubeflow.errors import KubeflowError

log = logging.getLogger("taxi_pipeline.submit")


def check_endpoint(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise KubeflowError(f"--endpoint {url!r} is not an http(s) URL; give e.g. http://localhost:8080")
    return url.rstrip("/")


def build_package(spec_path: Path, workdir: Path, pvc: Optional[str],
                  pipeline_root: Optional[str] = None):
    """Writes the KFP package for `spec_path` into `workdir`: (package path, pipeline root)."""
    if not spec_path.is_file():
        raise KubeflowError(f"no compiled pipeline at {spec_path}: run `taxi-pipeline compile --image IMAGE` first")
    try:
        spec, compiled_root, platform = package.load_spec(spec_path)
    except package.SpecError as err:
        raise KubeflowError(f"{err}; recompile with `taxi-pipeline compile --image IMAGE`") from None
    root = package.check_pipeline_root(pipeline_root) or compiled_root
    if platform is None:
        platform = package.platform_spec(spec, pvc, root)
    target = workdir / "pipeline.yaml"
    target.write_text(package.dump_package(spec, platform))
    return target, root


def _unreachable(err: BaseException) -> bool:
    """Whether `err` means no HTTP answer came back (refused, DNS, timeout, TLS)."""
    import urllib3

    return isinstance(err, (urllib3.exceptions.HTTPError, ConnectionError, OSError))


def _reason(err: BaseException) -> str:
    """'Connection refused', 'Name or service not known', ... rather than urllib3's repr soup."""
    cause = getattr(err, "reason", None) or err
    text = str(cause)
    if "] " in text:  # "...: [Errno 111] Connection refused"
        return text.rsplit("] ", 1)[-1].lower()
    return type(cause).__name__


HEALTHZ = "/apis/v2beta1/healthz"


def check_reachable(endpoint: str, timeout_s: float = 10.0) -> None:
    """One quick GET of the KFP health endpoint, so a wrong URL fails in seconds and in one line.

    (kfp.Client's own check retries HTTP errors 5 times, 5 s apart, logging a traceback each time.)
    """
    import json

    import urllib3

    url = endpoint + HEALTHZ
    try:
        response = urllib3.PoolManager().request("GET", url, timeout=timeout_s, retries=False)
    except urllib3.exceptions.HTTPError as err:
        raise KubeflowError(f"cannot reach Kubeflow Pipelines at {endpoint} ({_reason(err)}); "
                        "check the URL and that the port-forward or ingress is up") from None
    if response.status != 200:
        raise KubeflowError(f"{url} answered HTTP {response.status}: is {endpoint} the Kubeflow Pipelines API "
                        "(the ml-pipeline-ui or ml-pipeline service)?")
    try:
        json.loads(response.data)
    except ValueError:
        raise KubeflowError(f"{url} answered, but not as the Kubeflow Pipelines API (a login page? "
                        "authenticated endpoints are not supported; port-forward ml-pipeline-ui instead)") from None


def submit(package_path: Path, endpoint: str, experiment: str, run_name: Optional[str],
           namespace: Optional[str], pipeline_root: Optional[str], enable_caching: Optional[bool] = None):
    """Creates the run; returns kfp's RunPipelineResult. Errors become one readable line.

    `enable_caching`: None keeps each task's compiled `cachingOptions`; False/True sets every task's
    (kfp.Client's `_override_caching_options`, SDK 2.5).
    """
    import warnings

    import kfp
    import kfp_server_api

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
            client = kfp.Client(host=endpoint, namespace=namespace or "kubeflow")  # checks /healthz
        return client.create_run_from_pipeline_package(
            str(package_path), arguments={}, run_name=run_name, experiment_name=experiment,
            namespace=namespace, pipeline_root=pipeline_root, enable_caching=enable_caching)
    except kfp_server_api.ApiException as err:
        log.info("KFP API error", exc_info=True)
        detail = (err.body or "").strip().splitlines()[0][:200] if err.body else ""
        raise KubeflowError(f"Kubeflow Pipelines at {endpoint} refused the run: HTTP {err.status} "
                        f"{err.reason}{': ' + detail if detail else ''}") from None
    except TimeoutError:  # kfp.Client's healthz check got HTTP errors 5 times (not a KFP API?)
        raise KubeflowError(f"no Kubeflow Pipelines API answered at {endpoint}/apis/v2beta1/healthz; "
                        "check the URL points at the KFP API (ml-pipeline-ui or ml-pipeline service)") from None
    except Exception as err:  # noqa: BLE001  (classified just below)
        if not _unreachable(err):
            raise
        log.info("KFP endpoint unreachable", exc_info=True)
        raise KubeflowError(f"cannot reach Kubeflow Pipelines at {endpoint} ({_reason(err)}); "
                        "check the URL and that the port-forward or ingress is up") from None
