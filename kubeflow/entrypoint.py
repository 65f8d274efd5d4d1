"""Step entry point in the image: `python -m kubeflow.entrypoint MODULE ARGS...` runs `python -m MODULE ARGS...`.

Compiled specs (`kubeflow/spec_compat.py`) put this in front of TFX's own entry points
(`tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`, the ExampleGen driver) for
what TFX cannot do by itself on a self-hosted Kubeflow:
- `minio://` pipeline roots: TFX reads and writes artifact URIs itself, and no filesystem knows
  `minio://`, so the executor input is handed to TFX with `s3://` URIs (the same objects; the
  endpoint defaults to Kubeflow's MinIO), and the executor output TFX writes for the KFP launcher
  is turned back to `minio://`: the launcher merges output URIs into its own and must find them
  under its pipeline root (`launcher_v2.go`: mergeRuntimeArtifacts, then bucketConfig.KeyFromURI);
- S3 settings: boto3's and tensorflow-io's environment variables filled in from each other;
- an unreachable or refused S3 store fails the step at once, in one line;
- TFX's Beam executors would package TFX for the step's workers, which run this image already;
- TFX's entry point imports the Evaluator's executor, whose package `__init__` would import every
  TFX component (Kubernetes and Docker clients, keras_tuner...): deferred (`kubeflow.tfx_internals`);
- exit status: the AWS SDK inside tensorflow-io aborts at interpreter shutdown ("pure virtual
  method called", exit 134) once it has been used; the step's real status is kept by leaving
  with `os._exit` after flushing.
"""
from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from typing import List, Optional

import kubeflow  # noqa: F401  (TF_USE_LEGACY_KERAS)
from kubeflow import executor_input, object_store, tfx_internals

ERROR_MARKER = "TAXI_STEP_ERROR:"


def _rewrite(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_rewrite(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, old, new) for k, v in value.items()}
    return value


def _output_file(args: List[str]) -> Optional[str]:
    """The executor output file named in the ExecutorInput JSON argument, if any."""
    for arg in args:
        if arg.startswith("{") and '"outputs"' in arg:
            try:
                return json.loads(arg).get("outputs", {}).get("outputFile")
            except ValueError:
                return None
    return None


def _restore_minio(path: str) -> None:
    """s3:// -> minio:// in the executor output TFX wrote, so the launcher finds its own URIs."""
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read()
    try:
        document = json.loads(text)
    except ValueError:
        return
    with open(path, "w") as f:
        json.dump(_rewrite(document, object_store.S3_SCHEME, object_store.MINIO_SCHEME), f)


def _object_store_uri(args: List[str]) -> Optional[str]:
    """An s3:// output URI of this step (the pipeline root's bucket), from the ExecutorInput argument."""
    for arg in args:
        if arg.startswith("{") and '"outputs"' in arg:
            try:
                artifacts = json.loads(arg).get("outputs", {}).get("artifacts", {})
            except ValueError:
                return None
            for artifact_list in artifacts.values():
                for artifact in artifact_list.get("artifacts", []):
                    if artifact.get("uri", "").startswith(object_store.S3_SCHEME):
                        return artifact["uri"]
    return None


def _beam_step_settings() -> None:
    """A Beam step's workers run this image (the DirectRunner in this container, DOCKER and Dataflow
    workers the pipeline image), so TFX's sdist of itself, built per Beam step (2-4 s and a 49 MB copy
    of TFX in /tmp; pipeline/beam_runners.py: beam_steps), is skipped for the step; and Beam
    works out each DoFn's state and timer specs once (tfx_internals.memoize_dofn_specs), as in a local run."""
    tfx_internals.patch_beam_steps()  # for the rest of this process: one step


def main(argv: List[str]) -> int:
    if not argv:
        print("usage: python -m kubeflow.entrypoint MODULE [ARGS...]", file=sys.stderr)
        return 2
    tfx_internals.defer_tfx_components()  # before anything in this process imports under tfx.components
    module, args = argv[0], list(argv[1:])
    args, adapted = executor_input.adapt_args(args)
    for what, keys in adapted.items():
        print(f"kubeflow.entrypoint: {what}: {', '.join(keys)}", file=sys.stderr, flush=True)
    minio = any(object_store.MINIO_SCHEME in arg for arg in args)
    object_store.configure_environment(minio=minio)
    if minio:
        args = [arg.replace(object_store.MINIO_SCHEME, object_store.S3_SCHEME) for arg in args]
    output_file = _output_file(args)
    sys.argv = [module] + args
    code = 0
    try:
        uri = _object_store_uri(args)
        if uri:  # fail in seconds, in one line, rather than after the AWS SDKs' retries
            object_store.check_reachable(uri)
        _beam_step_settings()
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as err:  # noqa: BLE001  (report any failure in one line, then the exit status)
        traceback.print_exc()
        message = " ".join(str(err).split()) or "(no message)"
        print(f"{ERROR_MARKER} {type(err).__name__}: {message[:500]}", file=sys.stderr, flush=True)
        code = 1
    if code == 0 and minio and output_file:
        _restore_minio(output_file)
    return code


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
