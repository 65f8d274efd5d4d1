"""The PredictionService/ModelService semantics, independent of transport.

gRPC and REST both call these functions with TF Serving request protos and get response protos
(or a `ServingError`), so the two front ends cannot drift apart.
"""
from __future__ import annotations

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, predict_pb2, regression_pb2)

from serving.core.request_logger import log_request
from serving.util import tensors
from serving.util.errors import invalid_argument, unimplemented
from serving.servables.servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD

SIGNATURE_DEF_FIELD = "signature_def"


def _require_spec(request):
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return request.model_spec


def _fill_spec(target, servable, signature_name: str) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature_name


def predict(manager, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    spec = _require_spec(request)
    with manager.servable(spec) as servable:
        response = predict_on(servable, request)
    log_request(manager, "predict", request, response)
    return response


def predict_on(servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Predict on a servable the caller already holds (REST resolves once for decoding and running)."""
    sig = servable.signature(request.model_spec.signature_name)
    inputs = {alias: tensors.to_ndarray(proto) for alias, proto in request.inputs.items()}
    servable.validate_inputs(sig, inputs)
    output_keys = servable.validate_outputs(sig, request.output_filter)
    results = servable.run(sig, inputs, output_keys)
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, servable, sig.name)
    for alias in output_keys:
        tensors.from_ndarray(results[alias], response.outputs[alias], sig.outputs[alias].dtype)
    return response


def serialized_examples(input_proto) -> np.ndarray:
    """tensorflow.serving.Input -> serialized tf.Examples (context merged under each example)."""
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


def _check_method(sig, method: str, kind: str) -> None:
    if sig.method_name != method:
        raise invalid_argument(f"Expected {kind} signature method_name to be {method}. Was: {sig.method_name}")


def _run_on_examples(servable, sig, method: str, kind: str, examples: np.ndarray, output_keys):
    _check_method(sig, method, kind)
    if len(sig.inputs) != 1:
        raise invalid_argument(f"Expected one input Tensor in the {kind} signature, found {len(sig.inputs)}")
    (alias, spec), = sig.inputs.items()
    if spec.dtype != types_pb2.DT_STRING:
        raise invalid_argument(f"Expected {kind} signature input '{alias}' to be DT_STRING (serialized "
                               f"tf.Example), but it is {tensors.dtype_name(spec.dtype)}")
    return servable.run(sig, {alias: examples}, output_keys)


def _batch_check(name, value, batch, kind):
    if value.ndim == 0 or value.shape[0] != batch:
        raise invalid_argument(f"Input batch size did not match output batch size: {batch} vs. "
                               f"{value.shape[0] if value.ndim else 0} ({kind} output '{name}')")


def _classification(servable, sig, examples) -> classification_pb2.ClassificationResult:
    _check_method(sig, CLASSIFY_METHOD, "classification")
    keys = [k for k in ("classes", "scores") if k in sig.outputs]
    if not keys:
        raise invalid_argument(f"classification signature '{sig.name}' has neither a 'classes' nor a 'scores' output")
    out = _run_on_examples(servable, sig, CLASSIFY_METHOD, "classification", examples, tuple(keys))
    batch = len(examples)
    classes, scores = out.get("classes"), out.get("scores")
    for name, value in out.items():
        _batch_check(name, value, batch, "classification")
        if value.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(value.shape)} "
                                   f"for output '{name}'")
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise invalid_argument(f"Tensors class and score should match in shape: {list(classes.shape)} vs. "
                               f"{list(scores.shape)}")
    result = classification_pb2.ClassificationResult()
    width = (classes if classes is not None else scores).shape[1]
    for i in range(batch):
        row = result.classifications.add()
        for j in range(width):
            cls = row.classes.add()
            if classes is not None:
                label = classes[i, j]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cls.score = float(scores[i, j])
    return result


def _regression(servable, sig, examples) -> regression_pb2.RegressionResult:
    _check_method(sig, REGRESS_METHOD, "regression")
    if "outputs" not in sig.outputs:
        raise invalid_argument(f"regression signature '{sig.name}' has no 'outputs' output")
    out = _run_on_examples(servable, sig, REGRESS_METHOD, "regression", examples, ("outputs",))["outputs"]
    _batch_check("outputs", out, len(examples), "regression")
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                               f"got {list(out.shape)}")
    result = regression_pb2.RegressionResult()
    for value in out.reshape(-1):
        result.regressions.add().value = float(value)
    return result


def _on_examples(manager, request, response, compute):
    """Classify and Regress alike: resolve the version, run `compute` on the examples, fill the spec."""
    spec = _require_spec(request)
    examples = serialized_examples(request.input)
    with manager.servable(spec) as servable:
        sig = servable.signature(spec.signature_name)
        response.result.CopyFrom(compute(servable, sig, examples))
        _fill_spec(response.model_spec, servable, sig.name)
    log_request(manager, "classify" if compute is _classification else "regress", request, response)
    return response


def classify(manager, request: classification_pb2.ClassificationRequest):
    return _on_examples(manager, request, classification_pb2.ClassificationResponse(), _classification)


def regress(manager, request: regression_pb2.RegressionRequest):
    return _on_examples(manager, request, regression_pb2.RegressionResponse(), _regression)


def multi_inference(manager, request: inference_pb2.MultiInferenceRequest):
    """Several classify/regress signatures of one model version over the same examples."""
    if not request.tasks:
        raise invalid_argument("Inference request should contain at least one task")
    first = request.tasks[0].model_spec
    names = set()
    for task in request.tasks:
        if task.model_spec.name != first.name or task.model_spec.WhichOneof("version_choice") != \
                first.WhichOneof("version_choice") or task.model_spec.version != first.version or \
                task.model_spec.version_label != first.version_label:
            raise invalid_argument("Inference tasks must use the same model name and version")
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature in names:
            raise invalid_argument(f"Duplicate evaluation of signature: {signature}")
        names.add(signature)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise unimplemented(f"Unsupported signature method_name: {task.method_name}")
    examples = serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    with manager.servable(first) as servable:
        for task in request.tasks:
            sig = servable.signature(task.model_spec.signature_name)
            if sig.method_name != task.method_name:
                raise invalid_argument(f"Signature '{sig.name}' has method_name {sig.method_name}, but the task asks "
                                       f"for {task.method_name}")
            result = response.results.add()
            _fill_spec(result.model_spec, servable, sig.name)
            if task.method_name == CLASSIFY_METHOD:
                result.classification_result.CopyFrom(_classification(servable, sig, examples))
            else:
                result.regression_result.CopyFrom(_regression(servable, sig, examples))
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
    if getattr(manager, "request_logger", None) is not None:
        manager.request_logger.update(request.config)
    return model_management_pb2.ReloadConfigResponse()

