"""The stand-in answers as TF Serving answers, on TF Serving's own test SavedModels.

Each test names the TF Serving file (tensorflow/serving, `tensorflow_serving/...`) and, where
there is one, the test there that pins the behaviour: status code and the message's shape. After
every refused request the server must still answer a good one (`_still_serving`).
"""
from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, predict_pb2, prediction_service_pb2_grpc,
                                     model_service_pb2_grpc, regression_pb2)

from serving_helpers import config_for, http, running_server

C = grpc.StatusCode
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def server(tf_serving_testdata):
    d = tf_serving_testdata
    config = config_for(default=str(d / "saved_model_half_plus_two_cpu"),
                        two=str(d / "saved_model_half_plus_two_2_versions"),
                        tf2=str(d / "saved_model_half_plus_two_tf2_cpu"),
                        three=str(d / "saved_model_half_plus_three"),
                        counter=str(d / "saved_model_counter"))
    with running_server(config, wait_for=["default", "two", "tf2", "three", "counter"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


@pytest.fixture
def stub(stubs):
    return stubs[0]


def _x(values=(2.0,), shape=(1,), dtype=types_pb2.DT_FLOAT):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    if dtype == types_pb2.DT_FLOAT:
        proto.float_val.extend(values)
    elif dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(values)
    elif dtype == types_pb2.DT_STRING:
        proto.string_val.extend(values)
    return proto


def _predict_request(model="default", signature="serving_default", inputs=None, output_filter=(), version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for alias, proto in (inputs if inputs is not None else {"x": _x()}).items():
        request.inputs[alias].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def _examples(target, *xs):
    for x in xs:
        target.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return target


def _classify_request(model="default", signature="classify_x_to_y", xs=(2.0,)):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    _examples(request.input, *xs)
    return request


def _regress_request(model="default", signature="regress_x_to_y", xs=(2.0,)):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    _examples(request.input, *xs)
    return request


def _multi_request(model="default", tasks=(("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)), xs=(2.0,)):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = model, signature
    _examples(request.input, *xs)
    return request


def _still_serving(server, stub):
    """A good request right after a refused one, over gRPC and REST."""
    result = stub.Predict(_predict_request(), 20)
    assert list(result.outputs["y"].float_val) == [3.0]
    assert http(server.rest_port, "/v1/models/default:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})


def _refused(call, code, *fragments):
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    for fragment in fragments:
        assert fragment in err.value.details(), err.value.details()
    for python_text in ("Traceback", "Error:", "Exception"):
        assert python_text not in err.value.details()
    return err.value.details()


# --- Predict -------------------------------------------------------------------------------------

def test_predict_does_not_check_shapes(server, stub):
    """tensorflow_model_server_test.py testPredictSavedModel (test_util/tensorflow_model_server_test_base.py
    VerifyPredictRequest): x of shape [1] for the [-1, 1] signature gives y = [3.0], with and without
    output_filter, and with batch_input's [1, 1]; the response names model, signature, version."""
    for output_filter in (["y"], []):
        for shape in ((1,), (1, 1)):
            result = stub.Predict(_predict_request(inputs={"x": _x(shape=shape)}, output_filter=output_filter), 20)
            assert "y" in result.outputs
            assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
            assert list(result.outputs["y"].float_val) == [3.0]
            assert [d.size for d in result.outputs["y"].tensor_shape.dim] == list(shape)
            assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == \
                ("default", "serving_default", 123)
    # half_plus_three (an old TF1 export with no shapes at all) the same way (testGoodModelConfig).
    assert list(stub.Predict(_predict_request(model="three"), 20).outputs["y"].float_val) == [4.0]


def test_predict_scalar_input_gives_scalar_output(server, stub):
    """predict_impl_test.cc PredictionSuccess: x = 2.0 with no shape (a scalar) answers y = 3 as a
    scalar (empty tensor_shape), model_spec with signature_name serving_default."""
    request = _predict_request(signature="", inputs={"x": _x(shape=())}, version=123)
    result = stub.Predict(request, 20)
    expected = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[3.0])
    expected.tensor_shape.SetInParent()
    assert result.outputs["y"] == expected
    assert result.model_spec.signature_name == "serving_default"


def test_predict_on_regress_and_classify_signatures(server, stub):
    """predict_impl_test.cc PredictionWithNamedRegressionSignature / PredictionWithNamedClassificationSignature:
    Predict runs regress and classify signatures too (x2_to_y3: 0.5 * 2 + 3 = 4)."""
    result = stub.Predict(_predict_request(model="two", signature="regress_x2_to_y3", inputs={"inputs": _x(shape=())}))
    assert list(result.outputs["outputs"].float_val) == [4.0]
    assert result.model_spec.signature_name == "regress_x2_to_y3"
    result = stub.Predict(_predict_request(model="two", signature="classify_x2_to_y3", inputs={"inputs": _x(shape=())}))
    assert list(result.outputs["scores"].float_val) == [4.0]


def test_predict_stateful_counter_signatures(server, stub):
    """predict_impl_test.cc PredictionWithCustomizedSignatures on saved_model_counter: signatures with
    no inputs; get 0, incr 1, reset 0, incr (output_filter) 1, incr_counter_by(3) 4."""
    def call(signature, inputs=None, output_filter=()):
        result = stub.Predict(_predict_request(model="counter", signature=signature, inputs=inputs or {},
                                               output_filter=output_filter), 20)
        assert result.model_spec.signature_name == signature
        return list(result.outputs["output"].float_val), [d.size for d in result.outputs["output"].tensor_shape.dim]

    assert call("get_counter") == ([0.0], [])
    assert call("incr_counter") == ([1.0], [])
    assert call("reset_counter") == ([0.0], [])
    assert call("incr_counter", output_filter=["output"]) == ([1.0], [])
    assert call("incr_counter_by", inputs={"delta": _x([3.0], shape=())}) == ([4.0], [])


def test_predict_input_names_and_values(server, stub):
    """predict_util.cc VerifyRequestInputsSize and tensorflow/cc/saved_model/util.cc GetInputValues
    (predict_util_test.cc EmptyInputList, InputTensorsDontMatchModelSpecInputs; predict_impl_test.cc
    InputTensorsDontMatchModelSpecInputs): all INVALID_ARGUMENT."""
    _refused(lambda: stub.Predict(_predict_request(inputs={})), C.INVALID_ARGUMENT,
             "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
             "Missing but required: {x}.")
    _still_serving(server, stub)
    string = _x([b"any_value"], dtype=types_pb2.DT_STRING)
    _refused(lambda: stub.Predict(_predict_request(inputs={"unknown_key1": string, "unknown_key2": _x()})),
             C.INVALID_ARGUMENT, "Sent extra: {unknown_key1,unknown_key2}", "Missing but required: {x}")
    _still_serving(server, stub)
    _refused(lambda: stub.Predict(_predict_request(inputs={"key": string})), C.INVALID_ARGUMENT,
             "Signature input alias: x(feed name: x:0) not found in request and no default value provided. "
             "Inputs expected to be in the request {key}, or default input alias set: ")
    _still_serving(server, stub)


def test_predict_dtypes(server, stub):
    """predict_util_test.cc PredictionInvalidTensor and InputTensorsHaveWrongType: a wrong dtype is
    INVALID_ARGUMENT in TF's Session words."""
    _refused(lambda: stub.Predict(_predict_request(inputs={"x": _x([True], shape=(), dtype=types_pb2.DT_BOOL)})),
             C.INVALID_ARGUMENT, "Expects arg[0] to be float but bool is provided")
    _still_serving(server, stub)
    _refused(lambda: stub.Predict(_predict_request(inputs={"x": _x([b"any_value"], dtype=types_pb2.DT_STRING)},
                                                   output_filter=["y"])),
             C.INVALID_ARGUMENT, "to be float but string is provided")
    _still_serving(server, stub)


def test_predict_output_filter(server, stub):
    """predict_util_test.cc OutputFiltersDontMatchModelSpecOutputs."""
    _refused(lambda: stub.Predict(_predict_request(output_filter=["output_filter"])), C.INVALID_ARGUMENT,
             "output tensor alias not found in signature: output_filter Outputs expected to be in the set {y}.")
    _still_serving(server, stub)
    _refused(lambda: stub.Predict(_predict_request(output_filter=["y", "y"])), C.INVALID_ARGUMENT,
             "duplicate output tensor alias: y")
    _still_serving(server, stub)


def test_tensor_protos_decode_as_tensorflow_does(server, stub):
    """GetInputValues (tensorflow/cc/saved_model/util.cc) decodes with Tensor::FromProto
    (tensorflow/core/framework/tensor.cc): fewer *_val values than the shape are padded with the
    last one, more are cut; what FromProto refuses -- a tensor_content whose length is not the
    shape's bytes, DT_INVALID, a negative dimension -- is INVALID_ARGUMENT "tensor parsing error: x",
    never INTERNAL and never a Python exception's text."""
    result = stub.Predict(_predict_request(inputs={"x": _x([1.0, 2.0], shape=(3,))}))
    assert list(result.outputs["y"].float_val) == [2.5, 3.0, 3.0]
    result = stub.Predict(_predict_request(inputs={"x": _x([1.0, 2.0, 4.0], shape=(2,))}))
    assert list(result.outputs["y"].float_val) == [2.5, 3.0]
    result = stub.Predict(_predict_request(inputs={"x": _x([], shape=(2,))}))
    assert list(result.outputs["y"].float_val) == [2.0, 2.0]

    for nbytes in (3, 5, 6, 7):  # float32 is 4 bytes; a [1] tensor needs exactly 4
        bad = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * nbytes)
        bad.tensor_shape.dim.add().size = 1
        _refused(lambda: stub.Predict(_predict_request(inputs={"x": bad})), C.INVALID_ARGUMENT,
                 "tensor parsing error: x")
        _still_serving(server, stub)
    good = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=np.float32([2.0]).tobytes())
    good.tensor_shape.dim.add().size = 1
    assert list(stub.Predict(_predict_request(inputs={"x": good})).outputs["y"].float_val) == [3.0]
    for bad in (tensor_pb2.TensorProto(dtype=types_pb2.DT_INVALID, float_val=[1.0]), _x(shape=(-1,))):
        _refused(lambda: stub.Predict(_predict_request(inputs={"x": bad})), C.INVALID_ARGUMENT,
                 "tensor parsing error: x")
        _still_serving(server, stub)


def test_model_spec_errors(server, stubs):
    """No model_spec: INVALID_ARGUMENT "Missing ModelSpec" (predict_impl.cc, classification_service.cc,
    regression_service.cc, get_model_metadata_impl.cc, get_model_status_impl.cc); an empty name:
    INVALID_ARGUMENT "ModelSpec has no name specified." (server_core.cc ServableRequestFromModelSpec),
    an unknown one NOT_FOUND (predict_impl_test.cc MissingOrEmptyModelSpec,
    classification_service_test.cc / regression_service_test.cc InvalidModelSpec,
    get_model_metadata_impl_test.cc MissingOrEmptyModelSpec). GetModelStatus does not resolve names
    through ServerCore: an empty one is NOT_FOUND (get_model_status_impl.cc)."""
    stub, models = stubs

    def metadata(name=None):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        if name is not None:
            request.model_spec.name = name
        return request

    no_spec = [lambda: stub.Predict(predict_pb2.PredictRequest()),
               lambda: stub.Classify(classification_pb2.ClassificationRequest()),
               lambda: stub.Regress(regression_pb2.RegressionRequest()),
               lambda: stub.GetModelMetadata(metadata()),
               lambda: models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest())]
    for call in no_spec:
        _refused(call, C.INVALID_ARGUMENT, "Missing ModelSpec")
        _still_serving(server, stub)
    for name, code, fragment in (("", C.INVALID_ARGUMENT, "ModelSpec has no name specified."),
                                 ("test", C.NOT_FOUND, "Servable not found for request: Latest(test)")):
        for call in (lambda: stub.Predict(_predict_request(model=name)),
                     lambda: stub.Classify(_classify_request(model=name)),
                     lambda: stub.Regress(_regress_request(model=name)),
                     lambda: stub.MultiInference(_multi_request(model=name)),
                     lambda: stub.GetModelMetadata(metadata(name))):
            _refused(call, code, fragment)
            _still_serving(server, stub)
    # MultiInference with no task uses an empty ModelSpec (multi_inference_helper.cc GetModelSpecFromRequest).
    _refused(lambda: stub.MultiInference(inference_pb2.MultiInferenceRequest()), C.INVALID_ARGUMENT,
             "ModelSpec has no name specified.")
    _still_serving(server, stub)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = ""
    _refused(lambda: models.GetModelStatus(request), C.NOT_FOUND, "Could not find any versions of model ")
    _still_serving(server, stub)


def test_unknown_signature_code_differs_between_predict_and_the_others(server, stub):
    """Predict: FAILED_PRECONDITION 'Serving signature key "nope" not found.' (predict_util.cc RunPredict);
    Classify and Regress: INVALID_ARGUMENT "No signature was found with the name: nope" (classifier.cc
    GetClassificationSignatureDef, regressor.cc GetRegressionSignatureDef; classifier_test.cc /
    regressor_test.cc InvalidNamedSignature, classification_service_test.cc InvalidSignature);
    MultiInference: INVALID_ARGUMENT "Requested signature not found in model graph: nope"
    (multi_inference.cc). The signature is looked up before the examples are read."""
    _refused(lambda: stub.Predict(_predict_request(signature="nope")), C.FAILED_PRECONDITION,
             'Serving signature key "nope" not found.')
    _still_serving(server, stub)
    for call in (lambda: stub.Classify(_classify_request(signature="nope", xs=())),
                 lambda: stub.Regress(_regress_request(signature="nope", xs=()))):
        _refused(call, C.INVALID_ARGUMENT, "No signature was found with the name: nope")
        _still_serving(server, stub)
    _refused(lambda: stub.MultiInference(_multi_request(tasks=(("nope", CLASSIFY),))), C.INVALID_ARGUMENT,
             "Requested signature not found in model graph: nope")
    _still_serving(server, stub)


# --- Classify, Regress, MultiInference --------------------------------------------------------------

@pytest.mark.parametrize("model", ["default", "tf2"])
def test_classify_regress_multi_inference(server, stub, model):
    """tensorflow_model_server_test.py testClassify/testClassifyTf2, testRegress/testRegressTf2,
    testMultiInference/testMultiInferenceTf2: x = 2.0 gives 3.0; the response's model_spec has the
    name, signature and version 123. The TF2 model's signatures all say tensorflow/serving/predict:
    TF Serving does not check method names unless --enable_signature_method_name_check."""
    result = stub.Classify(_classify_request(model=model), 20)
    assert len(result.result.classifications) == 1 and len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert result.result.classifications[0].classes[0].label == ""
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == \
        (model, "classify_x_to_y", 123)
    result = stub.Regress(_regress_request(model=model), 20)
    assert [r.value for r in result.result.regressions] == [3.0]
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == \
        (model, "regress_x_to_y", 123)
    result = stub.MultiInference(_multi_request(model=model), 20)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for got, signature in zip(result.results, ("regress_x_to_y", "classify_x_to_y")):
        assert (got.model_spec.name, got.model_spec.signature_name, got.model_spec.version.value) == \
            (model, signature, 123)


def test_predict_input_with_default_may_be_left_out(server, stub):
    """TF2 SavedModels record default values (SignatureDef.defaults): predict_util.cc
    VerifyRequestInputsSize lets fewer inputs through when there are defaults, and
    tensorflow/cc/saved_model/util.cc GetInputValues feeds the default (x = [0.0] in
    saved_model_half_plus_two_tf2_cpu: y = [2.0]). A TF1 signature without defaults still needs x."""
    result = stub.Predict(_predict_request(model="tf2", inputs={}), 20)
    assert list(result.outputs["y"].float_val) == [2.0]
    assert list(stub.Predict(_predict_request(model="tf2", inputs={"x": _x([4.0])}), 20).outputs["y"].float_val) \
        == [4.0]
    # x takes its default; the unused name is then refused.
    _refused(lambda: stub.Predict(_predict_request(model="tf2", inputs={"bogus": _x()})), C.INVALID_ARGUMENT,
             "Inputs contains invalid name. Used request inputs: , request input: bogus")
    _still_serving(server, stub)
    _refused(lambda: stub.Predict(_predict_request(model="tf2", inputs={"x": _x(), "bogus": _x()})),
             C.INVALID_ARGUMENT, "Sent extra: {bogus}")
    _still_serving(server, stub)


def test_classify_regress_shape_checks(server, stub):
    """classifier.cc PreProcessClassification / regressor.cc PreProcessRegression with the method
    check off (TF Serving's default), then the run: a signature not shaped for the API is
    INVALID_ARGUMENT (classifier_test.cc / regressor_test.cc MissingClassificationSignature,
    MalformedScores/MalformedOutputs); feeding examples to a float input fails as TF's Session does."""
    _refused(lambda: stub.Classify(_classify_request(signature="serving_default")), C.INVALID_ARGUMENT,
             "No classification inputs found in SignatureDef")
    _still_serving(server, stub)
    _refused(lambda: stub.Regress(_regress_request(signature="classify_x_to_y")), C.INVALID_ARGUMENT,
             "No regression outputs found in SignatureDef")
    _still_serving(server, stub)
    _refused(lambda: stub.Regress(_regress_request(signature="regress_x2_to_y3")), C.INVALID_ARGUMENT,
             "Expects arg[0] to be float but string is provided")
    _still_serving(server, stub)
    # A classify signature used for Regress: "scores" is not "outputs".
    _refused(lambda: stub.Regress(_regress_request(model="two", signature="classify_x2_to_y3")),
             C.INVALID_ARGUMENT, "No regression outputs found in SignatureDef")
    _still_serving(server, stub)


def test_empty_input(server, stub):
    """classifier_test.cc / regressor_test.cc EmptyInput, EmptyExampleList, EmptyExampleListWithContext:
    INVALID_ARGUMENT "Input is empty" (util.cc InputToSerializedExampleTensor)."""
    calls = []
    for make, method in ((_classify_request, "Classify"), (_regress_request, "Regress")):
        nothing = make(xs=())
        nothing.ClearField("input")
        empty_list = make(xs=())
        with_context = make(xs=())
        with_context.input.example_list_with_context.context.features.feature["x"].float_list.value.append(1.0)
        calls += [(getattr(stub, method), r) for r in (nothing, empty_list, with_context)]
    for call, request in calls:
        _refused(lambda: call(request), C.INVALID_ARGUMENT, "Input is empty.")
        _still_serving(server, stub)


def test_multi_inference_task_checks(server, stub):
    """multi_inference.cc TensorFlowMultiInferenceRunner::Infer (multi_inference_test.cc): tasks on
    other models, an empty name, a duplicate signature are INVALID_ARGUMENT; a method other than
    classify/regress UNIMPLEMENTED."""
    request = _multi_request()
    request.tasks[1].model_spec.name = "three"
    _refused(lambda: stub.MultiInference(request), C.INVALID_ARGUMENT,
             "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    _still_serving(server, stub)
    request = _multi_request()
    request.tasks[1].model_spec.name = ""
    _refused(lambda: stub.MultiInference(request), C.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
    _still_serving(server, stub)
    _refused(lambda: stub.MultiInference(_multi_request(tasks=(("regress_x_to_y", REGRESS),) * 2)),
             C.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y")
    _still_serving(server, stub)
    _refused(lambda: stub.MultiInference(_multi_request(tasks=(("serving_default", "tensorflow/serving/predict"),))),
             C.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")
    _still_serving(server, stub)
    # Tasks may name versions differently: the first task's version is the one used.
    request = _multi_request()
    request.tasks[1].model_spec.version.value = 999
    assert len(stub.MultiInference(request).results) == 2


def test_signature_method_name_check_flag(tf_serving_testdata):
    """--enable_signature_method_name_check (server.cc SetSignatureMethodNameCheckFeature): then
    Classify/Regress need the method names (classifier_test.cc / regressor_test.cc MethodNameCheck),
    so the TF2 model's predict-method signatures are refused; TF1 ones still work."""
    config = config_for(default=str(tf_serving_testdata / "saved_model_half_plus_two_cpu"),
                        tf2=str(tf_serving_testdata / "saved_model_half_plus_two_tf2_cpu"))
    with running_server(config, wait_for=["default", "tf2"], enable_signature_method_name_check=True) as srv, \
            grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        _refused(lambda: stub.Classify(_classify_request(model="tf2")), C.INVALID_ARGUMENT,
                 "Expected classification signature method_name to be tensorflow/serving/classify. "
                 "Was: tensorflow/serving/predict")
        _refused(lambda: stub.Regress(_regress_request(model="tf2")), C.INVALID_ARGUMENT,
                 "Expected regression signature method_name to be tensorflow/serving/regress. "
                 "Was: tensorflow/serving/predict")
        assert stub.Classify(_classify_request()).result.classifications[0].classes[0].score == 3.0
        assert [r.value for r in stub.Regress(_regress_request()).result.regressions] == [3.0]


# --- GetModelStatus -------------------------------------------------------------------------------

def test_model_status(server, stubs):
    """get_model_status_impl.cc GetModelStatusWithModelSpec: only a version narrows the answer (a
    version label is not resolved), an unknown version is NOT_FOUND "Could not find version V of model M"
    even for an unknown model."""
    stub, models = stubs

    def status(name, version=None, label=None):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        return models.GetModelStatus(request, 20)

    everything = status("two")
    assert status("two", label="no_such_label") == everything
    assert [s.version for s in status("two", version=124).model_version_status] == [124]
    _refused(lambda: status("nope", version=9), C.NOT_FOUND, "Could not find version 9 of model nope")
    _still_serving(server, stub)


# --- our own failures -----------------------------------------------------------------------------

def test_unexpected_failure_is_internal_with_no_python_text(server, stub, monkeypatch, caplog):
    """TF Serving's own failures come back as INTERNAL with a status message, never a stack or a
    language's exception (prediction_service_impl.cc ToGRPCStatus; http_server.cc). Here a bug in the
    server: the client gets INTERNAL and a generic message, the trace goes to the server log."""
    from serving.servables.servable import SavedModelServable

    def broken(self, *args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(SavedModelServable, "run", broken)
    with caplog.at_level(logging.ERROR, logger="serving"):
        details = _refused(lambda: stub.Predict(_predict_request()), C.INTERNAL)
        assert "secret" not in details and "RuntimeError" not in details
        status, body = http(server.rest_port, "/v1/models/default:predict", {"instances": [2.0]})
        assert status == 500 and "secret" not in body["error"] and "RuntimeError" not in body["error"]
        details = _refused(lambda: stub.Classify(_classify_request()), C.INTERNAL)
        assert "secret" not in details
    traces = [r for r in caplog.records if r.exc_info and "secret internal detail" in str(r.exc_info[1])]
    assert len(traces) >= 3
    monkeypatch.undo()
    _still_serving(server, stub)


def test_batching_refuses_scalars_for_batched_signatures(tf_serving_testdata):
    """With --enable_batching a [-1, 1] signature is batched, and batching_util.h ComputeTensorBatchSize
    refuses inputs with no dimension: INVALID_ARGUMENT, and the server keeps batching."""
    from serving.batching.batcher import BatchingOptions

    config = config_for(default=str(tf_serving_testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["default"], batching=BatchingOptions(max_batch_size=8)) as srv, \
            grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        _refused(lambda: stub.Predict(_predict_request(inputs={"x": _x(shape=())})), C.INVALID_ARGUMENT,
                 "Batching Run() input tensors must have at least one dimension")
        _still_serving(srv, stub)


# --- REST ------------------------------------------------------------------------------------------

def test_rest_answers(server):
    """tensorflow_model_server_test.py testClassifyREST, testRegressREST, testPredictREST,
    testPredictColumnarREST, testGetStatusREST; http_rest_api_handler_test.cc Predict, Regress,
    Classify (x = 80 -> 42, x = 20 -> 12)."""
    port = server.rest_port
    assert http(port, "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) \
        == (200, {"results": [[["", 3.0]]]})
    assert http(port, "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) \
        == (200, {"results": [3.0]})
    assert http(port, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}) == \
        (200, {"predictions": [3.0, 3.5, 4.0]})
    assert http(port, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]})
    assert http(port, "/v1/models/default") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert http(port, "/v1/models/default:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]}) == \
        (200, {"predictions": [[2.5, 3.0], [3.5, 4.0]]})
    assert http(port, "/v1/models/two/versions/124:predict",
                {"signature_name": "serving_default", "inputs": [3.0, 4.0]}) == (200, {"outputs": [3.5, 4.0]})
    assert http(port, "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}) \
        == (200, {"results": [42.0]})
    assert http(port, "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}) \
        == (200, {"results": [[["", 12.0]]]})
    # ParseJson stops after the first value (kParseStopWhenDoneFlag): trailing bytes are ignored.
    assert http(port, "/v1/models/default:predict", raw=b'{"instances": [2.0]} trailing') == \
        (200, {"predictions": [3.0]})
    # TF2 classify over REST, as over gRPC.
    assert http(port, "/v1/models/tf2:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) \
        == (200, {"results": [[["", 3.0]]]})


REST_REFUSED = [
    # http_rest_api_handler_test.cc UnsupportedApiCalls
    ("GET", "/v1/foo", None, 400, "Malformed request"),
    ("POST", "/v1/foo", b"", 400, "Malformed request"),
    ("GET", "/v1/models", None, 400, "Missing model name"),
    ("GET", "/v1/models/debug/model_name", None, 400, "Malformed request"),
    ("POST", "/v1/models", b"", 400, "Malformed request"),
    ("GET", "/v1/models/foo:predict", None, 400, "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", None, 400, "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", b"", 400, "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", b"", 400, "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{2 ** 64 - 1}:regress", b"", 400, "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", b"", 400, "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", b"", 400, "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", b"", 400, "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", b"", 400, "Malformed request"),
    # PredictModelNameVersionErrors
    ("POST", "/v1/models/foo:predict", b'{ "instances": [1] }', 404, "Servable not found"),
    ("POST", "/v1/models/foo/versions/50:predict", b'{ "instances": [1] }', 404, "Servable not found"),
    ("POST", "/v1/models/default99:predict", b'{ "instances": [1] }', 404, "Servable not found"),
    # PredictRequestErrors
    ("POST", "/v1/models/default:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/default:predict", b"instances = [1, 2]", 400, "JSON Parse error: Invalid value"),
    ("POST", "/v1/models/default:predict", b'{ "instances": ["x", "y"] }', 400, "not of expected type: float"),
    ("POST", "/v1/models/default/labels/Version_Nonexistent:predict", b'{ "instances": ["x", "y"] }', 400,
     "Unrecognized servable version label"),
    ("POST", "/v1/models/default:predict", b'{ "signature_name": 100 }', 400,
     "'signature_name' key must be a string value."),
    # http_rest_api_handler.cc GetInfoMap: an unknown signature is refused before Predict.
    ("POST", "/v1/models/default:predict", b'{"signature_name": "nope", "instances": [1.0]}', 400,
     'Serving signature name: "nope" not found in signature def'),
    # json_tensor.cc FillPredictRequestFromJson / FillClassifyRegressRequestFromJson
    ("POST", "/v1/models/default:predict", b"[1.0]", 400, "Is not object"),
    ("POST", "/v1/models/default:predict", b'{"instances" [1.0]}', 400,
     "JSON Parse error: Missing a colon after a name of object member. at offset: 13"),
    ("POST", "/v1/models/default:predict", b'{"instances": [1.0 2.0]}', 400,
     "JSON Parse error: Missing a comma or ']' after an array element."),
    ("POST", "/v1/models/default:predict", b'{"instances": []}', 400, "No values in 'instances' array"),
    ("POST", "/v1/models/default:predict", b'{"instances": 1.0}', 400, "Expecting 'instances' to be an list/array"),
    ("POST", "/v1/models/default:predict", b'{"instances": [{"y": 1.0}]}', 400,
     "JSON object: does not have named input: y"),
    ("POST", "/v1/models/default:predict", b'{"inputs": {"y": [1.0]}}', 400, "Missing named input: x in 'inputs' object."),
    ("POST", "/v1/models/default:predict", b'{"instances": [[1.0], [1.0, 2.0]]}', 400,
     "Expecting tensor size: 1 but got: 2"),
    ("POST", "/v1/models/counter:predict", b'{"signature_name": "get_counter", "instances": [1.0]}', 400,
     "Failed to get input map for signature: get_counter"),
    ("POST", "/v1/models/default:classify", b'{"signature_name": "classify_x_to_y"}', 400,
     "key 'examples' is expected and was not found"),
    ("POST", "/v1/models/default:classify", b'{"signature_name": "classify_x_to_y", "examples": []}', 400,
     "'examples' value is an empty array"),
    ("POST", "/v1/models/default:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": [1, 2.0]}]}', 400,
     "Unexpected element type in feature: x expecting type: int64"),
    ("POST", "/v1/models/default:classify", b'{"signature_name": "nope", "examples": [{"x": 1.0}]}', 400,
     "No signature was found with the name: nope"),
    # Not under /v1/: no handler at all (http_server.cc RestApiRequestDispatcher).
    ("GET", "/v2/whatever", None, 404, ""),
]


@pytest.mark.parametrize("method,path,body,status,fragment", REST_REFUSED,
                         ids=[f"{c[0]} {c[1]} {c[2]!r}"[:90] for c in REST_REFUSED])
def test_rest_refused(server, stub, method, path, body, status, fragment):
    """http_rest_api_handler_test.cc (UnsupportedApiCalls, PredictModelNameVersionErrors,
    PredictRequestErrors), http_rest_api_util.cc and json_tensor.cc: status codes (ToHTTPStatusCode in
    http_server.cc) and message fragments; the body is {"error": ...}."""
    if method == "GET":
        got_status, got = http(server.rest_port, path)
    else:
        got_status, got = http(server.rest_port, path, raw=body if body else b"")
    assert got_status == status, got
    assert set(got) == {"error"} and fragment in got["error"], got
    assert "Traceback" not in got["error"] and "JSONDecodeError" not in got["error"]
    _still_serving(server, stub)


def test_rest_cors_preflight(server, stub):
    """http_server.cc RestApiRequestDispatcher::ProcessRequest: OPTIONS with an http(s) Origin is OK
    (empty body); without one FAILED_PRECONDITION (HTTP 400) "Origin header is missing in CORS preflight"."""
    import urllib.error
    import urllib.request

    def options(headers):
        request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}/v1/models/default:predict",
                                         method="OPTIONS", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    assert options({"Origin": "https://example.com"}) == (200, b"")
    status, body = options({})
    assert status == 400 and "Origin header is missing in CORS preflight" in body.decode()
    _still_serving(server, stub)


def test_rest_body_framing(server, stub):
    """TF Serving's net_http reads the whole body (Content-Length or chunked) before the handler runs
    (http_server.cc ProcessRequest): a chunked predict answers as a sized one; a Content-Length that is
    not a number is a client error (400), not a server failure, and the server keeps answering."""
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    body = json.dumps({"instances": [2.0, 4.0]}).encode()
    connection.request("POST", "/v1/models/default:predict", body=iter([body[:7], body[7:]]),
                       headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"predictions": [3.0, 4.0]})
    connection.close()

    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.putrequest("POST", "/v1/models/default:predict")
    connection.putheader("Content-Length", "abc")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    _still_serving(server, stub)
