"""The compiled gRPC front end (`--grpc_compiled`, serving.model_servers.compiled_frontend): the same
answers and status codes as the Python front ends, batched requests merge into shared runs, the
server keeps serving after errors, and it stops cleanly.

SERVING_TEST_GRPC_COMPILED=1 runs the whole serving suite on it; the front end's transport alone
(the frames, concurrency, limits, shutdown) is tested in test_grpc_frontend.py."""
from __future__ import annotations

import dataclasses
import os
import socket

import grpc
import numpy as np
import pytest

from serving.batching.batcher import BatchingOptions
from serving.model_servers.compiled_frontend import frontend_binary

pytestmark = pytest.mark.skipif(frontend_binary() is None,
                                reason="compiled gRPC front end not built (make grpc-frontend-tools grpc-frontend)")


def _predict_request(name, values, signature=""):
    from tensorflow_serving.apis import predict_pb2

    from serving.util import tensors

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    for alias, value in values.items():
        tensors.from_ndarray(np.asarray(value), request.inputs[alias])
    return request


def _spec(name):
    from tensorflow_serving.apis import model_pb2

    return model_pb2.ModelSpec(name=name)


def test_compiled_batched_answers_exactly_as_thread_front_end_and_merges_runs(taxi_like_base):
    """48 requests sent at once: each answer equals the thread-pool front end's, and they ran in
    shared Session runs of at most max_batch_size (what arrived while a batch ran is the next batch)."""
    from concurrent import futures

    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs
    from serving.util import tensors
    from serving_helpers import config_for, counting_batches, running_server, taxi_rows

    config = config_for(taxi=str(taxi_like_base / "taxi"))
    rows = taxi_rows(48)
    with running_server(config, wait_for=["taxi"], grpc_aio=False, grpc_compiled=False) as plain, \
            ServingClient(f"127.0.0.1:{plain.grpc_port}") as c:
        defs = c.signature_defs("taxi")
        inputs = [rows_to_inputs([r], defs["serving_default"], raw_input_dtypes(defs)) for r in rows]
        expected = [c.predict("taxi", i)[0]["probabilities"] for i in inputs]
    options = BatchingOptions(max_batch_size=16, num_batch_threads=1)
    with running_server(config, wait_for=["taxi"], batching=options, grpc_compiled=True) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        assert server.front_end == "compiled"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with counting_batches(server, "taxi") as sizes, futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: stub.Predict(_predict_request("taxi", i), timeout=60), inputs))
    for want, have in zip(expected, answers):
        np.testing.assert_allclose(tensors.to_ndarray(have.outputs["probabilities"]), want, atol=1e-6, rtol=0)
    assert sum(sizes) == len(rows)
    assert len(sizes) < len(rows) and max(sizes) <= 16  # shared runs, never above max_batch_size


@pytest.mark.parametrize("batching", [None, BatchingOptions(max_batch_size=4, num_batch_threads=1)])
def test_compiled_errors_are_tf_serving_codes_and_server_keeps_serving(testdata, batching):
    """predict_util.cc: an unknown signature is FAILED_PRECONDITION, a wrong input name
    INVALID_ARGUMENT; server_core.cc: an unknown model NOT_FOUND, no name INVALID_ARGUMENT; bytes
    that are no PredictRequest INTERNAL (as gRPC servers answer a request they cannot deserialize);
    a method the server does not have UNIMPLEMENTED. half_plus_two (tensorflow_model_server_test.py
    testPredict) answers 3.0 for 2.0 after each."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.util import tensors
    from serving_helpers import config_for, running_server

    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["half"], batching=batching, grpc_compiled=True) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        good = _predict_request("half", {"x": np.array([2.0], np.float32)})
        cases = [(lambda: stub.Predict(_predict_request("half", {"x": np.array([2.0], np.float32)}, "nope"), timeout=30),
                  grpc.StatusCode.FAILED_PRECONDITION),
                 (lambda: stub.Predict(_predict_request("half", {"y": np.array([2.0], np.float32)}), timeout=30),
                  grpc.StatusCode.INVALID_ARGUMENT),
                 (lambda: stub.Predict(_predict_request("other", {"x": np.array([2.0], np.float32)}), timeout=30),
                  grpc.StatusCode.NOT_FOUND),
                 (lambda: stub.Predict(_predict_request("", {"x": np.array([2.0], np.float32)}), timeout=30),
                  grpc.StatusCode.INVALID_ARGUMENT),
                 (lambda: raw_predict(b"\xff\xff\xff", timeout=30), grpc.StatusCode.INTERNAL),
                 (lambda: channel.unary_unary("/tensorflow.serving.PredictionService/Nope")(b"", timeout=30),
                  grpc.StatusCode.UNIMPLEMENTED)]
        for call, code in cases:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == code, (code, err.value.details())
            assert "Traceback" not in (err.value.details() or "")
            answer = stub.Predict(good, timeout=30)
            assert tensors.to_ndarray(answer.outputs["y"]).tolist() == [3.0]


def test_compiled_other_methods_and_metrics(testdata):
    """Classify, GetModelMetadata and GetModelStatus run their handlers in worker threads; the
    request metrics count Predict and Classify by status as TF Serving names them."""
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                         model_service_pb2_grpc, prediction_service_pb2_grpc)

    from serving_helpers import config_for, running_server

    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["half"], grpc_compiled=True,
                        prometheus_path="/monitoring/prometheus/metrics") as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec=_spec("half")), timeout=30)
        assert [s.state for s in status.model_version_status] == [get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        metadata = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_spec("half"), metadata_field=["signature_def"]), timeout=30)
        assert metadata.model_spec.name == "half"
        request = classification_pb2.ClassificationRequest(model_spec=_spec("half"))
        request.model_spec.signature_name = "classify_x_to_y"
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
        assert stub.Classify(request, timeout=30).result.classifications[0].classes[0].score == pytest.approx(3.0)
        stub.Predict(_predict_request("half", {"x": np.array([2.0], np.float32)}), timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.Predict(_predict_request("half", {"x": np.array([2.0], np.float32)}, "nope"), timeout=30)
        text = server.metrics.render()
    assert ':tensorflow:serving:request_count{model_name="half",status="OK"} 2' in text
    assert ':tensorflow:serving:request_count{model_name="half",status="FAILED_PRECONDITION"} 1' in text


def test_compiled_front_end_is_the_default_when_built_and_says_why_when_not(testdata, monkeypatch):
    from serving.model_servers.front_end import choose_front_end
    from serving.model_servers.server_options import ServerOptions, TlsConfig
    from serving.util.errors import ServerConfigError
    from serving_helpers import config_for

    options = ServerOptions(config=config_for(half=str(testdata / "saved_model_half_plus_two_cpu")))
    assert choose_front_end(options) == "compiled"
    assert choose_front_end(dataclasses.replace(options, grpc_aio=False)) == "threads"
    tls = TlsConfig(server_key=b"k", server_cert=b"c")
    assert choose_front_end(dataclasses.replace(options, tls=tls)) == "aio"
    with pytest.raises(ServerConfigError, match="without TLS"):
        choose_front_end(dataclasses.replace(options, tls=tls, grpc_compiled=True))
    monkeypatch.setenv("SERVING_GRPC_FRONTEND", "/nonexistent/grpc_frontend")
    assert choose_front_end(options) == "aio"
    with pytest.raises(ServerConfigError, match="make grpc-frontend"):
        choose_front_end(dataclasses.replace(options, grpc_compiled=True))


def test_compiled_server_stops_its_front_end_and_frees_the_port(testdata):
    from serving_helpers import config_for, running_server

    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["half"], grpc_compiled=True) as server:
        port = server.grpc_port
        process = server._grpc._process  # pylint: disable=protected-access
        assert process.poll() is None
    assert process.poll() == 0  # it finished its shutdown, not killed
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nothing listens any more


def test_compiled_server_reports_a_port_in_use(testdata):
    from serving_helpers import config_for, running_server

    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError, match="cannot listen for gRPC"):
            with running_server(config, grpc_port=taken.getsockname()[1], grpc_compiled=True):
                pass


def test_front_end_binary_env_points_at_another_build(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVING_GRPC_FRONTEND", str(tmp_path / "missing"))
    assert frontend_binary() is None
    built = frontend_binary.__globals__["BUILT_BINARY"]
    monkeypatch.setenv("SERVING_GRPC_FRONTEND", str(built))
    assert frontend_binary() == str(built) and os.access(str(built), os.X_OK)


def test_a_front_end_that_cannot_start_falls_back_to_grpc_aio_unless_required(testdata, monkeypatch, tmp_path):
    """A built front end whose gRPC C++ libraries are gone (the loader exits 127) must not take the server
    down when nobody asked for it: auto serves on grpc.aio; --grpc_compiled=true fails with the reason."""
    from serving.model_servers.compiled_frontend import FrontEndDidNotStart
    from serving.util import tensors
    from serving_helpers import config_for, running_server

    broken = tmp_path / "grpc_frontend"
    broken.write_text("#!/bin/sh\nexit 127\n")
    broken.chmod(0o755)
    monkeypatch.setenv("SERVING_GRPC_FRONTEND", str(broken))
    config = config_for(half=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["half"], grpc_compiled=None) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        assert server.front_end == "aio"
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            _predict_request("half", {"x": np.array([2.0], np.float32)}), timeout=30)
        assert tensors.to_ndarray(answer.outputs["y"]).tolist() == [3.0]
    with pytest.raises(FrontEndDidNotStart, match="exit code 127"):
        with running_server(config, grpc_compiled=True):
            pass
