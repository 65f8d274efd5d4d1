"""Heap memory a component freed, given back to the system: the local runner calls `trim` after each component.

Every component of a local run but the data checks executes in the run's own process
(pipeline/concurrent_runner.py; the data checks' process ends after them), and glibc keeps
what Python and Beam free on its heap rather than returning it: after CsvExampleGen on 1M rows the process
held 1.52 GiB, 0.72 GiB after `malloc_trim(0)` (`python` running the ExampleGen executor alone, 2026-12-06).
That held memory adds to the peak of everything after it, e.g. the Evaluator's worker processes. glibc's
`malloc_trim` returns the free pages at the top and inside the heap; elsewhere (musl, macOS) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

_libc: Optional[ctypes.CDLL] = None


def trim() -> bool:
    """glibc's malloc_trim(0): True when it gave memory back, False when it had none to give or there is no glibc."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return False
    trim_fn = getattr(_libc, "malloc_trim", None)
    return bool(trim_fn(0)) if trim_fn is not None else False

