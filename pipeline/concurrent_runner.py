"""Runs a TFX pipeline on this machine as TFX's LocalDagRunner does, with the checks of the data beside the model.

LocalDagRunner launches one node at a time in topological order (its loop carries "TODO(b/171319478): ...
multi-threaded execution so that independent components can be run in parallel"). This runner launches each
node exactly as that loop does (`kubeflow.tfx_internals.launch_node`: the node's driver, executor, publisher
and MLMD's cache), in two lanes at once:

- this process runs every node but the `beside` ones, in topological order (ExampleGen, Transform, the
  Trainer, the Evaluator, the Pusher ...);
- a second process runs the `beside` nodes, in the same order (`pipeline.pipeline.nodes_beside`: StatisticsGen,
  ExampleValidator and the gates; and the ServingValidator while the Evaluator runs here, when the Evaluator
  has no Beam workers of its own). It is spawned when the run starts, so that its imports (TensorFlow, TFX,
  the `preload` modules) overlap what this process does first, and it ends after its last node.

Why the data checks and not Transform beside: on the default data (`taxi-pipeline run`, fresh home, two
alternated pairs, 2026-12-07) the run took 37.8 and 38.2 s with the checks beside, 39.4 and 39.7 s with
Transform beside (its process importing what the pipeline's module imports, 1,254 modules, TFMA's and
scikit-learn's among them, would otherwise be imported during Transform).

A node starts once every node it runs after is finished, in either lane. Both lanes write the run's ML
Metadata and the run's log file. Two SQLite writers are what MLMD provides for: its SQLite source waits for the
other writer (`ml_metadata/metadata_store/sqlite_metadata_source.cc`, busy handler `WaitThenRetry`: 10 waits of
100-300 ms; read at google/ml-metadata commit 0164404), and its Python client retries a call aborted by "database
is locked" (ml-metadata 1.16.0, `metadata_store.py` `MetadataStore._call`: 5 attempts, random waits averaging 2 s).

Why a process and not a thread: the Beam components' per-row work is Python that holds the GIL, so two of them
in one process take turns on one core.

When a node fails, the nodes after it never start, and the nodes that do not depend on it still run, as in a
Kubeflow DAG: so a check still names bad data that made Transform fail beside it. The run is then reported by
the check's refusal (`BadDataError`) before any other failure.
"""
from __future__ import annotations

import functools
import importlib
import logging
import multiprocessing
import os
import threading
import traceback
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Set, Tuple

# What the launcher logs when MLMD's cache gives a node's outputs (tfx/orchestration/portable/launcher.py,
# v1.16.0 line 428); the local run's progress marks such a node "cached".
CACHED_PREFIX = "A cached execution"


class NodeFailed(Exception):
    """A node of the pipeline failed; the cause is its error (`__cause__`)."""

    def __init__(self, node: str):
        super().__init__(f"{node} failed")
        self.node = node


class SideNodeError(RuntimeError):
    """A node in the second process failed with an error that is not the data's: its type and message (the
    trace is in the run's log)."""


def run(build: Callable[[], object], beside: Collection[str] = (), log_file: Optional[Path] = None,
        preload: Collection[str] = ()) -> None:
    """Run every node of the TFX Pipeline `build()` returns, the `beside` ones in a second process.

    The second process starts before `build` is called: its imports overlap the building of the pipeline.
    Raises NodeFailed (its cause: the node's error) for the failure the run is reported by, the data's first.
    """
    from kubeflow import tfx_internals

    side_lane = _SideLane(log_file, preload) if beside else None
    try:
        ir = tfx_internals.local_pipeline_ir(build())
    except BaseException:
        if side_lane is not None:
            side_lane.close()
        raise
    upstream = tfx_internals.upstream_nodes(ir)
    order = list(upstream)
    board = _Board(upstream)
    if side_lane is not None:
        side_lane.start(ir, [node for node in order if node in beside], board)
    try:
        _run_lane([n for n in order if n not in beside], board, functools.partial(_launch_here, ir))
    except BaseException:
        board.abort()
        raise
    finally:
        if side_lane is not None:
            side_lane.join()
    board.raise_failure()


def _run_lane(nodes: List[str], board: "_Board", launch: Callable[[str], Optional[BaseException]]) -> None:
    """One lane: each node in turn, once its upstream nodes are finished; `launch` runs it and returns its error."""
    from absl import logging as absl_logging

    for node in nodes:
        if not board.wait_until_ready(node):
            board.skip(node)
            continue
        absl_logging.info("Component %s is running.", node)  # LocalDagRunner's lines, which the progress reads
        error = launch(node)
        board.finish(node, error)
        if error is None:
            absl_logging.info("Component %s is finished.", node)


def _launch_here(ir, node: str) -> Optional[BaseException]:
    """Run `node` in this process; its error, or None (reported once the other lane has stopped)."""
    from absl import logging as absl_logging

    from kubeflow import tfx_internals

    try:
        tfx_internals.launch_node(ir, node)
    except Exception as err:  # noqa: BLE001
        absl_logging.exception("%s failed", node)
        return err
    return None


class _Board:
    """Which nodes are finished, failed or skipped; lanes wait on it for a node's upstream nodes."""

    def __init__(self, upstream: Dict[str, List[str]]):
        self.upstream = upstream
        self.changed = threading.Condition()
        self.done: Set[str] = set()
        self.not_done: Set[str] = set()  # failed or skipped: what depends on them never runs
        self.failures: List[tuple] = []  # (node, error) in the order they happened
        self.aborted = False

    def wait_until_ready(self, node: str) -> bool:
        """Wait until `node` can run (True) or never will (False: an upstream node failed or was skipped, or
        the run is stopping)."""
        with self.changed:
            while True:
                if self.aborted or self.not_done.intersection(self.upstream[node]):
                    return False
                if self.done.issuperset(self.upstream[node]):
                    return True
                self.changed.wait()

    def finish(self, node: str, error: Optional[BaseException] = None) -> None:
        with self.changed:
            if error is None:
                self.done.add(node)
            else:
                self.not_done.add(node)
                self.failures.append((node, error))
            self.changed.notify_all()

    def skip(self, node: str) -> None:
        with self.changed:
            self.not_done.add(node)
            self.changed.notify_all()

    def abort(self) -> None:
        """This process is stopping (an interrupt): no lane starts another node."""
        with self.changed:
            self.aborted = True
            self.changed.notify_all()

    def raise_failure(self) -> None:
        """Raise the failure the run is reported by: a refusal of the data first, else the first failure."""
        from components.errors import bad_data_behind

        if not self.failures:
            return
        node, error = next(((n, e) for n, e in self.failures if bad_data_behind(e)), self.failures[0])
        raise NodeFailed(node) from error


class _SideLane:
    """The second process and the thread here that hands it its nodes, one at a time, when they are ready."""

    def __init__(self, log_file: Optional[Path], preload: Collection[str]):
        context = multiprocessing.get_context("spawn")  # this process may hold TensorFlow's threads: no fork
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_side_process, name="pipeline-beside",
                                       args=(child_conn, str(log_file or ""), tuple(preload), os.getpid()))
        self.process.start()
        child_conn.close()
        self.thread = None

    def start(self, ir, nodes: List[str], board: _Board) -> None:
        """Send the process the pipeline, and hand it `nodes` as they become ready."""
        try:
            self.conn.send(ir.SerializeToString())
        except OSError:
            pass  # the process is gone: the first node's launch reports it
        self.thread = threading.Thread(target=self._run, args=(nodes, board), name="side-lane", daemon=True)
        self.thread.start()

    def _run(self, nodes: List[str], board: _Board) -> None:
        try:
            _run_lane(nodes, board, self._launch)
        finally:
            self.close()

    def _launch(self, node: str) -> Optional[BaseException]:
        """Have the second process run `node`; its error, or None."""
        from components.errors import BadDataError

        try:
            self.conn.send(node)
            reply = self.conn.recv()
            if reply[0] == "cached":
                logging.getLogger("absl").info("%s of %s is used.", CACHED_PREFIX, node)
                reply = self.conn.recv()
        except (EOFError, OSError) as err:
            self.process.join(timeout=5)
            return SideNodeError(f"the second process ended (exit code {self.process.exitcode}) "
                                 f"while running {node}: {err or type(err).__name__}")
        if reply[0] == "finished":
            return None
        _, bad_data, kind, message = reply
        return BadDataError(message) if bad_data else SideNodeError(f"{kind}: {message}")

    def close(self) -> None:
        """Tell the process to end, and wait for it (a minute at most, then it is terminated)."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


class _CacheSeen(logging.Handler):
    """In the second process: whether the launcher took the running node's outputs from MLMD's cache."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seen = False

    def emit(self, record):
        if record.getMessage().startswith(CACHED_PREFIX):
            self.seen = True


def _side_process(conn, log_file: str, preload: Tuple[str, ...], parent_pid: int) -> None:
    """The second process: import what its nodes need, receive the pipeline's IR, then run each node it is
    sent, answer ("cached",) when MLMD's cache served it, then ("finished",) or ("failed", bad data?, error
    type, message); end when sent None or when the run's process is gone."""
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow, tfx.components deferred)
    from absl import logging as absl_logging

    from trainer_module.child_processes import die_with_parent

    die_with_parent(parent_pid)  # a run killed with -9 leaves no process writing to its home

    if log_file:  # its logs, and what TensorFlow's C++ and Beam write to fds 1 and 2, go to the run's log
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    root = logging.getLogger()
    handler = logging.StreamHandler()  # fd 2: the log file
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [beside]: %(message)s"))
    cache_seen = _CacheSeen()
    root.handlers = [handler, cache_seen]
    root.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.captureWarnings(True)

    from components.errors import bad_data_behind
    from kubeflow import tfx_internals
    from tfx.proto.orchestration import pipeline_pb2

    for module in ("tfx.orchestration.portable.launcher", *preload):  # while the run's process builds the pipeline
        importlib.import_module(module)

    try:
        ir_bytes = conn.recv()
    except (EOFError, OSError):
        return
    if ir_bytes is None:  # the pipeline was not built
        return
    ir = pipeline_pb2.Pipeline.FromString(ir_bytes)
    # As in the run's process (pipeline/local_runner.py).
    with tfx_internals.beam_steps_patched():
        while True:
            try:
                node = conn.recv()
            except EOFError:
                return
            if node is None:
                return
            cache_seen.seen = False
            try:
                tfx_internals.launch_node(ir, node)
            except Exception as err:  # noqa: BLE001  (the run's process reports it)
                logging.error("%s failed:\n%s", node, traceback.format_exc())
                bad_data = bad_data_behind(err)
                cause = bad_data or err
                conn.send(("failed", bad_data is not None, type(cause).__name__, str(cause)))
                continue
            if cache_seen.seen:
                conn.send(("cached",))
            conn.send(("finished",))
