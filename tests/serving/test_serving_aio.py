"""The grpc.aio front end (`--grpc_aio`): the same answers and status codes as the thread-pool
front end, batched requests merge into shared runs, and the server keeps serving after errors.

It is the default front end, so the whole serving suite runs on it (SERVING_TEST_GRPC_AIO=0: thread pool)."""
from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest

from serving.batching.batcher import BatchingOptions


def _predict_all(port, inputs):
    """Every request at once from grpc.aio coroutines: (responses or RpcErrors) in order."""
    from grpc import aio
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tensorflow_serving.apis import predict_pb2

    from serving.util import tensors

    def predict_request(name, values):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        for alias, value in values.items():
            tensors.from_ndarray(np.asarray(value), request.inputs[alias])
        return request

    async def run():
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            return await asyncio.gather(*(stub.Predict(predict_request("taxi", i)) for i in inputs),
                                        return_exceptions=True)

    return asyncio.run(run())


def test_aio_batched_answers_exactly_as_thread_front_end_and_merges_runs(taxi_like_base):
    from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs
    from serving.util import tensors
    from serving_helpers import config_for, counting_batches, running_server, taxi_rows

    config = config_for(taxi=str(taxi_like_base / "taxi"))
    rows = taxi_rows(48)
    with running_server(config, wait_for=["taxi"], grpc_aio=False) as plain, \
            ServingClient(f"127.0.0.1:{plain.grpc_port}") as c:
        defs = c.signature_defs("taxi")
        inputs = [rows_to_inputs([r], defs["serving_default"], raw_input_dtypes(defs)) for r in rows]
        expected = [c.predict("taxi", i)[0]["probabilities"] for i in inputs]
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=2000, num_batch_threads=1)
    with running_server(config, wait_for=["taxi"], batching=options, grpc_aio=True) as server:
        with server.manager.servable(_spec("taxi")) as held:
            assert held.signature("serving_default").batchable
        with counting_batches(server, "taxi") as sizes:
            answers = _predict_all(server.grpc_port, inputs)
        for want, have in zip(expected, answers):
            assert not isinstance(have, BaseException), have
            np.testing.assert_allclose(tensors.to_ndarray(have.outputs["probabilities"]), want, atol=1e-6, rtol=0)
        assert sum(sizes) == len(rows)
        assert len(sizes) < len(rows) and max(sizes) <= 16  # shared runs, never above max_batch_size


def _spec(name):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec()
    spec.name = name
    return spec


@pytest.mark.parametrize("batching", [None, BatchingOptions(max_batch_size=4, num_batch_threads=1)])
def test_aio_errors_are_tf_serving_codes_and_server_keeps_serving(testdata, batching):
    """predict_util.cc: an unknown signature is FAILED_PRECONDITION, a wrong input name
    INVALID_ARGUMENT; server_core.cc: an unknown model NOT_FOUND, no name INVALID_ARGUMENT;
    half_plus_two (tensorflow_model_server_test.py testPredict) answers 3.0 for 2.0 after each."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.util import tensors
    from serving_helpers import config_for, running_server

    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["half"], batching=batching, grpc_aio=True) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def request(name="half", signature="", alias="x"):
            r = predict_pb2.PredictRequest()
            r.model_spec.name = name
            r.model_spec.signature_name = signature
            tensors.from_ndarray(np.array([2.0], np.float32), r.inputs[alias])
            return r

        for bad, code in ((request(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION),
                          (request(alias="y"), grpc.StatusCode.INVALID_ARGUMENT),
                          (request(name="other"), grpc.StatusCode.NOT_FOUND),
                          (request(name=""), grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(bad, timeout=30)
            assert err.value.code() == code, (bad, err.value.details())
            assert "Traceback" not in err.value.details()
            answer = stub.Predict(request(), timeout=30)
            assert tensors.to_ndarray(answer.outputs["y"]).tolist() == [3.0]


def test_aio_server_stops_and_frees_its_port(testdata):
    import socket

    from serving_helpers import config_for, running_server

    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["half"], grpc_aio=True) as server:
        port = server.grpc_port
        assert threading.active_count() > 1
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nothing listens any more


def _cmdline(pid) -> list:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().split("\0")
    except OSError:  # gone
        return []


def test_grpc_processes_share_the_port_and_stop_together(testdata, tmp_path):
    """--grpc_processes=2: a second whole server process answers on the same port (SO_REUSEPORT),
    shown by freezing the first one (SIGSTOP) and still getting half_plus_two's 3.0 for 2.0 on
    fresh connections; SIGTERM to the first stops both."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.util import tensors
    from serving_helpers import REPO_ROOT

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    with open(tmp_path / "stderr", "w") as stderr:  # the server's own copy stays open
        server = subprocess.Popen([sys.executable, "-m", "serving.model_servers.main", "--backend=standin", "--port=0",
                                   "--rest_api_port=0", "--model_name=half",
                                   f"--model_base_path={testdata / 'saved_model_half_plus_two_cpu'}",
                                   "--grpc_processes=2", "--grpc_aio"],
                                  env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=str(REPO_ROOT))
    child = None
    try:
        port = None
        for line in server.stdout:
            match = re.search(r"on gRPC 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the server did not say its port"
        # The second server process: the parent's child whose argv carries --grpc_reuseport=true (a child seen
        # between fork and exec shows the parent's argv, which does not; with the compiled front end built,
        # each server process also has its front end as a child).
        deadline = time.monotonic() + 60
        while True:
            children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
            servers = [c for c in children if "--grpc_reuseport=true" in _cmdline(c)]
            if servers or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(servers) == 1, children
        child = int(servers[0])
        child_args = _cmdline(child)
        # Every process shares the port, and takes the parent's GIL switch interval (its default here).
        assert "--grpc_reuseport=true" in child_args and "--gil_switch_interval_ms=1.0" in child_args

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        tensors.from_ndarray(np.array([2.0], np.float32), request.inputs["x"])

        def answer(timeout):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)
                except grpc.RpcError:
                    return None
                return tensors.to_ndarray(reply.outputs["y"]).tolist()

        deadline = time.monotonic() + 300  # both processes load the model
        while answer(30) != [3.0] and time.monotonic() < deadline:
            time.sleep(0.5)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            answers = []
            deadline = time.monotonic() + 300
            while [3.0] not in answers and time.monotonic() < deadline:
                answers.append(answer(3))  # connections the kernel gives the frozen process time out
            assert [3.0] in answers, "no answer while the first process was frozen"
        finally:
            os.kill(server.pid, signal.SIGCONT)
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, (tmp_path / "stderr").read_text()[-20000:]  # a stop past the deadline: stacks
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_batch_waits_for_the_callbacks_due_on_the_loop_then_runs_them_together():
    """async_batcher: with batch_timeout_micros 0 a batch still takes the requests whose handlers
    are due in the loop's next iterations (under load each request reaches its handler in its own
    iteration), and a lone request on an idle loop runs at once."""
    from serving.batching import async_batcher
    from serving.batching.batcher import _BatchQueue

    runs = []

    def run_fn(batched):
        runs.append(len(batched["x"]))
        return {"y": batched["x"] * 2}

    async def scenario():
        loop = asyncio.get_running_loop()
        front = async_batcher.AsyncBatchQueue(_BatchQueue(BatchingOptions(max_batch_size=8, num_batch_threads=1),
                                                          run_fn), loop, None)
        lone = await front.submit({"x": np.array([1.0])}, 1)  # nothing else due: runs alone, at once
        first = asyncio.ensure_future(front.submit({"x": np.array([2.0])}, 1))
        later = []

        def arrive(hops):  # a request reaching its handler a few loop iterations later
            if hops:
                loop.call_soon(arrive, hops - 1)
            else:
                later.append(asyncio.ensure_future(front.submit({"x": np.array([3.0])}, 1)))

        loop.call_soon(arrive, 3)
        loop.call_soon(arrive, 5)
        answers = [await first]
        while len(later) < 2:
            await asyncio.sleep(0)
        answers += [await f for f in later]
        return lone, answers

    lone, answers = asyncio.run(scenario())
    assert runs == [1, 3]  # the lone one, then the three that were due together
    assert lone["y"].tolist() == [2.0]
    assert [a["y"].tolist() for a in answers] == [[4.0], [6.0], [6.0]]


def test_a_batch_waits_for_as_many_requests_as_recent_batches_held(monkeypatch):
    """async_batcher.EXPECTED_WEIGHT: under load a request often arrives while the loop has nothing
    else due (its client is still sending the next ones); once batches have held several requests,
    a batch waits a few iterations for them instead of running alone. A lone client's requests,
    batches of 1, never wait."""
    from serving.batching import async_batcher
    from serving.batching.batcher import _BatchQueue

    # The second request comes from a 0.2 ms timer; a loaded machine can delay it past the default
    # cap (2 ms), and the cap is not what this test is about.
    monkeypatch.setattr(async_batcher, "MAX_WAIT_S", 1.0)
    runs = []

    def run_fn(batched):
        runs.append(len(batched["x"]))
        return {"y": batched["x"] * 2}

    async def burst(front, n):
        return await asyncio.gather(*(front.submit({"x": np.array([float(i)])}, 1) for i in range(n)))

    async def scenario():
        loop = asyncio.get_running_loop()
        front = async_batcher.AsyncBatchQueue(_BatchQueue(BatchingOptions(max_batch_size=16, num_batch_threads=1),
                                                          run_fn), loop, None)
        for _ in range(10):  # 16 clients' worth of load: batches of 6
            await burst(front, 6)
        del runs[:]
        first = asyncio.ensure_future(front.submit({"x": np.array([1.0])}, 1))
        await asyncio.sleep(0)  # queued; nothing else is due on the loop
        later = []
        loop.call_later(0.0002, lambda: later.append(asyncio.ensure_future(front.submit({"x": np.array([2.0])}, 1))))
        answers = [await first]
        while not later:
            await asyncio.sleep(0)
        answers.append(await later[0])
        waited = list(runs)
        del runs[:]
        for _ in range(40):  # then a lone client: one request at a time
            await front.submit({"x": np.array([3.0])}, 1)
        deferrals = []
        original = front._pump

        def counting_pump():
            deferrals.append(front._deferred)
            original()
        front._pump = counting_pump
        await front.submit({"x": np.array([4.0])}, 1)
        return waited, answers, deferrals

    waited, answers, deferrals = asyncio.run(scenario())
    assert waited == [2] and [a["y"].tolist() for a in answers] == [[2.0], [4.0]]
    assert runs[-1:] == [1] and deferrals == [0]  # the lone client's request ran in its first pump
