"""Submitting a compiled pipeline to a Kubeflow Pipelines endpoint (`taxi-pipeline submit` is its CLI).

`compile` writes TFX's PipelineJob JSON; the KFP 2.x backend and `kfp.Client` take a pipeline
package YAML instead, so the spec is converted (`kubeflow/package.py`) into a temporary package
that also mounts the shared volume in every step, then submitted with
`kfp.Client(host=...).create_run_from_pipeline_package`. Every expected failure (no spec, a wrong
URL, a refused run, refused credentials) raises `KubeflowError` with the line the user sees.

Multi-user Kubeflow authenticates every API call: either a Kubernetes ServiceAccount token sent as
`Authorization: Bearer` (kfp.Client's `existing_token`), which the KFP API server checks with a
TokenReview for the audience `pipelines.kubeflow.org` (kubeflow/pipelines 2.5.0
backend/src/apiserver/common/const.go:48-54, auth/auth.go:35-45), or the login cookie the browser
got from the cluster's auth proxy (kfp.Client's `cookies`; `oauth2_proxy_kubeflow` from Kubeflow
1.9 on, kubeflow/manifests v1.10.0 common/oauth2-proxy/base/oauth2_proxy.cfg:67). The health check
sends the same.
"""
from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Dict, Optional
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
TOKEN_AUDIENCE = "pipelines.kubeflow.org"  # 2.5.0 backend/src/apiserver/common/const.go:48-54
TOKEN_HINT = (f"`kubectl create token default-editor -n NAMESPACE --audience={TOKEN_AUDIENCE}` for --token, "
              "or the browser's login cookie for --cookie ('oauth2_proxy_kubeflow=...' on Kubeflow 1.9+, "
              "'authservice_session=...' before)")


def read_token(token: Optional[str], token_file: Optional[Path]) -> Optional[str]:
    """--token or the contents of --token-file (whitespace stripped), None when neither is given."""
    if token_file is not None:
        try:
            token = token_file.read_text()
        except OSError as err:
            raise KubeflowError(f"cannot read --token-file {token_file}: {err.strerror or err}") from None
    if token is None:
        return None
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise KubeflowError("the token is empty or has spaces in it; give the bare token " + TOKEN_HINT.split(" for")[0])
    return token


def auth_headers(token: Optional[str] = None, cookie: Optional[str] = None) -> Dict[str, str]:
    """The headers kfp.Client sends for `existing_token` and `cookies` (SDK 2.5.0
    kfp/client/client.py:291-294 api_key 'authorization' with prefix 'Bearer'; :187-195 cookie)."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    return headers


def token_namespace(token: Optional[str]) -> Optional[str]:
    """The namespace a ServiceAccount token was made in, read (not verified) from its JWT claims.

    Kubernetes puts it in the private claim `kubernetes.io.namespace` of tokens from
    `kubectl create token` (kubernetes pkg/serviceaccount/claims.go, privateClaims). None for any
    other token.
    """
    parts = (token or "").split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        namespace = claims.get("kubernetes.io", {}).get("namespace")
    except (ValueError, AttributeError):
        return None
    return namespace if isinstance(namespace, str) and namespace else None


def _auth_refused(endpoint: str, status: int, token: Optional[str], cookie: Optional[str]) -> KubeflowError:
    given = " and ".join(name for name, value in (("token", token), ("cookie", cookie)) if value)
    if given:
        return KubeflowError(f"Kubeflow Pipelines at {endpoint} refused the {given} (HTTP {status}): expired, for "
                             f"another cluster, or without access to the namespace; make a new one: {TOKEN_HINT}")
    return KubeflowError(f"Kubeflow Pipelines at {endpoint} needs authentication (HTTP {status}, multi-user "
                         f"Kubeflow?): give --token, --token-file or --cookie: {TOKEN_HINT}")


def check_reachable(endpoint: str, timeout_s: float = 10.0, token: Optional[str] = None,
                    cookie: Optional[str] = None) -> Dict:
    """One quick GET of the KFP health endpoint, so a wrong URL fails in seconds and in one line.

    Returns its answer (`multi_user` says whether runs need a namespace). Sends the same
    credentials kfp.Client will. (kfp.Client's own check retries HTTP errors 5 times, 5 s apart,
    logging a traceback each time.)
    """
    import urllib3

    url = endpoint + HEALTHZ
    try:
        response = urllib3.PoolManager().request("GET", url, headers=auth_headers(token, cookie),
                                                 timeout=timeout_s, retries=False, redirect=False)
    except urllib3.exceptions.HTTPError as err:
        raise KubeflowError(f"cannot reach Kubeflow Pipelines at {endpoint} ({_reason(err)}); "
                        "check the URL and that the port-forward or ingress is up") from None
    if response.status in (401, 403):
        raise _auth_refused(endpoint, response.status, token, cookie)
    if response.status in (301, 302, 303, 307, 308):  # the auth proxy's login page (oauth2-proxy, dex)
        where = response.headers.get("Location", "?")
        raise _auth_refused(endpoint, f"{response.status} to {where}", token, cookie)
    if response.status != 200:
        raise KubeflowError(f"{url} answered HTTP {response.status}: is {endpoint} the Kubeflow Pipelines API "
                        "(the ml-pipeline-ui or ml-pipeline service)?")
    try:
        answer = json.loads(response.data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise KubeflowError(f"{url} answered, but not as the Kubeflow Pipelines API (a login page? give --token "
                            "or --cookie, or port-forward ml-pipeline-ui instead)")
    return answer


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?\-LW#]+$")


def kfp_cron(expression: str) -> str:
    """A cron expression as KFP's scheduler parses it: six fields, seconds first (robfig/cron v1.2.0
    `cron.Parse`, kubeflow/pipelines backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go:84;
    the SDK's own example, sdk-2.5.0 sdk/python/kfp/client/client.py:820-822, is "0 0 9 ? * 2-6").
    The usual five fields (crontab's) get second 0 in front."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0"] + fields
    if len(fields) != 6 or not all(_CRON_FIELD.match(field) for field in fields):
        raise KubeflowError(f"--schedule {expression!r} is not a cron expression: give five fields (minute hour "
                            "day-of-month month day-of-week, e.g. '0 3 * * *') or six with seconds first")
    return " ".join(fields)


def submit(package_path: Path, endpoint: str, experiment: str, run_name: Optional[str],
           namespace: Optional[str], pipeline_root: Optional[str], enable_caching: Optional[bool] = None,
           token: Optional[str] = None, cookie: Optional[str] = None, cron: Optional[str] = None):
    """Creates the run, or with `cron` (KFP's six fields: `kfp_cron`) a recurring run; returns kfp's
    RunPipelineResult or V2beta1RecurringRun. Errors become one readable line.

    `enable_caching`: None keeps each task's compiled `cachingOptions`; False/True sets every task's
    (kfp.Client's `_override_caching_options`, SDK 2.5). `token`, `cookie`: kfp.Client's
    `existing_token` and `cookies`. A recurring run starts at most one run at a time (`max_concurrency`
    1: a run still going when the next is due delays it) and does not catch up on missed ones
    (`no_catchup`), as one run per home does locally.
    """
    import warnings

    import kfp
    import kfp_server_api

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
            client = kfp.Client(host=endpoint, namespace=namespace or "kubeflow",  # checks /healthz
                                existing_token=token, cookies=cookie)
        if cron:
            found = client.create_experiment(experiment, namespace=namespace)  # or the one of that name
            return client.create_recurring_run(
                experiment_id=found.experiment_id, job_name=run_name or "taxi-pipeline",
                cron_expression=cron, max_concurrency=1, no_catchup=True,
                pipeline_package_path=str(package_path), pipeline_root=pipeline_root, enable_caching=enable_caching)
        return client.create_run_from_pipeline_package(
            str(package_path), arguments={}, run_name=run_name, experiment_name=experiment,
            namespace=namespace, pipeline_root=pipeline_root, enable_caching=enable_caching)
    except kfp_server_api.ApiException as err:
        log.info("KFP API error", exc_info=True)
        if err.status in (401, 403):
            raise _auth_refused(endpoint, err.status, token, cookie) from None
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
