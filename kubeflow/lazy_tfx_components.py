"""Import `tfx.components.<one>.…` without `tfx/components/__init__.py` importing every TFX component.

TFX's package `__init__` imports all sixteen components with their executors, so the first import
of any module under it (the Trainer's FnArgs helpers, one component class) also loads what this
project never runs: InfraValidator's Kubernetes and Docker clients with `jsonschema`, the Tuner's
`keras_tuner`, BulkInferrer, DistributionValidator, ExampleDiff. Imports up to a built pipeline
(`from pipeline import configs, local_runner`, the local DAG runner, `create_pipeline(...)`), three
interleaved pairs on a quiet machine: 7.03 / 7.38 / 7.01 s with the package `__init__`, 4.64 /
5.02 / 4.67 s without it; a trainer worker's imports 11.8-12.9 s -> 8.0-8.9 s (bench/RESULTS.md,
2026-12-02 (a)). Every process that runs TFX code defers it first: `components/__init__.py` (the local
runs, trainer workers) and `kubeflow/entrypoint.py` (each Kubeflow step, whose TFX entry point
imports the Evaluator's executor and, through the package, every other component).

`defer()` registers the package as an empty module whose attribute lookups (PEP 562 `__getattr__`)
run TFX's real `__init__` on first use, so `from tfx.components import Trainer`, `tfx.v1` and
TFX's own tests keep working; only importing a submodule by its full path skips it.
`importlib.util.LazyLoader` cannot do this: importing a submodule reads the package's `__path__`,
which makes a lazy module load in full.
"""
from __future__ import annotations

import importlib.util
import sys
import threading

PACKAGE = "tfx.components"
_lock = threading.Lock()


def defer() -> None:
    """Make `tfx.components` load its `__init__` only when one of its names is asked for. Idempotent;
    does nothing if the package is already imported or TFX is not installed."""
    if PACKAGE in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(PACKAGE)  # imports the `tfx` package (its version only), not this one
    except ModuleNotFoundError:  # no TFX at all
        return
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    loaded = False

    def __getattr__(name: str):
        nonlocal loaded
        if name.startswith("__"):  # __path__, __file__ … are set; others (e.g. __wrapped__) do not exist
            raise AttributeError(name)
        with _lock:
            if not loaded:
                loaded = True
                del module.__getattr__  # from here on, the real module's own attributes
                spec.loader.exec_module(module)
        return getattr(module, name)

    module.__getattr__ = __getattr__
    sys.modules[PACKAGE] = module
    parent, _, child = PACKAGE.rpartition(".")
    setattr(sys.modules[parent], child, module)  # as the import system binds a package it loads: tfx.components
