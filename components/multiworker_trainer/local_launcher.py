"""Runs N trainer workers as local processes on 127.0.0.1 and supervises them to the end.

Each worker gets its own `TF_CONFIG` (a cluster of N workers on free loopback ports; worker 0 is
MultiWorkerMirroredStrategy's chief), `TF_USE_LEGACY_KERAS=1`, its own process group and its own
log file. The launcher returns when all exit 0. When one fails, or the deadline passes, it stops
every worker (SIGTERM to the group, then SIGKILL) and raises with the cause from that worker's
log: a surviving MultiWorkerMirroredStrategy worker would otherwise wait forever in a collective.
Workers are stopped on every way out of `run`, including KeyboardInterrupt and SIGTERM, and
kill themselves if this process dies (see trainer_module.child_processes): no orphans.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from components.multiworker_trainer import cancellation
from components.multiworker_trainer import worker as worker_module
from components.multiworker_trainer.cancellation import TrainingCancelled  # noqa: F401  (re-export)

HOST = "127.0.0.1"
WORKER_MODULE = "components.multiworker_trainer.worker"
LOG_TAIL_LINES = 12

log = logging.getLogger(__name__)


class WorkerFailedError(RuntimeError):
    """A trainer worker failed (or hung); the message names it, its cause and its log."""

    def __init__(self, message: str, worker_index: Optional[int] = None, log_path: Optional[Path] = None):
        super().__init__(message)
        self.worker_index = worker_index
        self.log_path = log_path


class WorkersTimedOutError(WorkerFailedError):
    """The workers did not all finish before the deadline."""


@dataclasses.dataclass
class WorkerResult:
    index: int
    pid: int
    seconds: float
    log_path: Path


def free_ports(count: int, host: str = HOST) -> List[int]:
    """`count` distinct free TCP ports (all held open together, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def tf_config(ports: Sequence[int], index: int, host: str = HOST) -> Dict:
    """The TF_CONFIG of worker `index` in a workers-only cluster (worker 0 acts as chief)."""
    return {"cluster": {"worker": [f"{host}:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


def worker_env(config: Dict, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of one worker: the parent's, plus its TF_CONFIG, Keras 2, and the parent's
    import path (so a run_fn importable here, e.g. from a module file's directory, is importable there)."""
    env = dict(os.environ if base is None else base)
    env["TF_CONFIG"] = json.dumps(config)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env[worker_module.PARENT_PID_ENV] = str(os.getpid())
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 65536) -> List[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def error_line(path: Path) -> Optional[str]:
    """The worker's own one-line summary of its failure, if it got to write one."""
    for line in reversed(log_tail(path, lines=400)):
        if line.startswith(worker_module.ERROR_MARKER):
            return line[len(worker_module.ERROR_MARKER):].strip()
    return None


class _Worker:
    def __init__(self, index: int, process: subprocess.Popen, log_path: Path, log_file):
        self.index, self.process, self.log_path, self.log_file = index, process, log_path, log_file
        self.started = time.monotonic()
        self.finished: Optional[float] = None

    def poll(self) -> Optional[int]:
        code = self.process.poll()
        if code is not None and self.finished is None:
            self.finished = time.monotonic()
        return code


def _exit_cause(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class LocalLauncher:
    """Starts and supervises one multi-worker training; see the module docstring."""

    def __init__(self, num_workers: int, log_dir: Path, timeout_s: float, *, poll_interval_s: float = 0.2,
                 stop_grace_s: float = 5.0, python: str = sys.executable):
        if num_workers < 1:
            raise ValueError(f"number of trainer workers must be at least 1, not {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"trainer worker timeout must be positive, not {timeout_s}")
        self.num_workers = num_workers
        self.log_dir = Path(log_dir)
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.stop_grace_s = stop_grace_s
        self.python = python
        self._workers: List[_Worker] = []

    def log_path(self, index: int) -> Path:
        return self.log_dir / f"trainer-worker-{index}.log"

    def command(self, spec_path: str) -> List[str]:
        return [self.python, "-m", WORKER_MODULE, "--spec", spec_path]

    def run(self, spec_path: str) -> List[WorkerResult]:
        """Trains to the end or raises WorkerFailedError / WorkersTimedOutError / cancellation.TrainingCancelled."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with cancellation.sigterm_raises("stopped its local workers"):
            try:
                self._start(spec_path)
                self._supervise()
            finally:
                self._stop_all()
        return [WorkerResult(w.index, w.process.pid, (w.finished or time.monotonic()) - w.started, w.log_path)
                for w in self._workers]

    def _start(self, spec_path: str) -> None:
        ports = free_ports(self.num_workers)
        for index in range(self.num_workers):
            path = self.log_path(index)
            log_file = open(path, "wb")  # noqa: SIM115  (closed in _stop_all)
            process = subprocess.Popen(self.command(spec_path), env=worker_env(tf_config(ports, index)),
                                       stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # own process group: stopped as a whole
            self._workers.append(_Worker(index, process, path, log_file))
            log.info("trainer worker %d/%d: pid %d, port %d, log %s", index, self.num_workers, process.pid,
                     ports[index], path)

    def _supervise(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            codes = [w.poll() for w in self._workers]
            failed = [w for w, code in zip(self._workers, codes) if code not in (None, 0)]
            if failed:
                # A killed worker is the cause; its peers then fail on broken collectives.
                first = min(failed, key=lambda w: (w.process.returncode >= 0, w.finished, w.index))
                raise self._failure(first)
            if all(code == 0 for code in codes):
                return
            if time.monotonic() > deadline:
                raise self._timeout([w for w, code in zip(self._workers, codes) if code is None])
            time.sleep(self.poll_interval_s)

    def _failure(self, worker: _Worker) -> WorkerFailedError:
        exit_cause = _exit_cause(worker.process.returncode)
        own_error = error_line(worker.log_path)
        cause = f"{own_error} ({exit_cause})" if own_error else exit_cause
        tail = "\n".join("    " + line for line in log_tail(worker.log_path))
        return WorkerFailedError(
            f"trainer worker {worker.index} of {self.num_workers} failed: {cause}; "
            f"stopped the other workers; full log: {worker.log_path}"
            + (f"\n  last lines of its log:\n{tail}" if tail else ""),
            worker.index, worker.log_path)

    def _timeout(self, running: List[_Worker]) -> WorkersTimedOutError:
        first = running[0]
        tail = "\n".join("    " + line for line in log_tail(first.log_path))
        names = ", ".join(str(w.index) for w in running)
        return WorkersTimedOutError(
            f"trainer workers did not finish within {self.timeout_s:g} s (still running: worker {names}); "
            f"stopped them; raise worker_timeout_s if training is just slow; log of worker {first.index}: "
            f"{first.log_path}" + (f"\n  last lines of its log:\n{tail}" if tail else ""),
            first.index, first.log_path)

    def _stop_all(self) -> None:
        """SIGTERM to every live worker's process group, SIGKILL after the grace period, then reap."""
        live = [w for w in self._workers if w.poll() is None]
        for w in live:
            _signal_group(w.process.pid, signal.SIGTERM)
        end = time.monotonic() + self.stop_grace_s
        while any(w.poll() is None for w in live) and time.monotonic() < end:
            time.sleep(0.05)
        for w in self._workers:
            if w in live:  # the group still exists (its leader was alive): kill whatever is left of it
                _signal_group(w.process.pid, signal.SIGKILL)
            w.process.wait()
            w.poll()
            w.log_file.close()
        if live:
            log.info("stopped trainer workers %s", [w.index for w in live])


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
