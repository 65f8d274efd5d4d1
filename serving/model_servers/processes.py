"""Several stand-in server processes on one gRPC port (`--grpc_processes N`).

One Python process runs Python code on one core at a time (the GIL), and a request's gRPC
handling is Python code: past some rate one process is the bottleneck however many cores the
machine has. With `--grpc_processes N` the first process starts N-1 more, each a whole server
(its own manager loading the same models and polling the same directories, its own batching)
listening on the same port with SO_REUSEPORT, and the kernel spreads the connections among them.
REST stays on the first process only. Each process loads each version itself, so a new version
becomes AVAILABLE in each process on its own poll (within `--file_system_poll_wait_seconds` of
each other), and HandleReloadConfigRequest reaches only the process whose connection carries it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import List, Sequence

log = logging.getLogger("serving")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_children(count: int, argv: Sequence[str], port: int) -> List[subprocess.Popen]:
    """`count` more server processes with `argv` (the parent's flags) on `port`."""
    children = []
    for _ in range(count):
        cmd = [sys.executable, "-m", "serving.model_servers.main", *argv, f"--port={port}"]
        children.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=dict(os.environ),
                                         preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None))
    log.info("started %d more server processes on gRPC port %d (pids %s)", count, port,
             ", ".join(str(c.pid) for c in children))
    return children


def ask_children_to_stop(children: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to each child still running: each stops as the first process does, side by side with it."""
    for child in children:
        if child.poll() is None:
            child.terminate()


def stop_children(children: Sequence[subprocess.Popen], timeout_s: float = 20.0) -> None:
    """Each child asked to stop and waited for, all within `timeout_s`; one still running then is killed."""
    ask_children_to_stop(children)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
