"""The PredictionService/ModelService semantics, independent of transport.

gRPC and REST both call these functions with TF Serving request protos and get response protos
(or a `ServingError`), so the two front ends cannot drift apart.
"""
from __future__ import annotations

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_pb2, predict_pb2, regression_pb2)

from serving.core.request_logger import log_request
from serving.util import request_cost, tensors
from serving.util.errors import ServingError, invalid_argument, unimplemented
from serving.servables.servable import (CLASSIFY_METHOD, DEFAULT_SIGNATURE, PREDICT_METHOD, REGRESS_METHOD)

# tensorflow/cc/saved_model/signature_constants.h: the aliases Classify and Regress look for.
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

SIGNATURE_DEF_FIELD = "signature_def"


def _require_spec(request):
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return request.model_spec


def signature_method_check(manager) -> bool:
    """TF Serving's --enable_signature_method_name_check (util.cc GetSignatureMethodNameCheckFeature),
    off by default: Classify/Regress then take any signature shaped for them, e.g. TF2 exports
    whose signatures all say tensorflow/serving/predict (ManagerOptions)."""
    return manager.enable_signature_method_name_check


def _fill_spec(target, servable, signature_name: str) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature_name or DEFAULT_SIGNATURE


def predict(manager, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    spec = _require_spec(request)
    with manager.servable(spec) as servable:
        response = predict_on(servable, request, signature_method_check(manager))
    log_request(manager, "predict", request, response)
    return response


def predict_on(servable, request: predict_pb2.PredictRequest, method_check: bool = False
               ) -> predict_pb2.PredictResponse:
    """Predict on a servable the caller already holds, in predict_util.cc RunPredict's order:
    signature, method name (only with the check on), input names, input values, output filter,
    then the run (where dtypes are checked)."""
    sig, inputs, output_keys = predict_prepare(servable, request, method_check)
    return predict_response(servable, sig, servable.run(sig, inputs, output_keys), output_keys)


def predict_prepare(servable, request: predict_pb2.PredictRequest, method_check: bool = False):
    """Everything Predict checks before the run: (signature, arrays to feed, output keys).
    Split from `predict_on` so an asynchronous front end can await the run in between."""
    sig = servable.signature(request.model_spec.signature_name)
    if method_check and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
        raise ServingError(grpc.StatusCode.INTERNAL,
                           f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                           f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}")
    inputs, dtypes = servable.prepare_inputs(sig, request.inputs)
    output_keys = servable.validate_outputs(sig, request.output_filter)
    servable.check_dtypes(sig, dtypes)
    return sig, inputs, output_keys


def predict_response(servable, sig, results, output_keys) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, servable, sig.name)
    for alias in output_keys:
        tensors.from_ndarray(results[alias], response.outputs[alias], sig.outputs[alias].dtype)
    return response


def serialized_examples(input_proto) -> np.ndarray:
    """tensorflow.serving.Input -> serialized tf.Examples (context merged under each example),
    as util.cc InputToSerializedExampleTensor builds them."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        lst = input_proto.example_list_with_context
        context = lst.context.SerializeToString()
        # Concatenated proto bytes merge: the example's own features win over the context's.
        serialized = [context + e.SerializeToString() for e in lst.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _signature_text(sig) -> str:
    return f"{{inputs: [{', '.join(sorted(sig.inputs))}], outputs: [{', '.join(sorted(sig.outputs))}], " \
           f"method_name: {sig.method_name}}}"


def _one_input(sig, method_check: bool, kind: str, method: str) -> None:
    """What classifier.cc and regressor.cc check first: the method name (when asked) and one input."""
    if method_check and sig.method_name != method:
        raise invalid_argument(f"Expected {kind} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")


def _preprocess_classification(sig, method_check: bool):
    """classifier.cc PreProcessClassification: (input alias, output aliases to fetch)."""
    _one_input(sig, method_check, "classification", CLASSIFY_METHOD)
    if len(sig.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if CLASSIFY_INPUTS not in sig.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_signature_text(sig)}")
    keys = tuple(k for k in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if k in sig.outputs)
    if not keys:
        raise invalid_argument(f'Expected classification signature outputs to contain at least one of "classes" '
                               f'or "scores". Signature was: {_signature_text(sig)}')
    return CLASSIFY_INPUTS, keys


def _preprocess_regression(sig, method_check: bool):
    """regressor.cc PreProcessRegression."""
    _one_input(sig, method_check, "regression", REGRESS_METHOD)
    if len(sig.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in sig.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_signature_text(sig)}")
    if REGRESS_OUTPUTS not in sig.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_signature_text(sig)}")
    return REGRESS_INPUTS, (REGRESS_OUTPUTS,)


def _run_on_examples(servable, sig, input_alias, output_keys, examples: np.ndarray):
    # The Session run is where a non-string input is refused (TF Serving feeds the examples tensor).
    if sig.inputs[input_alias].dtype != types_pb2.DT_STRING:
        raise invalid_argument(f"Expects arg[0] to be {tensors.dtype_name(sig.inputs[input_alias].dtype)} but "
                               f"string is provided")
    return servable.run(sig, {input_alias: examples}, output_keys)


def _dt_name(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "DT_STRING"
    import tensorflow as tf

    return types_pb2.DataType.Name(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)


def _shape_text(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _classification_result(out, num_examples) -> classification_pb2.ClassificationResult:
    """classifier.cc PostProcessClassificationResult."""
    classes, scores = out.get(CLASSIFY_CLASSES), out.get(CLASSIFY_SCORES)
    for name, value, dt in ((CLASSIFY_CLASSES, classes, "DT_STRING"), (CLASSIFY_SCORES, scores, "DT_FLOAT")):
        if value is None:
            continue
        if value.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(value)}")
        if _dt_name(value) != dt:
            raise invalid_argument(f"Expected {name} Tensor of {dt}. Got: {_dt_name(value)}")
        if value.shape[0] != num_examples:
            raise invalid_argument(f"Expected {name} output batch size of {num_examples}. Got: {value.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                               f"{scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        row = result.classifications.add()
        for j in range(width):
            cls = row.classes.add()
            if classes is not None:
                label = classes[i, j]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cls.score = float(scores[i, j])
    return result


def _regression_result(out, num_examples) -> regression_pb2.RegressionResult:
    """regressor.cc PostProcessRegressionResult."""
    value = out[REGRESS_OUTPUTS]
    if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                               f"got {_shape_text(value)}")
    if value.shape[0] != num_examples:
        raise invalid_argument(f"Input batch size did not match output batch size: {num_examples} vs. "
                               f"{value.shape[0]}")
    if _dt_name(value) != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dt_name(value)}")
    result = regression_pb2.RegressionResult()
    for v in value.reshape(-1):
        result.regressions.add().value = float(v)
    return result


def _on_examples(manager, request, response, preprocess, postprocess):
    """Classify and Regress (classifier.cc RunClassify / regressor.cc RunRegress): the signature
    (unknown: INVALID_ARGUMENT, unlike Predict's FAILED_PRECONDITION), its shape for the API,
    then the examples (empty: INVALID_ARGUMENT), the run and the output checks."""
    spec = _require_spec(request)
    with manager.servable(spec) as servable:
        key = spec.signature_name or DEFAULT_SIGNATURE
        sig = servable.find_signature(key)
        if sig is None:
            raise invalid_argument(f"No signature was found with the name: {key}")
        input_alias, output_keys = preprocess(sig, signature_method_check(manager))
        request_cost.check_examples(request.input, servable.request_limits)
        examples = serialized_examples(request.input)
        out = _run_on_examples(servable, sig, input_alias, output_keys, examples)
        response.result.CopyFrom(postprocess(out, len(examples)))
        _fill_spec(response.model_spec, servable, spec.signature_name)
    log_request(manager, "classify" if postprocess is _classification_result else "regress", request, response)
    return response


def classify(manager, request: classification_pb2.ClassificationRequest):
    return _on_examples(manager, request, classification_pb2.ClassificationResponse(),
                        _preprocess_classification, _classification_result)


def regress(manager, request: regression_pb2.RegressionRequest):
    return _on_examples(manager, request, regression_pb2.RegressionResponse(),
                        _preprocess_regression, _regression_result)


def multi_inference(manager, request: inference_pb2.MultiInferenceRequest):
    """Several classify/regress signatures of one model version over the same examples
    (multi_inference_helper.cc / multi_inference.cc TensorFlowMultiInferenceRunner::Infer).

    The version is the first task's (no tasks: an empty ModelSpec, so "ModelSpec has no name");
    the other tasks must name the same model; one Session run fetches what every task needs.
    """
    first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
    response = inference_pb2.MultiInferenceResponse()
    method_check = signature_method_check(manager)
    with manager.servable(first) as servable:
        names, plans = set(), []
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if task.model_spec.name != first.name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            key = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if key in names:
                raise invalid_argument(f"Duplicate evaluation of signature: {key}")
            names.add(key)
            sig = servable.find_signature(key)
            if sig is None:
                raise invalid_argument(f"Requested signature not found in model graph: {key}")
            if task.method_name == CLASSIFY_METHOD:
                input_alias, keys = _preprocess_classification(sig, method_check)
                postprocess = _classification_result
            elif task.method_name == REGRESS_METHOD:
                input_alias, keys = _preprocess_regression(sig, method_check)
                postprocess = _regression_result
            else:
                raise unimplemented(f"Unsupported signature method_name: {task.method_name}")
            plans.append((task, sig, input_alias, keys, postprocess))
        request_cost.check_examples(request.input, servable.request_limits)
        examples = serialized_examples(request.input)
        for task, sig, input_alias, keys, postprocess in plans:
            out = _run_on_examples(servable, sig, input_alias, keys, examples)
            result = response.results.add()
            if postprocess is _classification_result:
                result.classification_result.CopyFrom(postprocess(out, len(examples)))
            else:
                result.regression_result.CopyFrom(postprocess(out, len(examples)))
            _fill_spec(result.model_spec, servable, task.model_spec.signature_name)
    log_request(manager, "multi_inference", request, response)
    return response


def get_model_metadata(manager, request: get_model_metadata_pb2.GetModelMetadataRequest):
    spec = _require_spec(request)
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    with manager.servable(spec) as servable:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, servable, "")
        response.model_spec.ClearField("signature_name")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(signature_def)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
        return response


def get_model_status(manager, request: get_model_status_pb2.GetModelStatusRequest):
    spec = _require_spec(request)
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.extend(manager.status(spec))
    return response


def reload_config(manager, request: model_management_pb2.ReloadConfigRequest):
    manager.reload_config(request.config)
    return model_management_pb2.ReloadConfigResponse()

