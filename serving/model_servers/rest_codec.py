"""TF Serving's REST JSON formats <-> the request/response protos the handlers take.

Row format (`instances`) and columnar format (`inputs`), `{"b64": ...}` for binary strings,
`predictions`/`outputs` in the answer, and the classify/regress `examples` + `context` form,
as documented for TF Serving's REST API, so REST clients written for TF Serving work here.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Dict, Mapping

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

from serving.util import tensors
from serving.util.errors import invalid_argument


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_b64(value) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except Exception:
        raise invalid_argument(f"Unable to base64 decode: {str(value['b64'])[:40]!r}") from None


def _to_strings(value):
    if _is_b64(value):
        return _decode_b64(value)
    if isinstance(value, list):
        return [_to_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(f"expected a string or {{\"b64\": ...}} for a string input, got {json_dumps_short(value)}")


def json_to_ndarray(value, dtype: int, alias: str) -> np.ndarray:
    """One input's JSON value -> an array of the signature's dtype."""
    try:
        if dtype == types_pb2.DT_STRING:
            strings = _to_strings(value)
            array = np.array(strings, dtype=object)
            if array.dtype != object or (array.ndim and any(isinstance(x, list) for x in array.flat)):
                raise ValueError("ragged")
            return array
        array = np.array(value, dtype=tensors.numpy_dtype(dtype))
    except (ValueError, TypeError) as err:
        if "ragged" in str(err) or "inhomogeneous" in str(err) or "sequence" in str(err):
            raise invalid_argument(f"input '{alias}' is ragged: every instance must have the same shape") from None
        raise invalid_argument(f"input '{alias}' cannot be read as {tensors.dtype_name(dtype)}: "
                               f"{json_dumps_short(value)}") from None
    return array


def json_dumps_short(value) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def predict_request(body: Mapping[str, Any], spec_source, signature) -> predict_pb2.PredictRequest:
    """Build a PredictRequest from a REST body; `signature` gives input dtypes (as TF Serving uses)."""
    if "instances" in body and "inputs" in body:
        raise invalid_argument("Request must have either 'instances' (row format) or 'inputs' (columnar format), "
                               "not both")
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(spec_source)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid_argument("'instances' must be a non-empty JSON list")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if named:
            keys = set(instances[0])
            for i, inst in enumerate(instances):
                if set(inst) != keys:
                    raise invalid_argument(f"instance {i} has inputs {sorted(inst)} but instance 0 has {sorted(keys)}; "
                                           "every instance needs the same named inputs")
            columns = {k: [inst[k] for inst in instances] for k in keys}
        else:
            columns = {_sole_input(signature): instances}
    elif "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            columns = dict(inputs)
        else:
            columns = {_sole_input(signature): inputs}
    else:
        raise invalid_argument("Missing 'instances' or 'inputs' key in the request body")
    for alias, value in columns.items():
        spec = signature.inputs.get(alias)
        if spec is None:  # let the handler report unknown inputs with the full expected set
            array = np.array(value, dtype=object if _has_strings(value) else None)
        else:
            array = json_to_ndarray(value, spec.dtype, alias)
        tensors.from_ndarray(array, request.inputs[alias], spec.dtype if spec is not None else None)
    if "output_filter" in body:
        request.output_filter.extend(body["output_filter"])
    return request


def _has_strings(value) -> bool:
    if isinstance(value, list):
        return any(_has_strings(v) for v in value)
    return isinstance(value, (str, dict))


def _sole_input(signature) -> str:
    if len(signature.inputs) != 1:
        raise invalid_argument(f"signature '{signature.name}' has {len(signature.inputs)} inputs "
                               f"({', '.join(sorted(signature.inputs))}); name them in each instance")
    return next(iter(signature.inputs))


def _jsonable(array: np.ndarray, alias: str):
    if array.dtype == object or array.dtype.kind in "SU":
        as_b64 = alias.endswith("_bytes")

        def convert(v):
            if isinstance(v, list):
                return [convert(x) for x in v]
            if as_b64:
                return {"b64": base64.b64encode(v).decode("ascii")}
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode("ascii")}
        return convert(array.tolist())
    return array.tolist()


def predict_response(response: predict_pb2.PredictResponse, row_format: bool) -> Dict[str, Any]:
    arrays = {alias: tensors.to_ndarray(proto) for alias, proto in response.outputs.items()}
    if not row_format:
        if len(arrays) == 1:
            (alias, array), = arrays.items()
            return {"outputs": _jsonable(array, alias)}
        return {"outputs": {alias: _jsonable(a, alias) for alias, a in arrays.items()}}
    if len(arrays) == 1:
        (alias, array), = arrays.items()
        return {"predictions": _jsonable(array, alias)}
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid_argument("outputs have different batch sizes; ask for the columnar format ('inputs') instead")
    columns = {alias: _jsonable(a, alias) for alias, a in arrays.items()}
    return {"predictions": [{alias: columns[alias][i] for alias in columns} for i in range(sizes.pop())]}


def _feature(value, name: str) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    feature = feature_pb2.Feature()
    if all(isinstance(v, bool) or isinstance(v, int) for v in values) and values:
        feature.int64_list.value.extend(int(v) for v in values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
        feature.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, str) or _is_b64(v) for v in values):
        feature.bytes_list.value.extend(_decode_b64(v) if _is_b64(v) else v.encode("utf-8") for v in values)
    else:
        raise invalid_argument(f"feature '{name}' mixes types or is not a number, string or list of them: "
                               f"{json_dumps_short(value)}")
    return feature


def _example(obj, what: str) -> example_pb2.Example:
    if not isinstance(obj, dict):
        raise invalid_argument(f"{what} must be a JSON object of feature name -> value(s)")
    example = example_pb2.Example()
    for name, value in obj.items():
        example.features.feature[name].CopyFrom(_feature(value, name))
    return example


def _fill_input(body, input_proto) -> None:
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid_argument("'examples' must be a non-empty JSON list of objects")
    if "context" in body:
        lst = input_proto.example_list_with_context
        lst.context.CopyFrom(_example(body["context"], "'context'"))
    else:
        lst = input_proto.example_list
    for i, obj in enumerate(examples):
        lst.examples.add().CopyFrom(_example(obj, f"example {i}"))


def classify_request(body, spec) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.CopyFrom(spec)
    _fill_input(body, request.input)
    return request


def regress_request(body, spec) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.CopyFrom(spec)
    _fill_input(body, request.input)
    return request


def classify_response(response) -> Dict[str, Any]:
    return {"result": [[[c.label, _float(c.score)] for c in row.classes]
                       for row in response.result.classifications]}


def regress_response(response) -> Dict[str, Any]:
    return {"result": [_float(r.value) for r in response.result.regressions]}


def _float(value: float) -> float:
    # float32 values, printed so they parse back to the identical float32.
    return value if math.isnan(value) or math.isinf(value) else float(np.float32(value))


def message_json(message) -> Dict[str, Any]:
    """A proto as TF Serving's REST layer prints it (field names kept, defaults included)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                      including_default_value_fields=True)


def metadata_json(response) -> Dict[str, Any]:
    from tensorflow_serving.apis import get_model_metadata_pb2

    result = {"model_spec": message_json(response.model_spec), "metadata": {}}
    for key, any_value in response.metadata.items():
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        any_value.Unpack(sig_map)
        result["metadata"][key] = message_json(sig_map)
    return result
