"""`taxi-pipeline`: one console script, one subcommand per job.

Each subcommand lives in the module that does the work; that module provides
`add_arguments(parser)` and `main(args) -> int`. This file only dispatches and is the one place
errors become messages and exit codes: the libraries' bad-input errors (`BAD_INPUT_ERRORS`) are
exit 2 with their one line; `pipeline.errors.ComponentFailed` (a component crashed) and anything
unexpected are exit 1, with the trace in a log file under `<home>/logs/`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

import pipeline  # noqa: F401  (pins TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from pipeline.errors import ComponentFailed, UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# command -> (module that implements it, one-line help)
COMMANDS = {
    "run": ("pipeline.local_runner", "run the pipeline locally on Apache Beam"),
    "serve": ("pipeline.serve_cli", "serve models over gRPC and REST (TF Serving's flags)"),
    "predict": ("pipeline.predict_cli", "query a model server over gRPC with rows from a CSV or JSON file"),
    "compile": ("pipeline.kubeflow_runner", "write the Kubeflow Pipelines spec (KubeflowV2DagRunner)"),
    "submit": ("pipeline.submit_cli", "submit the compiled spec to a Kubeflow Pipelines endpoint"),
    "kubeflow-manifests": ("pipeline.kubeflow_manifests",
                           "write the volume, model server, RBAC and kfp-launcher ConfigMap for one namespace"),
    "status": ("pipeline.status", "last runs from ML Metadata: components, metrics, blessing, pushed version"),
    "report": ("pipeline.report", "a self-contained HTML report with plots of the last run"),
    "make-spans": ("pipeline.make_spans", "split one CSV into dated span folders by a timestamp column (for run --data)"),
    "skew": ("pipeline.skew", "compare logged serving requests with the training statistics of the model that served them"),
    "rollback": ("pipeline.rollback", "serve the previous (or --to) pushed version again, and record it in ML Metadata"),
    "score": ("pipeline.score", "score a CSV file or folder with the served model (TFX's BulkInferrer): predictions as CSV or Parquet"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taxi-pipeline", description="A TFX pipeline from CSV files to a model served over gRPC."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(_main=module.main)
    return parser


def bad_input_errors() -> tuple:
    """The libraries' own errors that mean the user's input is wrong (exit 2): each layer has its own."""
    from components.errors import BadDataError
    from kubeflow.errors import KubeflowError
    from serving.util.errors import ServerConfigError

    return (UserError, ServerConfigError, KubeflowError, BadDataError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except bad_input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ComponentFailed as err:  # a bug or an environment failure inside a component: ours
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # unexpected: one line here, the trace in a log file
        log = _write_trace(getattr(args, "home", None))
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(err).__name__}: {first} (trace: {log})", file=sys.stderr)
        return 1


def _write_trace(home) -> str:
    """The current exception's full trace, in `<home>/logs/` (a temp file if that is not writable)."""
    import tempfile
    import time
    import traceback
    from pathlib import Path

    from pipeline.configs import default_home

    text = traceback.format_exc()
    try:
        folder = Path(home or default_home()) / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}.log"
        path.write_text(text)
    except OSError:
        with tempfile.NamedTemporaryFile("w", suffix=".log", prefix="taxi-pipeline-error-", delete=False) as f:
            f.write(text)
            path = f.name
    return str(path)


def console_main() -> None:
    """The `taxi-pipeline` program: `main`, then an exit that skips the interpreter's last garbage collection.

    A run leaves millions of objects (TensorFlow, TFX, Beam, TFMA) for that collection to walk: it took about 1 s
    of every run's wall time (0.9-1.0 s after `main` returned, a cached `run` on the default data, 2026-12-07).
    `gc.freeze()` moves them out of the collector's sight; atexit handlers, file flushes and finalizers of
    objects freed by reference counting all still run. Tests call `main`, which does not freeze.
    """
    import gc

    code = main()
    sys.stdout.flush()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
