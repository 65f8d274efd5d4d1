"""SIGTERM as an exception, so launchers' `finally` clauses stop workers / delete TFJobs.

Orchestrators (the local runner's caller, Kubeflow when a run is terminated) stop a step with
SIGTERM; Python's default would end the process without unwinding, leaving workers or a TFJob
behind.
"""
from __future__ import annotations

import contextlib
import signal
import threading


class TrainingCancelled(RuntimeError):
    """The trainer was asked to stop while its workers ran; they were stopped."""


@contextlib.contextmanager
def sigterm_raises(what: str):
    """Within the block, SIGTERM raises TrainingCancelled (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TrainingCancelled(f"the trainer was asked to stop (SIGTERM); {what}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
