"""Server-side batching with TF Serving's batching parameters, without a thread of its own.

TF Serving merges concurrent requests into one Session run (`--enable_batching`): fewer, larger runs
amortise the per-run cost, which is what lets many clients get more throughput than one. Here the
request threads themselves execute batches (leader/follower): a thread that finds no executor busy
takes the queued tasks (waiting up to `batch_timeout_micros` for the batch to fill), runs them as
one batch and hands each task its slice of the outputs; the others wait. So a lone request runs
at once on its own thread (no hand-off latency), while under load requests coalesce.

Parameters follow `BatchingParameters` (tensorflow_serving/servables/tensorflow/
session_bundle_config.proto), parsed from the same text proto `--batching_parameters_file` takes.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from serving.util.errors import ServingError, internal_error, invalid_argument, unavailable


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's defaults (BasicBatchScheduler::Options) unless a parameters file says otherwise."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    allowed_batch_sizes: Tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching parameter {name} must be at least 1, not {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batching parameter batch_timeout_micros must be >= 0, not {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size:
                raise ValueError("allowed_batch_sizes must increase strictly and end with max_batch_size "
                                 f"({self.max_batch_size}), not {list(sizes)}")


def parse_batching_parameters(text: str) -> BatchingOptions:
    """Parse a `--batching_parameters_file` text proto; ValueError with a readable line if it is wrong."""
    from serving.config.extra_protos import batching_parameters_class, parse_text

    params = parse_text(text, batching_parameters_class()(), "batching parameters file")
    if params.pad_variable_length_inputs:
        raise ValueError("pad_variable_length_inputs is not supported by the stand-in server; remove it")
    if params.HasField("enable_large_batch_splitting") and params.enable_large_batch_splitting.value:
        raise ValueError("enable_large_batch_splitting is not supported by the stand-in server; remove it")
    defaults = BatchingOptions()
    kwargs = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if params.HasField(name):
            kwargs[name] = int(getattr(params, name).value)
    kwargs["allowed_batch_sizes"] = tuple(int(s) for s in params.allowed_batch_sizes)
    return dataclasses.replace(defaults, **kwargs)


class _Task:
    __slots__ = ("inputs", "size", "enqueued", "outputs", "error", "done", "lead", "wake")

    def __init__(self, inputs, size, wake: bool = True):
        self.inputs = inputs
        self.size = size
        self.enqueued = time.monotonic()
        self.outputs = None
        self.error = None
        self.done = False
        self.lead = False  # woken to execute the next batch rather than with a result
        self.wake = threading.Event() if wake else None  # the asyncio front end waits on a future instead


class _BatchQueue:
    """Tasks for one (signature, input keys, output keys): only those can share a Session run.

    Leader/follower without a shared condition: each waiting request sleeps on its own event and
    is woken exactly once, either with its result or to lead the next batch, so a batch of 16
    costs 16 targeted wake-ups instead of 16 threads re-checking a shared state on every change.
    """

    def __init__(self, options: BatchingOptions, run_fn):
        self._options = options
        self._run_fn = run_fn  # dict of batched inputs -> dict of batched outputs
        self._lock = threading.Lock()
        self._arrival = threading.Event()  # a leader waiting for its batch to fill watches this
        self._tasks = collections.deque()
        self._queued_size = 0
        self._executors = 0

    def submit(self, inputs: Mapping[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
        o = self._options
        task = _Task(inputs, size)
        with self._lock:
            if math.ceil((self._queued_size + size) / o.max_batch_size) > o.max_enqueued_batches:
                raise unavailable("The batch scheduling queue to which this task was submitted is full")
            self._tasks.append(task)
            self._queued_size += size
            lead = self._executors < o.num_batch_threads
            if lead:
                self._executors += 1
        self._arrival.set()
        while True:
            if lead:
                self._lead()
            if task.done:
                break
            task.wake.wait()
            task.wake.clear()
            lead, task.lead = task.lead, False
        if task.error is not None:
            raise task.error
        return task.outputs

    def _lead(self) -> None:
        """Run one batch from the head of the queue, then pass leadership on (or give it up)."""
        o = self._options
        if o.batch_timeout_micros > 0:
            with self._lock:
                deadline = self._tasks[0].enqueued + o.batch_timeout_micros / 1e6 if self._tasks else 0
            while True:
                with self._lock:
                    if not self._tasks or self._queued_size >= o.max_batch_size:
                        break
                    self._arrival.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrival.wait(remaining)
        batch, size = [], 0
        with self._lock:
            while self._tasks and size + self._tasks[0].size <= o.max_batch_size:
                task = self._tasks.popleft()
                batch.append(task)
                size += task.size
                self._queued_size -= task.size
        if batch:
            self._run_batch(batch, size)
        with self._lock:
            successor = self._tasks[0] if self._tasks else None
            if successor is None:
                self._executors -= 1
            else:
                successor.lead = True
        for task in batch:
            task.wake.set()
        if successor is not None:
            successor.wake.set()

    def _run_batch(self, batch, size) -> None:
        try:
            if len(batch) == 1 and not self._options.allowed_batch_sizes:
                batch[0].outputs = self._run_fn(batch[0].inputs)
            else:
                self._run_merged(batch, size)
        except (ServingError, ValueError) as err:
            # ValueError: the tasks' non-batch dimensions differ (variable-length inputs) and cannot
            # be concatenated. Either way, each task runs alone: one bad request (e.g. an
            # unparsable tf.Example) must not fail its neighbours.
            if len(batch) == 1:
                batch[0].error = err if isinstance(err, ServingError) else internal_error(err, "batch run")
            else:
                for task in batch:
                    self._run_batch([task], task.size)
                return
        except Exception as err:  # pragma: no cover - defensive: never leave a waiter hanging
            error = internal_error(err, "batch run")  # the trace goes to the log, not to the clients
            for task in batch:
                task.error = error
        for task in batch:
            task.done = True

    def _run_merged(self, batch, size) -> None:
        padded = self._padded_size(size)
        merged = {}
        for key in batch[0].inputs:
            parts = [t.inputs[key] for t in batch]
            if padded > size:  # TF Serving pads with copies of the first row
                parts.append(np.repeat(parts[0][:1], padded - size, axis=0))
            merged[key] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        outputs = self._run_fn(merged)
        for key, value in outputs.items():
            if np.ndim(value) == 0 or value.shape[0] != padded:
                raise invalid_argument(f"batched output '{key}' does not have the batch size {padded} in its 0th "
                                       "dimension; this signature cannot be batched")
        start = 0
        for task in batch:
            task.outputs = {k: v[start:start + task.size] for k, v in outputs.items()}
            start += task.size

    def _padded_size(self, size: int) -> int:
        for allowed in self._options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


class ServableBatcher:
    """The batch queues of one loaded servable (one per signature/input/output combination)."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self._queues: Dict[tuple, _BatchQueue] = {}
        self._lock = threading.Lock()

    def run(self, servable, sig, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str]):
        size = self.task_size(inputs)
        if size == 0:
            return servable.run_direct(sig, inputs, output_keys)
        return self.queue(servable, sig, inputs, output_keys).submit(inputs, size)

    def task_size(self, inputs: Mapping[str, np.ndarray]) -> int:
        """The task's batch size, checked as batching_util.h ComputeTensorBatchSize checks it
        (TF Serving's words); 0: nothing to batch, run directly."""
        if any(np.ndim(v) == 0 for v in inputs.values()):
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes = {np.shape(v)[0] for v in inputs.values()}
        if len(sizes) != 1:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop()
        if size > self.options.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size "
                                   f"{self.options.max_batch_size}")
        return size

    def queue(self, servable, sig, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str]) -> "_BatchQueue":
        """The queue of the tasks that can share a Session run with these (signature, inputs, outputs)."""
        key = (sig.name, tuple(sorted(inputs)), tuple(output_keys))
        queue = self._queues.get(key)
        if queue is None:
            with self._lock:
                queue = self._queues.get(key)
                if queue is None:
                    queue = _BatchQueue(self.options,
                                        lambda batched, s=sig, k=tuple(output_keys): servable.run_direct(s, batched, k))
                    self._queues[key] = queue
        return queue

    def stop(self) -> None:
        self._queues.clear()
