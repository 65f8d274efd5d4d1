"""Acceptance 3: malformed requests get TF Serving's status code and a useful message; the server
keeps answering well-formed requests afterwards (gRPC and REST)."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, predict_pb2, regression_pb2)

from serving.util import tensors
from serving.client import ServingClient
from serving.model_servers.server import ServerOptions  # noqa: F401  (import check)
from serving_helpers import config_for, http, running_server

C = grpc.StatusCode


def _predict(model="default", signature="", version=None, label=None, inputs=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in (inputs if inputs is not None else {"x": np.array([[1.0]], np.float32)}).items():
        if isinstance(value, tensor_pb2.TensorProto):
            request.inputs[alias].CopyFrom(value)
        else:
            tensors.from_ndarray(value, request.inputs[alias])
    request.output_filter.extend(output_filter)
    return request


def _classify(signature, examples=1):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "default", signature
    for _ in range(examples):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    return request


def _short_tensor():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = 3
    proto.tensor_shape.dim.add().size = 1
    proto.tensor_content = np.array([1.0, 2.0], np.float32).tobytes()  # 8 bytes for 12
    return proto


def _not_examples():
    return np.array([b"\xff\xfe definitely not a tf.Example"], dtype=object)


def _regress_x2(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "default", "regress_x2_to_y3"
    request.input.example_list.examples.add()
    return stub.Regress(request)


def _metadata(fields):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = "default"
    return request


def _status(name, version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


# (case id, call(client) -> response, expected code, message fragment)
GRPC_CASES = [
    ("unknown model", lambda c: c.prediction.Predict(_predict(model="nope")), C.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", lambda c: c.prediction.Predict(_predict(version=7)), C.NOT_FOUND,
     "Servable not found for request: Specific(default, 7)"),
    ("unknown version label", lambda c: c.prediction.Predict(_predict(label="gold")), C.INVALID_ARGUMENT,
     "Unrecognized servable version label: gold"),
    ("unknown signature", lambda c: c.prediction.Predict(_predict(signature="nope")), C.FAILED_PRECONDITION,
     'Serving signature key "nope" not found'),
    ("unknown input key", lambda c: c.prediction.Predict(_predict(inputs={"x": np.ones((1, 1), np.float32),
                                                                          "bogus": np.ones(1, np.float32)})),
     C.INVALID_ARGUMENT, "Sent extra: {bogus}"),
    ("missing input", lambda c: c.prediction.Predict(_predict(inputs={})), C.INVALID_ARGUMENT,
     "Missing but required: {x}"),
    ("wrong dtype", lambda c: c.prediction.Predict(_predict(inputs={"x": np.array([["a"]], dtype=object)})),
     C.INVALID_ARGUMENT, "to be float but string is provided"),
    ("tensor_content of the wrong length", lambda c: c.prediction.Predict(_predict(inputs={"x": _short_tensor()})),
     C.INVALID_ARGUMENT, "tensor parsing error: x"),
    ("unparsable tf.Example", lambda c: c.prediction.Predict(_predict(model="taxi", inputs={"examples": _not_examples()})),
     C.INVALID_ARGUMENT, "Could not parse example input"),
    ("unknown output filter", lambda c: c.prediction.Predict(_predict(output_filter=["z"])), C.INVALID_ARGUMENT,
     "output tensor alias not found in signature: z"),
    ("missing model spec", lambda c: c.prediction.Predict(predict_pb2.PredictRequest()), C.INVALID_ARGUMENT,
     "Missing ModelSpec"),
    ("classify on a predict signature", lambda c: c.prediction.Classify(_classify("serving_default")),
     C.INVALID_ARGUMENT, "No classification inputs found in SignatureDef"),
    ("classify with no examples", lambda c: c.prediction.Classify(_classify("classify_x_to_y", examples=0)),
     C.INVALID_ARGUMENT, "Input is empty"),
    ("regress signature without string input", lambda c: _regress_x2(c.prediction), C.INVALID_ARGUMENT,
     "Expects arg[0] to be float but string is provided"),
    ("metadata without field", lambda c: c.prediction.GetModelMetadata(_metadata([])), C.INVALID_ARGUMENT,
     "must specify at least one metadata_field"),
    ("metadata unsupported field", lambda c: c.prediction.GetModelMetadata(_metadata(["graph"])),
     C.INVALID_ARGUMENT, "Metadata field graph is not supported"),
    ("status of unknown model", lambda c: c.models.GetModelStatus(_status("nope")), C.NOT_FOUND,
     "Could not find any versions of model nope"),
    ("status of unknown version", lambda c: c.models.GetModelStatus(_status("default", 9)), C.NOT_FOUND,
     "Could not find version 9 of model default"),
]


@pytest.fixture(scope="module")
def server(testdata, tmp_path_factory):
    from serving.testing.sample_models import export_taxi_like_model

    taxi = tmp_path_factory.mktemp("errors") / "taxi"
    export_taxi_like_model(str(taxi / "1"))
    config = config_for(default=str(testdata / "saved_model_half_plus_two_cpu"), taxi=str(taxi))
    with running_server(config, wait_for=["default", "taxi"]) as srv:
        yield srv


def _assert_still_serving(server):
    with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        out, _ = client.predict("default", {"x": np.array([[4.0]], np.float32)})
        assert out["y"].tolist() == [[4.0]]
    assert http(server.rest_port, "/v1/models/default:predict", {"instances": [[4.0]]}) == (200, {"predictions": [[4.0]]})


@pytest.mark.parametrize("case,call,code,fragment", GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_malformed_request(server, case, call, code, fragment):
    with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        with pytest.raises(grpc.RpcError) as err:
            call(client)
    assert err.value.code() == code, err.value.details()
    assert fragment in err.value.details()
    _assert_still_serving(server)


def test_reload_with_label_on_unloaded_version_is_failed_precondition(server, testdata):
    with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        request = model_management_pb2.ReloadConfigRequest()
        model = request.config.model_config_list.config.add(name="default", model_platform="tensorflow",
                                                            base_path=str(testdata / "saved_model_half_plus_two_cpu"))
        model.version_labels["stable"] = 99
        with pytest.raises(grpc.RpcError) as err:
            client.models.HandleReloadConfigRequest(request)
    assert err.value.code() == C.FAILED_PRECONDITION
    assert "version 99 of model default" in err.value.details()
    _assert_still_serving(server)


REST_CASES = [
    ("POST", "/v1/models/nope:predict", {"instances": [[1.0]]}, 404, "Servable not found"),
    ("POST", "/v1/models/default/versions/abc:predict", {"instances": [[1.0]]}, 400, "Malformed request"),
    ("POST", "/v1/models/default:predict", None, 400, "JSON Parse error"),
    ("POST", "/v1/models/default:predict", {"instances": [[1.0], [1.0, 2.0]]}, 400, "Expecting tensor size: 1 but got: 2"),
    ("POST", "/v1/models/default:predict", {"instances": [["a"]]}, 400, "is not of expected type: float"),
    ("POST", "/v1/models/default:predict", {"nothing": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/default:predict", {"instances": [[1.0]], "inputs": [[1.0]]}, 400,
     "expecting only one of 'inputs' or 'instances' keys"),
    ("POST", "/v1/models/default:predict", {"instances": [{"x": [1.0], "bogus": [1]}]}, 400,
     "does not have named input: bogus"),
    ("POST", "/v1/models/taxi:predict", {"instances": [{"b64": "%%%"}]}, 400, "Unable to base64 decode"),
    ("POST", "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": []}, 400,
     "'examples' value is an empty array"),
    ("POST", "/v1/models/default:explode", {}, 400, "Malformed request"),
    ("GET", "/v2/whatever", None, 404, "Malformed request"),
]


@pytest.mark.parametrize("method,path,body,status,fragment", REST_CASES,
                         ids=[f"{c[0]} {c[1]} {c[4]}" for c in REST_CASES])
def test_rest_malformed_request(server, method, path, body, status, fragment):
    raw = b"{not json" if (method == "POST" and body is None) else None
    got_status, got = http(server.rest_port, path, body, raw=raw) if method == "POST" else http(server.rest_port, path)
    assert got_status == status, got
    assert fragment in got["error"]
    _assert_still_serving(server)


def test_grpc_message_size_limit(testdata):
    config = config_for(default=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["default"], max_message_bytes=4096) as srv, \
            ServingClient(f"127.0.0.1:{srv.grpc_port}") as client:
        with pytest.raises(grpc.RpcError) as err:
            client.predict("default", {"x": np.ones((4096, 1), np.float32)})
        assert err.value.code() == C.RESOURCE_EXHAUSTED
        assert client.predict("default", {"x": np.ones((2, 1), np.float32)})[0]["y"].tolist() == [[2.5], [2.5]]
