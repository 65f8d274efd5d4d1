"""Acceptance 1: the server returns exactly what the SavedModel computes, over gRPC and REST.

Against the pipeline's real exported taxi model (when `taxi_serving_base` is provided) and a
taxi-like export made here; Classify/Regress/MultiInference on a model with those signatures;
GetModelStatus/GetModelMetadata; and TF Serving's own test SavedModels, whose metadata must match
the answers real TF Serving gives (the JSON files beside them).
"""
from __future__ import annotations

import base64
import json

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2,
                                     regression_pb2)

from serving.config import model_config
from serving.util import tensors
from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs
from serving_helpers import config_for, http, running_server, taxi_rows

ATOL = 1e-6


def _in_process(version_path, signature, inputs):
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_path)).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def _filled_rows(rows, dtypes):
    """Rows with every raw column present (empty cells get the dtype's zero), for serving_raw."""
    from tensorflow.core.framework import types_pb2

    zero = {types_pb2.DT_STRING: ""}
    return [{c: (r.get(c) if str(r.get(c, "")).strip() != "" else zero.get(dt, "0")) for c, dt in dtypes.items()}
            for r in rows]


def test_taxi_predictions_equal_in_process_signature_over_grpc_and_rest(taxi_base):
    base = taxi_base / "taxi"
    versions = model_config.versions_on_disk(str(base))
    version = max(versions)
    with running_server(config_for(taxi=str(base)), wait_for=["taxi"]) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        defs = client.signature_defs("taxi")
        assert {"serving_default", "serving_raw"} <= set(defs)
        raw = raw_input_dtypes(defs)
        rows = taxi_rows(8)

        # serving_default: serialized tf.Examples.
        inputs = rows_to_inputs(rows, defs["serving_default"], raw)
        outputs, response = client.predict("taxi", inputs)
        assert response.model_spec.name == "taxi"
        assert response.model_spec.version.value == version
        assert response.model_spec.signature_name == "serving_default"
        expected = _in_process(versions[version], "serving_default", inputs)
        assert set(outputs) == set(expected) and "probabilities" in outputs
        assert outputs["probabilities"].shape == (8, 1)
        for key in expected:
            np.testing.assert_allclose(outputs[key], expected[key], atol=ATOL, rtol=0)

        # REST row format with {"b64": ...} answers exactly what gRPC answered.
        instances = [{"b64": base64.b64encode(s).decode()} for s in inputs["examples"]]
        status, body = http(server.rest_port, "/v1/models/taxi:predict", {"instances": instances})
        assert status == 200, body
        np.testing.assert_array_equal(np.array(body["predictions"], np.float32), outputs["probabilities"])

        # serving_raw: one tensor per raw feature, gRPC and REST columnar format.
        full = _filled_rows(taxi_rows(4), raw)
        raw_inputs = rows_to_inputs(full, defs["serving_raw"], raw)
        raw_out, _ = client.predict("taxi", raw_inputs, signature="serving_raw")
        raw_expected = _in_process(versions[version], "serving_raw", raw_inputs)
        np.testing.assert_allclose(raw_out["probabilities"], raw_expected["probabilities"], atol=ATOL, rtol=0)
        columns = {k: [v.decode() if isinstance(v, bytes) else v for v in a.tolist()] for k, a in raw_inputs.items()}
        status, body = http(server.rest_port, "/v1/models/taxi/versions/%d:predict" % version,
                            {"signature_name": "serving_raw", "inputs": columns})
        assert status == 200, body
        np.testing.assert_array_equal(np.array(body["outputs"], np.float32), raw_out["probabilities"])


def test_status_and_metadata_over_grpc_and_rest(taxi_like_base):
    from tensorflow.python.saved_model import loader_impl

    base = taxi_like_base / "taxi"
    with running_server(config_for(taxi=str(base)), wait_for=["taxi"]) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        statuses = client.status("taxi")
        assert [(s.version, s.state, s.status.error_code) for s in statuses] == [(1, 30, 0)]
        status, body = http(server.rest_port, "/v1/models/taxi")
        assert status == 200
        assert body == {"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "taxi"
        response = client.prediction.GetModelMetadata(request)
        assert response.model_spec.version.value == 1
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        on_disk = loader_impl.parse_saved_model(str(base / "1")).meta_graphs[0].signature_def
        assert dict(sig_map.signature_def) == dict(on_disk)
        status, body = http(server.rest_port, "/v1/models/taxi/versions/1/metadata")
        assert status == 200
        grpc_as_json = json_format.MessageToDict(sig_map, preserving_proto_field_name=True,
                                                 including_default_value_fields=True)
        assert body["metadata"]["signature_def"] == grpc_as_json
        assert body["model_spec"] == {"name": "taxi", "signature_name": "", "version": "1"}


def _examples(values, context=None):
    request_input = classification_pb2.ClassificationRequest().input
    target = request_input.example_list_with_context if context is not None else request_input.example_list
    if context is not None:
        target.context.features.feature["x"].float_list.value.append(context)
    for v in values:
        example = target.examples.add()
        if v is not None:
            example.features.feature["x"].float_list.value.append(v)
    return request_input


def test_classify_regress_and_multi_inference(classify_regress_base):
    xs = [0.5, -1.0, 3.0]
    y = 2.0 * np.array(xs, np.float32) - 1.0
    p = 1.0 / (1.0 + np.exp(-y.astype(np.float64)))
    with running_server(config_for(cr=str(classify_regress_base / "cr")), wait_for=["cr"]) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        request = regression_pb2.RegressionRequest(input=_examples(xs))
        request.model_spec.name, request.model_spec.signature_name = "cr", "regress"
        regression = client.prediction.Regress(request)
        got = [r.value for r in regression.result.regressions]
        np.testing.assert_allclose(got, y, atol=ATOL, rtol=0)
        assert regression.model_spec.signature_name == "regress" and regression.model_spec.version.value == 1

        request = classification_pb2.ClassificationRequest(input=_examples(xs))
        request.model_spec.name, request.model_spec.signature_name = "cr", "classify"
        classification = client.prediction.Classify(request)
        for row, prob in zip(classification.result.classifications, p):
            assert [c.label for c in row.classes] == ["yes", "no"]
            np.testing.assert_allclose([c.score for c in row.classes], [prob, 1 - prob], atol=ATOL, rtol=0)

        # Predict with and without output_filter (TF Serving's way to fetch a subset of outputs).
        x = np.array([[v] for v in xs], np.float32)
        both, _ = client.predict("cr", {"x": x})
        assert set(both) == {"y", "p"}
        np.testing.assert_allclose(both["y"][:, 0], y, atol=ATOL, rtol=0)
        only_p, _ = client.predict("cr", {"x": x}, output_filter=["p"])
        assert set(only_p) == {"p"}
        np.testing.assert_allclose(only_p["p"][:, 0], p, atol=ATOL, rtol=0)

        # Context features fill what the examples lack (ExampleListWithContext).
        request = regression_pb2.RegressionRequest(input=_examples([None, 1.0], context=4.0))
        request.model_spec.name, request.model_spec.signature_name = "cr", "regress"
        assert [r.value for r in client.prediction.Regress(request).result.regressions] == [7.0, 1.0]

        # MultiInference: both signatures over the same examples, same answers.
        multi = inference_pb2.MultiInferenceRequest(input=_examples(xs))
        for signature, method in (("classify", "tensorflow/serving/classify"),
                                  ("regress", "tensorflow/serving/regress")):
            task = multi.tasks.add(method_name=method)
            task.model_spec.name, task.model_spec.signature_name = "cr", signature
        results = client.prediction.MultiInference(multi).results
        assert results[0].classification_result == classification.result
        assert results[1].regression_result == regression.result

        # REST :classify / :regress answer what gRPC answered.
        examples = [{"x": v} for v in xs]
        status, body = http(server.rest_port, "/v1/models/cr:regress", {"signature_name": "regress",
                                                                         "examples": examples})
        assert status == 200, body
        assert np.array(body["results"], np.float32).tolist() == np.array(got, np.float32).tolist()
        status, body = http(server.rest_port, "/v1/models/cr:classify", {"signature_name": "classify",
                                                                          "examples": examples})
        assert status == 200, body
        assert [[[label, np.float32(score)] for label, score in row] for row in body["results"]] == \
            [[[c.label, np.float32(c.score)] for c in row.classes] for row in classification.result.classifications]


def test_tf_serving_test_models_serve_as_tf_serving_does(testdata):
    config = config_for(default=str(testdata / "saved_model_half_plus_two_cpu"),
                        tf2=str(testdata / "saved_model_half_plus_two_tf2_cpu"),
                        counter=str(testdata / "saved_model_counter"),
                        three=str(testdata / "saved_model_half_plus_three"))
    with running_server(config, wait_for=["default", "tf2", "counter", "three"]) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        # Metadata exactly as real TF Serving answers for this model (the reference JSON).
        status, body = http(server.rest_port, "/v1/models/default/metadata")
        assert status == 200
        assert body == json.loads((testdata / "half_plus_two_model_metadata.json").read_text())

        x = np.array([[1.0], [2.0], [5.0]], np.float32)
        out, response = client.predict("default", {"x": x})
        np.testing.assert_array_equal(out["y"], 0.5 * x + 2)
        assert response.model_spec.version.value == 123
        out, _ = client.predict("three", {"x": x})
        np.testing.assert_array_equal(out["y"], 0.5 * x + 3)
        out, _ = client.predict("tf2", {"x": np.array([4.0], np.float32)})
        np.testing.assert_array_equal(out["y"], [4.0])
        # TF1 classify/regress signatures of half_plus_two.
        request = regression_pb2.RegressionRequest(input=_examples([1.0, 4.0]))
        request.model_spec.name, request.model_spec.signature_name = "default", "regress_x_to_y"
        assert [r.value for r in client.prediction.Regress(request).result.regressions] == [2.5, 4.0]

        # Stateful TF1 reference variables (saved_model_counter) keep their state across requests.
        def counter(signature, **inputs):
            return float(client.predict("counter", inputs, signature=signature)[0]["output"])

        assert counter("reset_counter") == 0.0
        assert [counter("incr_counter") for _ in range(3)] == [1.0, 2.0, 3.0]
        assert counter("incr_counter_by", delta=np.array(10.0, np.float32)) == 13.0
        assert counter("get_counter") == 13.0


def test_version_policy_labels_and_reload(testdata):
    from tensorflow_serving.apis import model_management_pb2

    base = testdata / "saved_model_half_plus_two_2_versions"
    config = model_config.parse_config_text(f"""model_config_list {{ config {{
        name: "hp" base_path: "{base}" model_platform: "tensorflow"
        model_version_policy {{ all {{}} }} }} }}""")
    with running_server(config, wait_for=["hp"]) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        assert server.manager.wait_until_available("hp", 60, version=123)
        assert server.manager.wait_until_available("hp", 60, version=124)
        assert sorted(s.version for s in client.status("hp")) == [123, 124]
        assert client.predict("hp", {"x": np.array([[1.0]], np.float32)})[1].model_spec.version.value == 124
        assert client.predict("hp", {"x": np.array([[1.0]], np.float32)}, version=123)[1] \
            .model_spec.version.value == 123

        # Labels through HandleReloadConfigRequest, then requests by label (gRPC and REST).
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.CopyFrom(config)
        reload.config.model_config_list.config[0].version_labels["stable"] = 123
        reload.config.model_config_list.config[0].version_labels["canary"] = 124
        client.models.HandleReloadConfigRequest(reload)
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.version_label = "hp", "stable"
        tensors.from_ndarray(np.array([[1.0]], np.float32), request.inputs["x"])
        assert client.prediction.Predict(request).model_spec.version.value == 123
        status, body = http(server.rest_port, "/v1/models/hp/labels/canary:predict", {"instances": [[1.0]]})
        assert (status, body) == (200, {"predictions": [[2.5]]})

        # A policy change to version 123 only unloads 124.
        reload.config.model_config_list.config[0].model_version_policy.specific.versions.append(123)
        del reload.config.model_config_list.config[0].version_labels["canary"]
        client.models.HandleReloadConfigRequest(reload)
        with pytest.raises(grpc.RpcError) as err:
            for _ in range(100):  # unloading happens in the background
                client.predict("hp", {"x": np.array([[1.0]], np.float32)}, version=124)
                import time

                time.sleep(0.05)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.predict("hp", {"x": np.array([[1.0]], np.float32)})[1].model_spec.version.value == 123

        # Back to the latest version: the unloaded 124 loads again and serves.
        reload.config.model_config_list.config[0].ClearField("model_version_policy")
        del reload.config.model_config_list.config[0].version_labels["stable"]
        client.models.HandleReloadConfigRequest(reload)
        assert server.manager.wait_until_available("hp", 60, version=124)
        assert client.predict("hp", {"x": np.array([[1.0]], np.float32)})[1].model_spec.version.value == 124
