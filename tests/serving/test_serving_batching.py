"""Server-side batching: requests merge into shared runs, each caller gets its own slice, the
queue bound answers UNAVAILABLE, one bad request does not fail its neighbours, and batched
serving returns exactly what unbatched serving returns."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from serving.batching import batcher as batching
from serving.batching.batcher import BatchingOptions, _BatchQueue, parse_batching_parameters
from serving.util.errors import ServingError, invalid_argument


class _SlowDoubler:
    """run_fn: doubles `x`, records each run's batch size, slow enough for requests to pile up."""

    def __init__(self, delay_s=0.02):
        self.delay_s = delay_s
        self.batch_sizes = []
        self.lock = threading.Lock()

    def __call__(self, inputs):
        with self.lock:
            self.batch_sizes.append(len(inputs["x"]))
        time.sleep(self.delay_s)
        if np.any(inputs["x"] < 0):
            raise invalid_argument("negative input")
        return {"y": inputs["x"] * 2}


def _submit_concurrently(queue, values, results, errors):
    def call(i, v):
        try:
            results[i] = queue.submit({"x": np.array([[v]], np.float32)}, 1)["y"]
        except ServingError as err:
            errors[i] = err

    threads = [threading.Thread(target=call, args=(i, v)) for i, v in enumerate(values)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)


def test_concurrent_requests_merge_and_get_their_own_rows():
    run = _SlowDoubler()
    queue = _BatchQueue(BatchingOptions(max_batch_size=8, batch_timeout_micros=2000, num_batch_threads=1,
                                        max_enqueued_batches=100), run)
    values = list(range(24))
    results, errors = {}, {}
    _submit_concurrently(queue, values, results, errors)
    assert errors == {}
    assert {i: float(r[0, 0]) for i, r in results.items()} == {i: 2.0 * v for i, v in enumerate(values)}
    assert sum(run.batch_sizes) == 24
    assert max(run.batch_sizes) > 1 and max(run.batch_sizes) <= 8
    assert len(run.batch_sizes) < 24  # fewer runs than requests: that is the point


def test_lone_request_runs_at_once_without_waiting_for_the_timeout():
    run = _SlowDoubler(delay_s=0)
    queue = _BatchQueue(BatchingOptions(max_batch_size=8, batch_timeout_micros=0), run)
    start = time.perf_counter()
    assert queue.submit({"x": np.array([[3.0]], np.float32)}, 1)["y"].tolist() == [[6.0]]
    assert time.perf_counter() - start < 0.05


def test_bad_request_fails_alone():
    run = _SlowDoubler()
    queue = _BatchQueue(BatchingOptions(max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=1), run)
    values = [1.0, -1.0, 2.0, 3.0, 4.0, 5.0]
    results, errors = {}, {}
    _submit_concurrently(queue, values, results, errors)
    assert list(errors) == [1] and errors[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert {i: float(r[0, 0]) for i, r in results.items()} == {0: 2.0, 2: 4.0, 3: 6.0, 4: 8.0, 5: 10.0}


def test_tasks_that_cannot_be_concatenated_run_alone():
    run = _SlowDoubler()
    queue = _BatchQueue(BatchingOptions(max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=1), run)
    results, errors = {}, {}

    def call(i, width):
        results[i] = queue.submit({"x": np.full((1, width), float(i), np.float32)}, 1)["y"]

    threads = [threading.Thread(target=call, args=(i, 1 + i % 2)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert {i: r.tolist() for i, r in results.items()} == {
        i: [[2.0 * i] * (1 + i % 2)] for i in range(4)}


def test_full_queue_is_unavailable():
    run = _SlowDoubler(delay_s=0.3)
    queue = _BatchQueue(BatchingOptions(max_batch_size=1, max_enqueued_batches=2, num_batch_threads=1), run)
    results, errors = {}, {}
    _submit_concurrently(queue, [1.0] * 6, results, errors)
    assert errors, "some requests must be refused while the queue is full"
    assert all(e.code == grpc.StatusCode.UNAVAILABLE and "queue" in e.message for e in errors.values())
    assert len(results) + len(errors) == 6


def test_allowed_batch_sizes_pad_and_trim():
    run = _SlowDoubler(delay_s=0)
    queue = _BatchQueue(BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 4)), run)
    out = queue.submit({"x": np.array([[1.0], [2.0], [3.0]], np.float32)}, 3)
    assert out["y"].tolist() == [[2.0], [4.0], [6.0]]
    assert run.batch_sizes == [4]


def test_batching_parameters_file_and_its_errors():
    options = parse_batching_parameters("""
        max_batch_size { value: 32 }  batch_timeout_micros { value: 1000 }
        max_enqueued_batches { value: 50 }  num_batch_threads { value: 2 }
        allowed_batch_sizes: 8  allowed_batch_sizes: 32
        thread_pool_name { value: "ignored" }""")
    assert options == BatchingOptions(32, 1000, 50, 2, (8, 32))
    with pytest.raises(ValueError, match="not a BatchingParameters text proto"):
        parse_batching_parameters("max_batch_size: banana")
    with pytest.raises(ValueError, match="end with max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 32 } allowed_batch_sizes: 8")
    with pytest.raises(ValueError, match="not supported"):
        parse_batching_parameters("pad_variable_length_inputs: true")


def test_batched_server_answers_exactly_as_unbatched(taxi_like_base):
    from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs
    from serving_helpers import config_for, running_server, taxi_rows

    config = config_for(taxi=str(taxi_like_base / "taxi"))
    rows = taxi_rows(32)
    with running_server(config, wait_for=["taxi"]) as plain, ServingClient(f"127.0.0.1:{plain.grpc_port}") as c:
        defs = c.signature_defs("taxi")
        inputs = [rows_to_inputs([r], defs["serving_default"], raw_input_dtypes(defs)) for r in rows]
        expected = [c.predict("taxi", i)[0]["probabilities"] for i in inputs]
    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=3000, num_batch_threads=1)
    with running_server(config, wait_for=["taxi"], batching=options) as server:
        got = [None] * len(rows)

        def call(i):
            with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
                got[i] = client.predict("taxi", inputs[i])[0]["probabilities"]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(rows))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for want, have in zip(expected, got):
            np.testing.assert_allclose(have, want, atol=1e-6, rtol=0)


def test_oversized_request_is_invalid_argument():
    batcher = batching.ServableBatcher(BatchingOptions(max_batch_size=2))

    class _Sig:
        name = "s"

    with pytest.raises(ServingError, match="larger than maximum input batch size 2"):
        batcher.run(None, _Sig(), {"x": np.zeros((3, 1), np.float32)}, ("y",))
