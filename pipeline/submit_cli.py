"""`taxi-pipeline submit`: start a run of the compiled pipeline on a Kubeflow Pipelines endpoint.

The work is `kubeflow.submit` (convert the spec to a KFP package with the shared volume mounted,
check the endpoint, `kfp.Client.create_run_from_pipeline_package`); this module is its command line.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from kubeflow import package, storage, submit
from kubeflow.errors import KubeflowError
from pipeline import configs

DEFAULT_EXPERIMENT = "taxi-pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the home `compile` wrote to (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--spec", type=Path, default=None,
                        help=f"compiled pipeline (default <home>/kubeflow/{package.DEFAULT_SPEC_NAME})")
    parser.add_argument("--endpoint", required=True, metavar="URL",
                        help="Kubeflow Pipelines API, e.g. http://localhost:8080 after "
                             "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"experiment to file the run under, created if missing (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--run-name", default=None, help="run name (default: spec file name and time)")
    parser.add_argument("--namespace", default=None,
                        help="Kubeflow profile namespace (multi-user installs; read from a ServiceAccount "
                             "--token when not given)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--token", default=None,
                      help="bearer token for a multi-user Kubeflow: `kubectl create token default-editor "
                           f"-n NAMESPACE --audience={submit.TOKEN_AUDIENCE}`")
    auth.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                      help="read the bearer token from this file instead")
    parser.add_argument("--cookie", default=None, metavar="COOKIE",
                        help="login cookie for a multi-user Kubeflow behind its auth proxy, copied from the "
                             "browser: 'oauth2_proxy_kubeflow=...' (Kubeflow 1.9+) or 'authservice_session=...'")
    parser.add_argument("--pipeline-root", default=None, metavar="URI",
                        help="object store for TFX artifacts, overriding the one compiled in")
    parser.add_argument("--pvc", default=storage.PVC_NAME,
                        help=f"PersistentVolumeClaim mounted at {storage.MOUNT_PATH} in every step "
                             f"(default {storage.PVC_NAME}, from kubeflow/manifests)")
    parser.add_argument("--schedule", default=None, metavar="CRON",
                        help="create a recurring run instead of one run, e.g. '0 3 * * *' (every day at 03:00): "
                             "at most one run at a time, missed runs not caught up")
    parser.add_argument("--no-cache", action="store_true",
                        help="run every step, none from KFP's cache (overrides the caching compiled in)")
    parser.add_argument("--no-pvc", dest="pvc", action="store_const", const=None,
                        help="mount no volume (the cluster provides the compiled-in data and serving paths otherwise)")


def main(args: argparse.Namespace) -> int:
    endpoint = submit.check_endpoint(args.endpoint)
    cron = submit.kfp_cron(args.schedule) if args.schedule else None  # a bad one fails before anything is sent
    token = submit.read_token(args.token, args.token_file)
    spec_path = args.spec or package.default_spec_path(args.home or configs.default_home())
    with tempfile.TemporaryDirectory(prefix="taxi-submit-") as workdir:
        package_path, root = submit.build_package(spec_path, Path(workdir), args.pvc, args.pipeline_root)
        health = submit.check_reachable(endpoint, token=token, cookie=args.cookie)
        namespace = args.namespace
        if health.get("multi_user") and not namespace:
            namespace = submit.token_namespace(token)
            if not namespace:
                raise KubeflowError(f"Kubeflow Pipelines at {endpoint} is multi-user: give --namespace "
                                    "(your profile's namespace, e.g. kubeflow-user-example-com)")
        result = submit.submit(package_path, endpoint, args.experiment, args.run_name, namespace, root,
                               enable_caching=False if args.no_cache else None, token=token, cookie=args.cookie,
                               cron=cron)
    if cron:
        print(f"created recurring run {result.recurring_run_id} on {endpoint} (cron '{cron}', "
              f"at most one run at a time; experiment {args.experiment}, pipeline root {root or 'cluster default'})")
        print(f"see it at {endpoint}/#/recurringrun/details/{result.recurring_run_id}")
        return 0
    print(f"submitted run {result.run_id} to {endpoint} (experiment {args.experiment}"
          f"{', namespace ' + namespace if namespace else ''}, "
          f"pipeline root {root or 'cluster default'})")
    print(f"follow it at {endpoint}/#/runs/details/{result.run_id}")
    return 0
