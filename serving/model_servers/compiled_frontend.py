"""The Python side of the compiled gRPC front end (`--grpc_compiled`; the default once built).

In the grpc.aio front end every request costs the event loop's thread grpc.aio's per-call work
(~22% of that thread under 16 clients) besides the request's own, and that thread caps the rate
(bench/RESULTS.md, 2026-12-02 (e)). Here a C++ process (grpc_frontend/grpc_frontend.cc, gRPC's
generic async API) owns the port and hands each call's method and request bytes over one Unix
socket (frontend_protocol); one dispatch thread here reads whatever has arrived in one go, parses
it, checks what each request declares (serving.util.request_cost: microseconds) and hands the work
on, so no request's model run or decoding holds up the requests of other signatures and models:
- the Predicts read together on a batched signature are one batch (TF Serving's batch thread
  likewise takes what queued while the previous batch ran): no waiting loop, no futures. A batch
  runs in a batch thread, one batch of a queue at a time, queues of other signatures and models
  side by side; what arrives meanwhile is the queue's next batch;
- Predict without batching runs in a worker thread;
- except that a run expected to take under INLINE_RUN_S (1 ms: its signature's recent runs were that
  fast, and it is small) runs right here, as every run did before: a hand-off costs more than that;
- a Predict whose tensors declare more than predict_plan.INLINE_DECODE_BYTES is decoded and run in
  one of two threads of its own, so large requests wait for each other, not the others waiting;
- every other method runs its handler unchanged in a worker thread, as in the other front ends.
Status codes and messages are the other front ends' (the same handlers and plans:
serving.model_servers.predict_plan); anything unexpected leaves as INTERNAL without Python text.
Runs are kept off the dispatch thread because one can be long: a Predict declaring 10,000,000 string
elements costs 0.27 s, which every other client would wait behind.
"""
from __future__ import annotations

import collections
import logging
import weakref
import math
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Dict, List, Optional

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, predict_pb2, regression_pb2)

from serving.batching.batcher import _Task
from serving.core.request_logger import log_request
from serving.model_servers import frontend_protocol as protocol
from serving.model_servers import predict_plan
from serving.servables import handlers
from serving.util import metrics as metrics_lib
from serving.util.errors import UNPARSABLE_MESSAGE, ServingError, internal_error, unavailable

log = logging.getLogger("serving")

BUILT_BINARY = Path(__file__).resolve().parent / "grpc_frontend" / "build" / "grpc_frontend"
BINARY_ENV = "SERVING_GRPC_FRONTEND"  # another build of the front end (a path)
RECV_BYTES = 1 << 20
START_TIMEOUT_S = 30.0
UNPARSABLE = UNPARSABLE_MESSAGE  # bytes that are no request of the method: INTERNAL, as grpcio answers them
HEAVY_THREADS = 2  # threads decoding and running the Predicts over predict_plan.INLINE_DECODE_BYTES
BATCH_THREADS = 8  # threads running batches (one batch per queue at a time)
# A run expected to take less than this runs on the dispatch thread: what it holds the others back is
# bounded by about one fast request's time, and it saves the hand-off to a thread and back. Expected:
# a batch, its size times its queue's recent seconds per request (a moving average, weight RUN_WEIGHT;
# the fixed cost of a run makes it overestimate large batches, the safe side); an unbatched Predict of
# at most INLINE_ALONE_BYTES declared, its signature's recent seconds per run. A signature with no run
# yet counts as slow. Handing every run off cost 0.24 ms of a lone client's 0.78 ms p50 and 19% of 16
# clients' rate (`python -m bench.serving_hostile --rounds 3 --requests 400 --baseline-tree <ed89a9c>`,
# 2026-12-06).
INLINE_RUN_S = 0.001
INLINE_ALONE_BYTES = 64 << 10
RUN_WEIGHT = 0.2

_OTHER_METHODS = {  # method -> (request class, handler, API name in the request metrics or None)
    protocol.CLASSIFY: (classification_pb2.ClassificationRequest, handlers.classify, "Classify"),
    protocol.REGRESS: (regression_pb2.RegressionRequest, handlers.regress, "Regress"),
    protocol.MULTI_INFERENCE: (inference_pb2.MultiInferenceRequest, handlers.multi_inference, None),
    protocol.GET_MODEL_METADATA: (get_model_metadata_pb2.GetModelMetadataRequest, handlers.get_model_metadata, None),
    protocol.GET_MODEL_STATUS: (get_model_status_pb2.GetModelStatusRequest, handlers.get_model_status, None),
    protocol.RELOAD_CONFIG: (model_management_pb2.ReloadConfigRequest, handlers.reload_config, None),
}


class FrontEndDidNotStart(OSError):
    """The front end's process ended before it connected (e.g. its shared libraries are missing)."""


def frontend_binary() -> Optional[str]:
    """The front end's executable ($SERVING_GRPC_FRONTEND, else `make grpc-frontend`'s build), or None."""
    path = os.environ.get(BINARY_ENV) or str(BUILT_BINARY)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _frontend_flags(options) -> List[str]:
    """grpcio server options as the front end's flags (message limits, SO_REUSEPORT, the rest as-is)."""
    flags, limits = [], []
    for name, value in options:
        if name in ("grpc.max_receive_message_length", "grpc.max_send_message_length"):
            limits.append(int(value))
        elif name == "grpc.so_reuseport":
            flags.append(f"--reuseport={int(bool(value))}")
        else:
            flags.append(f"--channel_arg={name}={value}")
    if limits:
        flags.append(f"--max_message_bytes={min(limits)}")
    return flags


def _error_answer(call_id: int, error: ServingError) -> bytes:
    return protocol.encode_answer(call_id, error.code.value[0], error.message.encode())


def _unparsable_answer(call_id: int) -> bytes:
    return _error_answer(call_id, ServingError(grpc.StatusCode.INTERNAL, UNPARSABLE))


def _run_as_batch(queue, servable, tasks: List[_Task], size: int) -> None:
    """The tasks as one Session run of their queue (the thread front end's own batch code), each task
    that ran counted in runtime_latency as `servable.run` counts a run."""
    started = time.perf_counter()
    queue._run_batch(tasks, size)  # pylint: disable=protected-access
    if servable.metrics is not None:
        for task in tasks:
            if task.error is None:
                servable.metrics.record_runtime(servable.name, started)


def _record(averages, key, seconds: float) -> None:
    """Fold one run's seconds into `averages[key]` (a moving average; the first run sets it)."""
    previous = averages.get(key)
    averages[key] = seconds if previous is None else previous + RUN_WEIGHT * (seconds - previous)


class _Waiting:
    """A Predict queued for the batch of its signature: everything its answer needs."""

    __slots__ = ("call_id", "request", "started", "servable", "sig", "output_keys", "plan", "task")

    def __init__(self, call_id, request, started, servable, sig, output_keys, plan, task):
        self.call_id, self.request, self.started = call_id, request, started
        self.servable, self.sig, self.output_keys, self.plan, self.task = servable, sig, output_keys, plan, task


class CompiledGrpcServer:
    """The front end process and the dispatch thread that answers it, started and stopped as one: a
    `front_end.GrpcFrontEnd`."""

    kind = "compiled"

    def __init__(self, manager, options, max_workers: int = 8, metrics=None, binary: Optional[str] = None):
        self._manager = manager
        self._counted_in = metrics
        self._metrics = None  # requests are counted once count_requests is called
        self._flags = _frontend_flags(options)
        self._binary = binary or frontend_binary()
        self._pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-frontend-worker")
        self._batch_pool = futures.ThreadPoolExecutor(max_workers=BATCH_THREADS, thread_name_prefix="grpc-frontend-batch")
        self._heavy_pool = futures.ThreadPoolExecutor(max_workers=HEAVY_THREADS, thread_name_prefix="grpc-frontend-heavy")
        # A batch thread that finished a queue's batch says so here and wakes the dispatch thread.
        self._finished: collections.deque = collections.deque()
        self._in_flight: set = set()  # queues with a batch running (the dispatch thread's own)
        # Seconds recent runs took: per batch queue, and per (servable, signature) for unbatched runs.
        self._batch_run_s: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._alone_run_s: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._process: Optional[subprocess.Popen] = None
        self._sock: Optional[socket.socket] = None
        self._send_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._dir: Optional[str] = None
        self._stopping = False
        # Batched Predicts waiting for their batch (only across reads when batch_timeout_micros > 0).
        self._pending: Dict[object, List[_Waiting]] = {}
        self._queued: Dict[object, int] = {}

    # -- process ---------------------------------------------------------------------------
    def start(self, address: str, credentials=None) -> int:
        """Start the front end on `address` and serve; the bound port (0 when it cannot listen). The
        front end serves without TLS: `credentials` must be None (front_end.choose_front_end)."""
        if credentials is not None:
            raise ValueError("the compiled gRPC front end serves without TLS")
        if self._binary is None:
            raise FileNotFoundError("the compiled gRPC front end is not built (make grpc-frontend)")
        self._dir = tempfile.mkdtemp(prefix="serving-grpc-")
        path = os.path.join(self._dir, "backend.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.2)
            self._process = subprocess.Popen(
                [self._binary, f"--address={address}", f"--backend={path}", *self._flags],
                stdin=subprocess.DEVNULL)  # it ends at EOF on the socket: when this process ends too
            self._sock = self._accept(listener)
        finally:
            listener.close()
        port, detail = self._hello()
        if not port:
            log.error("the gRPC front end cannot listen on %s: %s", address, detail)
            self._end_process(5.0)
            return 0
        self._thread = threading.Thread(target=self._serve, name="grpc-frontend-dispatch", daemon=True)
        self._thread.start()
        return port

    def _accept(self, listener: socket.socket) -> socket.socket:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                sock, _ = listener.accept()
                sock.settimeout(None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                return sock
            except socket.timeout:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    code = self._process.poll()
                    self._end_process(1.0)
                    raise FrontEndDidNotStart(f"the gRPC front end {self._binary} did not start (exit code {code}; "
                                              "a missing gRPC C++ library exits 127)") from None

    def _hello(self):
        buffer = bytearray()
        while True:
            calls, used = protocol.decode_calls(buffer)
            if calls:
                del buffer[:used]
                text = calls[0][2].decode("utf-8", "replace")
                port, _, detail = text.partition(" ")
                return int(port), detail
            chunk = self._sock.recv(4096)
            if not chunk:
                return 0, "the front end exited before it listened"
            buffer += chunk

    def _end_process(self, timeout_s: float) -> None:
        process = self._process
        if process is not None:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._sock is not None:
            self._sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def count_requests(self) -> None:
        """Count requests in the metrics given at construction from now on."""
        self._metrics = self._counted_in

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop taking calls, answer those in flight for at most `grace_s`, then end the front end."""
        if self._process is None:
            return
        self._stopping = True
        if self._process.poll() is None:
            self._send([protocol.shutdown_frame(grace_s)])
        self._end_process(grace_s + 10)
        if self._thread is not None:
            self._thread.join(grace_s + 10)
        for pool in (self._pool, self._batch_pool, self._heavy_pool):
            pool.shutdown(wait=False)
        self._wake_r.close()
        self._wake_w.close()
        self._process = None

    def _send(self, frames) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as err:  # the front end is gone; the dispatch thread reports it
                log.debug("gRPC front end unreachable: %s", err)

    # -- dispatch --------------------------------------------------------------------------
    def _serve(self) -> None:
        sock, wake, buffer = self._sock, self._wake_r, bytearray()
        while True:
            deadline = self._next_deadline()
            try:
                readable, _, _ = select.select([sock, wake], [], [],
                                               None if deadline is None else max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError):  # the socket was closed under us
                break
            if wake in readable:
                self._take_finished()
            chunk = None
            if sock in readable:
                try:
                    chunk = sock.recv(RECV_BYTES)
                except OSError:
                    chunk = b""
                if chunk == b"":
                    break
            answers: List[bytes] = []
            if chunk:
                buffer += chunk
                try:
                    calls, used = protocol.decode_calls(buffer)
                except protocol.ProtocolError as err:
                    log.error("gRPC front end sent a malformed frame (%s); closing it", err)
                    break
                del buffer[:used]
                for call_id, method, payload in calls:
                    if method == protocol.PREDICT:
                        self._predict(call_id, payload, answers)
                    elif method in _OTHER_METHODS:
                        self._pool.submit(self._answer_other, call_id, method, payload)
            self._start_due_batches(answers)
            if answers:
                self._send(answers)
        for waiting in self._pending.values():  # the front end is gone: nobody to answer
            for entry in waiting:
                entry.servable.release()
        self._pending.clear()
        if not self._stopping:
            log.error("the gRPC front end exited (code %s): gRPC is no longer served", self._process.poll())

    def _take_finished(self) -> None:
        """Queues whose batch thread finished: free to start their next batch."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._finished:
            self._in_flight.discard(self._finished.popleft())

    def _predict(self, call_id: int, payload: bytes, answers: List[bytes]) -> None:
        """Parse and check a Predict here; its decoding (when large) and its run go to other threads."""
        started = time.perf_counter()
        request = servable = None
        try:
            try:
                request = predict_pb2.PredictRequest.FromString(payload)
            except DecodeError:
                answers.append(_unparsable_answer(call_id))
                return
            servable = self._manager.servable(handlers._require_spec(request)).servable  # pylint: disable=protected-access
            declared = predict_plan.declared_bytes(request)
            if declared > predict_plan.INLINE_DECODE_BYTES:
                self._heavy_pool.submit(self._predict_apart, call_id, request, started, servable)
                servable = None  # released by _predict_apart
                return
            sig, inputs, output_keys, plan, batched = predict_plan.prepare(
                servable, request, handlers.signature_method_check(self._manager))
            size = servable.batcher.task_size(inputs) if batched else 0
            if size:
                self._enqueue(_Waiting(call_id, request, started, servable, sig, output_keys, plan,
                                       _Task(inputs, size, wake=False)))
            elif (declared <= INLINE_ALONE_BYTES
                  and self._alone_run_s.get(servable, {}).get(sig.name, INLINE_RUN_S) < INLINE_RUN_S):
                answers.append(self._run_alone(call_id, request, started, servable, sig, inputs, output_keys, plan,
                                               send=False))
            else:
                self._pool.submit(self._run_alone, call_id, request, started, servable, sig, inputs, output_keys,
                                  plan)
            servable = None  # released once its run is done
        except ServingError as err:
            answers.append(self._predict_error(call_id, request, started, err))
        except Exception as err:  # noqa: BLE001 - report, do not crash the server
            answers.append(self._predict_error(call_id, request, started, internal_error(err, "predict")))
        finally:
            if servable is not None:
                servable.release()

    def _run_alone(self, call_id, request, started, servable, sig, inputs, output_keys, plan,
                   send: bool = True) -> Optional[bytes]:
        """An unbatched Predict's run, in a worker thread (its answer sent from there), or on the
        dispatch thread when its signature's runs are fast (`send=False`: the answer returned)."""
        def run():
            run_started = time.perf_counter()
            results = servable.run(sig, inputs, output_keys)
            _record(self._alone_run_s.setdefault(servable, {}), sig.name, time.perf_counter() - run_started)
            return sig, results, output_keys, plan

        frame = self._answered(call_id, request, started, servable, run)
        if not send:
            return frame
        self._send([frame])
        return None

    def _predict_apart(self, call_id, request, started, servable) -> None:
        """A Predict whose tensors declare more than INLINE_DECODE_BYTES: checked (request_cost refuses
        it here in microseconds when it is over a limit), decoded and run in a thread of its own; when
        batched it runs through the servable's batch queue as the thread-pool front end runs it."""
        def run():
            sig, inputs, output_keys, plan, _ = predict_plan.prepare(
                servable, request, handlers.signature_method_check(self._manager))
            return sig, servable.run(sig, inputs, output_keys), output_keys, plan

        self._send([self._answered(call_id, request, started, servable, run)])

    def _answered(self, call_id, request, started, servable, run) -> bytes:
        """The answer frame of `run()` -> (signature, results, output keys, plan), or of its error in TF
        Serving's codes; releases `servable` whatever happens."""
        try:
            try:
                sig, results, output_keys, plan = run()
            except ServingError as err:
                return self._predict_error(call_id, request, started, err)
            except Exception as err:  # noqa: BLE001
                return self._predict_error(call_id, request, started, internal_error(err, "predict"))
            return self._answer_predict(call_id, request, started, servable, sig, results, output_keys, plan)
        finally:
            servable.release()

    def _enqueue(self, entry: _Waiting) -> None:
        queue = entry.servable.batcher.queue(entry.servable, entry.sig, entry.task.inputs, entry.output_keys)
        o = queue._options  # pylint: disable=protected-access
        queued = self._queued.get(queue, 0)
        if math.ceil((queued + entry.task.size) / o.max_batch_size) > o.max_enqueued_batches:
            raise unavailable("The batch scheduling queue to which this task was submitted is full")
        self._pending.setdefault(queue, []).append(entry)
        self._queued[queue] = queued + entry.task.size

    def _next_deadline(self) -> Optional[float]:
        """When the dispatch thread must wake without input: the earliest batch_timeout_micros of a queue
        that waits with no batch running (None: wait for input or a finished batch)."""
        deadlines = [waiting[0].task.enqueued + queue._options.batch_timeout_micros / 1e6  # pylint: disable=protected-access
                     for queue, waiting in self._pending.items() if queue not in self._in_flight]
        return min(deadlines) if deadlines else None

    def _start_due_batches(self, answers: List[bytes]) -> None:
        """Start, for each queue with no batch running, a batch of its waiting Predicts (at most
        max_batch_size), unless it is not full while its head is younger than batch_timeout_micros.
        A queue whose batches are fast (INLINE_RUN_S) runs it here, its answers joining `answers`."""
        for queue in list(self._pending):
            if queue in self._in_flight:
                continue
            waiting, o = self._pending[queue], queue._options  # pylint: disable=protected-access
            if (o.batch_timeout_micros > 0 and self._queued[queue] < o.max_batch_size
                    and time.monotonic() < waiting[0].task.enqueued + o.batch_timeout_micros / 1e6):
                continue
            batch, size = [], 0
            while waiting and size + waiting[0].task.size <= o.max_batch_size:
                entry = waiting.pop(0)
                batch.append(entry)
                size += entry.task.size
            self._queued[queue] -= size
            if not waiting:
                del self._pending[queue], self._queued[queue]
            self._in_flight.add(queue)
            if self._batch_run_s.get(queue, INLINE_RUN_S) * size < INLINE_RUN_S:
                answers.extend(self._run_batch(queue, batch, size, send=False))
                self._in_flight.discard(queue)
            else:
                self._batch_pool.submit(self._run_batch, queue, batch, size)

    def _run_batch(self, queue, batch: List[_Waiting], size: int, send: bool = True) -> List[bytes]:
        """One batch in a batch thread: run, answer, then free its queue for the next batch. With
        `send=False` (on the dispatch thread) the answers are returned and the queue is the caller's."""
        try:
            run_started = time.perf_counter()
            _run_as_batch(queue, batch[0].servable, [entry.task for entry in batch], size)
            _record(self._batch_run_s, queue, (time.perf_counter() - run_started) / size)
            answers = [self._predict_error(entry.call_id, entry.request, entry.started, entry.task.error)
                       if entry.task.error is not None else
                       self._answer_predict(entry.call_id, entry.request, entry.started, entry.servable, entry.sig,
                                            entry.task.outputs, entry.output_keys, entry.plan)
                       for entry in batch]
        except Exception as err:  # noqa: BLE001 - never leave a client without an answer
            error = internal_error(err, "batch")
            answers = [self._predict_error(entry.call_id, entry.request, entry.started, error) for entry in batch]
        if not send:
            for entry in batch:
                entry.servable.release()
            return answers
        try:
            self._send(answers)
        finally:
            for entry in batch:
                entry.servable.release()
            self._finished.append(queue)
            try:
                self._wake_w.send(b"\0")
            except OSError:  # stopping
                pass
        return []

    def _answer_predict(self, call_id, request, started, servable, sig, results, output_keys, plan) -> bytes:
        try:
            response = predict_plan.response_bytes(servable, sig, results, output_keys, plan)
            log_request(self._manager, "predict", request, response)
        except ServingError as err:
            return self._predict_error(call_id, request, started, err)
        except Exception as err:  # noqa: BLE001
            return self._predict_error(call_id, request, started, internal_error(err, "predict"))
        predict_plan.record(self._metrics, request, "Predict", "OK", started)
        return protocol.encode_answer(call_id, 0, b"", response)

    def _predict_error(self, call_id, request, started, error: ServingError) -> bytes:
        if request is not None:
            predict_plan.record(self._metrics, request, "Predict", error.code.name, started)
        return _error_answer(call_id, error)

    def _answer_other(self, call_id: int, method: int, payload: bytes) -> None:
        """Any method but Predict, in a worker thread: its handler unchanged."""
        request_class, handler, api = _OTHER_METHODS[method]
        started = time.perf_counter()
        try:
            request = request_class.FromString(payload)
        except DecodeError:
            self._send([_unparsable_answer(call_id)])
            return
        try:
            response = metrics_lib.with_api(api, handler, self._manager, request)
            frame, status = protocol.encode_answer(call_id, 0, b"", response.SerializeToString()), "OK"
        except ServingError as err:
            frame, status = _error_answer(call_id, err), err.code.name
        except Exception as err:  # noqa: BLE001 - report, do not crash the server
            error = internal_error(err, handler.__name__)
            frame, status = _error_answer(call_id, error), error.code.name
        if api is not None:
            predict_plan.record(self._metrics, request, api, status, started)
        self._send([frame])

    def warm_predict(self, servable, request) -> bytes:
        """One warmup Predict through this front end's path, from the loading thread (the version is
        not AVAILABLE yet, so nothing else uses its plans or batch queues): parsed from its bytes,
        planned, run as a batch of one when batched, the response's bytes. Raises what it raises."""
        parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        sig, inputs, output_keys, plan, batched = predict_plan.prepare(
            servable, parsed, handlers.signature_method_check(self._manager))
        size = servable.batcher.task_size(inputs) if batched else 0
        if size:
            task = _Task(inputs, size, wake=False)
            _run_as_batch(servable.batcher.queue(servable, sig, inputs, output_keys), servable, [task], size)
            if task.error is not None:
                raise task.error
            results = task.outputs
        else:
            results = servable.run(sig, inputs, output_keys)
        return predict_plan.response_bytes(servable, sig, results, output_keys, plan)
