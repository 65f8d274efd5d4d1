"""Trainer worker entry point: `python -m components.multiworker_trainer.worker --spec PATH`.

One of these runs per worker, as a local process or in a TFJob pod. It rebuilds the FnArgs that
TFX's GenericExecutor would have built from the serialized Trainer execution and calls the
configured `run_fn`; the distribution strategy comes from `TF_CONFIG`, which the local launcher or
the training operator sets. A failure ends with one `TRAINER_WORKER_ERROR:` line so the launcher
can quote the cause instead of a whole traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback

import components  # noqa: F401  (pins TF_USE_LEGACY_KERAS before TensorFlow loads)
from trainer_module.child_processes import die_with_parent

ERROR_MARKER = "TRAINER_WORKER_ERROR:"
PARENT_PID_ENV = "TRAINER_WORKER_PARENT_PID"

log = logging.getLogger("trainer_worker")


def run(spec: str) -> None:
    """Rebuilds FnArgs exactly as GenericExecutor.Do does and calls run_fn."""
    from tfx.components.util import udf_utils

    from components.multiworker_trainer import job_spec
    from kubeflow import tfx_internals

    inputs, outputs, exec_properties = job_spec.read_spec(spec)
    fn_args = tfx_internals.trainer_fn_args(inputs, outputs, exec_properties)
    run_fn = udf_utils.get_fn(exec_properties, "run_fn")
    log.info("calling %s.%s", run_fn.__module__, run_fn.__name__)
    run_fn(fn_args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.multiworker_trainer.worker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="path (any TFX fileio filesystem) of the execution spec")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get(PARENT_PID_ENV):
        die_with_parent(int(os.environ[PARENT_PID_ENV]))
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    log.info("worker start: pid %d, task %s, TF_USE_LEGACY_KERAS=%s", os.getpid(), task,
             os.environ.get("TF_USE_LEGACY_KERAS"))
    try:
        run(args.spec)
    except BaseException as err:  # noqa: BLE001  (report every failure the same way, then exit non-zero)
        traceback.print_exc(file=sys.stdout)
        message = " ".join(str(err).split()) or "(no message)"
        print(f"{ERROR_MARKER} {type(err).__name__}: {message[:500]}", flush=True)
        return 1
    log.info("worker done")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: TensorFlow's collective/gRPC threads can keep a finished MultiWorkerMirroredStrategy
    # worker alive at interpreter shutdown; the work is done and flushed, so leave now.
    os._exit(code)
