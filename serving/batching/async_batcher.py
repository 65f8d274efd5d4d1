"""Server-side batching for the asyncio gRPC front end (`--grpc_aio`): the same batches, fewer threads.

The thread-per-request front end batches with leader/follower threads (`batcher._BatchQueue`):
every waiting request is a parked thread, and every batch costs a wake-up per request. On the
event loop a waiting request is a future: tasks queue on the loop thread, and a batch runs (on the
loop, see INLINE_MAX_SIZE) once the loop has no other callback due, i.e. once it has received and
decoded the requests it has in hand (at most MAX_WAIT_S later); the batch's end
resolves its futures. So under load one Session run serves many requests without any thread
hand-off, and an idle server runs a lone request at once.

Batches are formed, padded, split and checked by the thread front end's own code
(`_BatchQueue._run_batch`), so the two front ends answer identically (errors included). Parameters
are TF Serving's BatchingParameters (max_batch_size, batch_timeout_micros, max_enqueued_batches,
num_batch_threads, allowed_batch_sizes). Everything here runs on the event loop's thread except
the batch itself.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import math
import time
from concurrent import futures
from typing import Dict, Mapping, Sequence

import numpy as np

from serving.batching.batcher import ServableBatcher, _BatchQueue, _Task
from serving.util.errors import internal_error, unavailable

# Batches up to this size run on the loop thread when no other batch is running; larger ones go
# to a worker so the loop keeps decoding while the model runs. Measured in bench/serving_latency on
# the shared 2-CPU machine, handing batches off lost: 16 clients got ~1100 req/s with hand-off above
# 4 requests against ~1400 with every batch on the loop (the loop's per-request gRPC work, not the
# run, is the bottleneck, and the hand-off adds GIL traffic), and a lone request's p50 was ~1.0 ms
# handed off against ~0.8 ms on the loop. So by default every batch runs on the loop.
INLINE_MAX_SIZE = 1 << 30
# A pending batch waits, at most this long, while other callbacks are due on the loop or (below) while
# it holds fewer requests than recent batches held (see _pump); each wait is one loop iteration, in
# which the loop also takes whatever arrived. Without waiting, batches averaged 1.1 requests (each
# request reaches the handler in its own loop iteration) and the server spent ~590 us CPU per request.
# The cap was 64 iterations (~0.2-0.3 ms) while Python's 5 ms GIL switch interval delayed arrivals
# anyway; with the server's 1 ms interval (model_servers/main.py) the requests of the clients just
# answered arrive within the wait, and a longer one lets the batch take them. Measured with the
# pipeline's pushed model, 16 clients, batching, servers side by side (ad hoc probe of
# bench/serving_latency's servers, 8 rounds of 3 s, 2026-12-02), rate against the do-nothing server:
# 64 iterations 0.616 / 0.650, 256 0.802, 1,024 (~3 ms) 0.879 / 0.906, 4,096 0.734; capped by time:
# 1 ms 0.729, 2 ms 0.891, 4 ms 0.825; server CPU per request 394-400 us at 64 iterations, 295 us at
# 2 ms. The wait is a busy one (the loop polls its sockets each iteration, so it costs the loop thread's
# CPU, not latency for what arrives), and only under load: a lone client's batches run at once.
# TF Serving's batch thread likewise takes a batch when it has finished the previous one.
MAX_WAIT_S = 0.002
# While the loop has nothing else due, a pending batch also waits (up to MAX_WAIT_S) until it holds
# as many requests as batches have lately held: an exponential moving average of batch sizes with this
# weight. Under load the loop often has nothing due while clients are still sending their next
# requests, so a batch ran with 1 of 16 clients' requests and kept the average at 1. Measured with
# the pipeline's pushed taxi model, 16 clients, batching as bench/serving_latency sets it
# (`python -m bench.serving_latency --home HOME`, HOME a pipeline run's home), servers side by side,
# 4 rotating rounds (64-iteration cap): 1,480 req/s without this wait, 1,700 waiting for the last
# batch's size, 2,150 with weight 0.3, 2,310 with 0.1 (0.03 and 0.3 against 0.1 again on 2026-12-02:
# within the noise). A lone client's batches hold 1, so it never waits; after a burst the average
# falls below 1.5 within ~13 batches.
EXPECTED_WEIGHT = 0.1


class AsyncBatchQueue:
    """The loop-side queue in front of one `_BatchQueue` (one signature/inputs/outputs combination)."""

    def __init__(self, queue: _BatchQueue, loop: asyncio.AbstractEventLoop, executor: futures.Executor):
        self._queue = queue
        self._options = queue._options  # pylint: disable=protected-access
        self._loop = loop
        self._executor = executor
        self._pending = collections.deque()  # (task, future)
        self._queued_size = 0
        self._in_flight = 0
        self._timer = None
        self._scheduled = False
        self._deferred = 0
        self._expected = 1.0  # recent batches' size (EXPECTED_WEIGHT): what the next one waits for
        self._waiting_since = 0.0  # when the pending batch first waited (MAX_WAIT_S)

    async def submit(self, inputs: Mapping[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
        o = self._options
        if math.ceil((self._queued_size + size) / o.max_batch_size) > o.max_enqueued_batches:
            raise unavailable("The batch scheduling queue to which this task was submitted is full")
        task = _Task(inputs, size, wake=False)
        waiter = self._loop.create_future()
        self._pending.append((task, waiter))
        self._queued_size += size
        if not self._scheduled:  # after the handlers ready in this loop iteration have queued theirs
            self._scheduled = True
            self._loop.call_soon(self._pump)
        await waiter
        if task.error is not None:
            raise task.error
        return task.outputs

    def _pump(self) -> None:
        o = self._options
        ready = getattr(self._loop, "_ready", None)  # asyncio's queue of callbacks due this iteration
        if (self._pending and self._queued_size < o.max_batch_size and self._in_flight < o.num_batch_threads
                and (ready or self._queued_size + 0.5 < self._expected)):
            # Other callbacks are due (requests being received, decoded, answered): they may queue
            # more tasks; or recent batches were bigger than this one is yet: their clients are
            # sending their next requests. Run the batch after them, so under load a batch takes
            # every request the loop has in hand; an idle loop with a lone client runs it at once.
            now = time.monotonic()
            if self._deferred == 0:
                self._waiting_since = now
            if now - self._waiting_since < MAX_WAIT_S:
                self._deferred += 1
                self._loop.call_soon(self._pump)
                return
        self._deferred = 0
        self._scheduled = False
        while self._in_flight < o.num_batch_threads and self._pending:
            if o.batch_timeout_micros > 0 and self._queued_size < o.max_batch_size:
                wait = self._pending[0][0].enqueued + o.batch_timeout_micros / 1e6 - time.monotonic()
                if wait > 0:  # let the batch fill until its head's deadline
                    if self._timer is None:
                        self._timer = self._loop.call_later(wait, self._on_timer)
                    return
            batch, size = [], 0
            while self._pending and size + self._pending[0][0].size <= o.max_batch_size:
                entry = self._pending.popleft()
                batch.append(entry)
                size += entry[0].size
                self._queued_size -= entry[0].size
            self._expected += EXPECTED_WEIGHT * (size - self._expected)
            if size <= INLINE_MAX_SIZE and self._in_flight == 0:
                # Small batch, nothing running: run it here. A hand-off would cost more than the
                # run, and the loop's time per request (the gRPC transport's) is the bottleneck.
                self._queue._run_batch([t for t, _ in batch], size)  # pylint: disable=protected-access
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)
                continue
            self._in_flight += 1
            done = self._loop.run_in_executor(self._executor, self._queue._run_batch,  # pylint: disable=protected-access
                                              [t for t, _ in batch], size)
            done.add_done_callback(functools.partial(self._finished, batch))

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _finished(self, batch, done: asyncio.Future) -> None:
        self._in_flight -= 1
        error = None
        if done.cancelled() or done.exception() is not None:  # pragma: no cover - _run_batch catches all
            error = internal_error(done.exception() or RuntimeError("batch cancelled"), "batch run")
        for task, waiter in batch:
            if error is not None and task.outputs is None and task.error is None:
                task.error = error
            if not waiter.done():
                waiter.set_result(None)
        self._pump()


async def run_batched(batcher: ServableBatcher, servable, sig, inputs: Mapping[str, np.ndarray],
                      output_keys: Sequence[str], executor: futures.Executor) -> Dict[str, np.ndarray]:
    """`servable.run` for a batched signature, awaited on the running loop."""
    size = batcher.task_size(inputs)
    if size == 0:
        return servable.run_direct(sig, inputs, output_keys)
    queue = batcher.queue(servable, sig, inputs, output_keys)
    front = getattr(queue, "async_front", None)
    if front is None:  # created on the loop thread only: no lock needed
        front = queue.async_front = AsyncBatchQueue(queue, asyncio.get_running_loop(), executor)
    return await front.submit(inputs, size)
