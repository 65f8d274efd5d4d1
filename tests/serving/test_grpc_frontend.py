"""The compiled gRPC front end (serving/model_servers/grpc_frontend) against a stand-in for the
Python side: a plain Unix socket server speaking frontend_protocol, and real gRPC clients."""
from __future__ import annotations

import serving  # noqa: F401  (sets the environment TensorFlow needs before it loads)

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest

BINARY = Path(__file__).resolve().parents[2] / "serving" / "model_servers" / "grpc_frontend" / "build" / "grpc_frontend"
if not BINARY.is_file():
    pytest.skip("the compiled gRPC front end is not built (make grpc-frontend)", allow_module_level=True)

import grpc  # noqa: E402
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,  # noqa: E402
                                     prediction_service_pb2_grpc)

from serving.model_servers import frontend_protocol as protocol  # noqa: E402

UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def predict_answer(call_id: int, method: int, payload: bytes):
    """The stand-in's default answers: Predict echoes the request's model name (and its "x" input's
    bytes as output "y"); name "bad" is INVALID_ARGUMENT; GetModelStatus answers an empty status;
    any method's raw bytes b"raw" come back as they are."""
    if payload == b"raw":
        return protocol.encode_answer(call_id, 0, b"", b"raw:%d" % method)
    if method == protocol.PREDICT:
        request = predict_pb2.PredictRequest.FromString(payload)
        if request.model_spec.name == "bad":
            return protocol.encode_answer(call_id, grpc.StatusCode.INVALID_ARGUMENT.value[0], b"bad input")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        if "x" in request.inputs:
            response.outputs["y"].tensor_content = request.inputs["x"].tensor_content
        return protocol.encode_answer(call_id, 0, b"", response.SerializeToString())
    if method == protocol.GET_MODEL_STATUS:
        return protocol.encode_answer(call_id, 0, b"", get_model_status_pb2.GetModelStatusResponse().SerializeToString())
    return protocol.encode_answer(call_id, grpc.StatusCode.INTERNAL.value[0], b"unexpected method")


class Backend:
    """The Python side's stand-in: listens on a Unix socket, starts the front end, records every call
    frame and answers with `answer(call_id, method, payload)` (bytes, or None for no answer now)."""

    def __init__(self, *flags: str, address: str = "127.0.0.1:0", answer=predict_answer):
        self.answer = answer
        self.calls = []  # (call_id, method, payload) as they arrived
        self._dir = tempfile.mkdtemp(prefix="frontend-test-")
        path = os.path.join(self._dir, "backend.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(15)
        self._stderr = open(os.path.join(self._dir, "stderr"), "w+b")
        self.process = subprocess.Popen([str(BINARY), f"--address={address}", f"--backend={path}", *flags],
                                        stdin=subprocess.DEVNULL, stderr=self._stderr)
        try:
            self.sock, _ = listener.accept()
        finally:
            listener.close()
        self.sock.settimeout(None)
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self.hello = self._read_hello()
        self.port = int(self.hello) if self.hello.isdigit() else 0
        self._thread = None
        if self.port:
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()

    def _read_hello(self) -> bytes:
        while True:
            calls, used = protocol.decode_calls(self._buffer)
            if calls:
                del self._buffer[:used]
                call_id, method, payload = calls[0]
                assert (call_id, method) == (0, 0)
                return payload
            chunk = self.sock.recv(4096)
            if not chunk:
                return b""
            self._buffer += chunk

    def _serve(self):
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            self._buffer += chunk
            calls, used = protocol.decode_calls(self._buffer)
            del self._buffer[:used]
            answers = []
            for call in calls:
                self.calls.append(call)
                frame = self.answer(*call)
                if frame is not None:
                    answers.append(frame)
            if answers:
                self.send(b"".join(answers))

    def send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def wait_for_calls(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} calls reached the backend, expected {count}"
            time.sleep(0.01)

    def channel(self, options=()):
        return grpc.insecure_channel(f"127.0.0.1:{self.port}", options=list(options))

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        try:
            self.sock.close()
        except OSError:
            pass
        self._stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def backends():
    started = []

    def start(*flags, **kwargs):
        backend = Backend(*flags, **kwargs)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close()


@pytest.fixture
def backend(backends):
    b = backends()
    assert b.port > 0, b.hello
    return b


def _request(name: str, x: bytes = b"") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if x:
        request.inputs["x"].tensor_content = x
    return request


def test_predict_bytes_arrive_as_sent_and_answer_comes_back(backend):
    request = _request("alpha", b"\x00\x01\x02payload")
    with backend.channel() as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(), timeout=10)
    assert response.model_spec.name == "alpha"
    assert response.outputs["y"].tensor_content == b"\x00\x01\x02payload"
    assert status == get_model_status_pb2.GetModelStatusResponse()
    (id1, method1, payload1), (id2, method2, _) = backend.calls
    assert (method1, payload1) == (protocol.PREDICT, request.SerializeToString())
    assert method2 == protocol.GET_MODEL_STATUS
    assert 0 < id1 != id2 > 0


def test_every_method_has_its_number(backend):
    with backend.channel() as channel:
        for number, method in enumerate(protocol.METHODS[1:], start=1):
            assert channel.unary_unary(method)(b"raw", timeout=10) == b"raw:%d" % number
    assert [m for _, m, _ in backend.calls] == list(range(1, len(protocol.METHODS)))


def test_error_answer_reaches_the_client(backend):
    with backend.channel() as channel, pytest.raises(grpc.RpcError) as err:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_request("bad"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "bad input"


def test_unknown_method_is_unimplemented_without_the_backend(backend):
    with backend.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/foo.Bar/Baz")(b"hello", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # A call after it is the first the backend sees (the socket keeps order).
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_request("after"), timeout=10)
    assert [predict_pb2.PredictRequest.FromString(p).model_spec.name for _, _, p in backend.calls] == ["after"]


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_clients_each_get_their_own_answer(backends, threads):
    backend = backends(f"--threads={threads}")
    clients, per_client = 16, 200

    def client(k):
        wrong = 0
        with backend.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for i in range(per_client):
                name = f"c{k}-{i}"
                wrong += stub.Predict(_request(name), timeout=30).model_spec.name != name
        return wrong

    with futures.ThreadPoolExecutor(clients) as pool:
        assert sum(pool.map(client, range(clients))) == 0
    ids = [call_id for call_id, _, _ in backend.calls]
    assert len(ids) == len(set(ids)) == clients * per_client and 0 not in ids


def test_large_messages_pass_and_the_limit_holds(backends):
    big = backends()
    blob = os.urandom(20 * 1024 * 1024)
    with big.channel(UNLIMITED) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_request("big", blob), timeout=60)
    assert response.outputs["y"].tensor_content == blob
    assert big.calls[0][2] == _request("big", blob).SerializeToString()

    small = backends("--max_message_bytes=1000")
    with small.channel(UNLIMITED) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request("over", b"x" * 2000), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Predict(_request("under", b"x" * 100), timeout=10).model_spec.name == "under"
    assert [predict_pb2.PredictRequest.FromString(p).model_spec.name for _, _, p in small.calls] == ["under"]


def test_port_in_use_fails_to_bind_unless_reuseport(backends):
    first = backends()
    second = backends(address=f"127.0.0.1:{first.port}")
    assert second.hello.startswith(b"0 ")
    assert second.process.wait(10) != 0
    shared = backends("--reuseport=1")
    assert backends("--reuseport=1", address=f"127.0.0.1:{shared.port}").port == shared.port


def test_bad_flag_exits_2():
    result = subprocess.run([str(BINARY), "--address=127.0.0.1:0", "--backend=/nonexistent", "--threads=zero"],
                            stderr=subprocess.PIPE, timeout=10)
    assert result.returncode == 2 and b"--threads" in result.stderr


def _delayed(backend_ref, delay_s=0.3):
    """Answers Predict "slow" after `delay_s` from a timer and never answers "never"; the rest at once."""
    def answer(call_id, method, payload):
        name = predict_pb2.PredictRequest.FromString(payload).model_spec.name if method == protocol.PREDICT else ""
        if name == "never":
            return None
        if name == "slow":
            frame = predict_answer(call_id, method, payload)
            threading.Timer(delay_s, lambda: backend_ref[0].send(frame)).start()
            return None
        return predict_answer(call_id, method, payload)
    return answer


@pytest.mark.parametrize("threads", [1, 2])
def test_shutdown_finishes_in_flight_calls_then_exits(backends, threads):
    ref = []
    backend = backends(f"--threads={threads}", answer=_delayed(ref))
    ref.append(backend)
    with backend.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(_request("warm"), timeout=10).model_spec.name == "warm"
        in_flight = stub.Predict.future(_request("slow"), timeout=10)
        backend.wait_for_calls(2)
        started = time.monotonic()
        backend.send(protocol.shutdown_frame(3))
        assert in_flight.result().model_spec.name == "slow"
        assert backend.process.wait(3 + 2) == 0
        assert 0.25 < time.monotonic() - started < 3 + 1
    with grpc.insecure_channel(f"127.0.0.1:{backend.port}") as channel, pytest.raises(grpc.RpcError) as err:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_request("late"), timeout=2)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@contextlib.contextmanager
def _call_left_unanswered(backends):
    """A front end with one call in flight that its backend never answers: (backend, the call's future)."""
    ref = []
    backend = backends(answer=_delayed(ref))
    ref.append(backend)
    with backend.channel() as channel:
        in_flight = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(_request("never"), timeout=20)
        backend.wait_for_calls(1)
        yield backend, in_flight


def test_shutdown_grace_ends_unanswered_calls(backends):
    with _call_left_unanswered(backends) as (backend, in_flight):
        started = time.monotonic()
        backend.send(protocol.shutdown_frame(0.5))
        assert backend.process.wait(10) == 0
        assert 0.4 < time.monotonic() - started < 3
        assert in_flight.exception(5).code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_eof_or_sigterm_exits_promptly(backends, how):
    with _call_left_unanswered(backends) as (backend, in_flight):
        started = time.monotonic()
        if how == "eof":
            backend.sock.shutdown(socket.SHUT_RDWR)
        else:
            backend.process.send_signal(signal.SIGTERM)
        assert backend.process.wait(10) == 0
        assert time.monotonic() - started < 1.5
        assert in_flight.exception(5).code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_answers_for_unknown_calls_are_ignored(backends):
    def answer(call_id, method, payload):  # every answer twice, after one for a call that never was
        frame = predict_answer(call_id, method, payload)
        return protocol.encode_answer(call_id + 10_000, 0, b"", b"stray") + frame + frame

    backend = backends(answer=answer)
    with backend.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for name in ("one", "two", "three"):
            assert stub.Predict(_request(name), timeout=10).model_spec.name == name
    assert backend.process.poll() is None


def test_malformed_answer_exits_1(backend):
    backend.send(b"\x05\x00\x00\x00" + b"\x00" * 5)
    assert backend.process.wait(10) == 1
    assert "malformed" in backend.stderr()
