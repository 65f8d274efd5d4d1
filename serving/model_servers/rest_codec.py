"""TF Serving's REST JSON formats <-> the request/response protos the handlers take.

Row format (`instances`) and columnar format (`inputs`), `{"b64": ...}` for binary strings,
`predictions`/`outputs` in the answer, and the classify/regress `examples` + `context` form,
as documented for TF Serving's REST API, so REST clients written for TF Serving work here.
"""
from __future__ import annotations

import base64
import json
import math
from typing import Any, Dict, Mapping, Tuple

import grpc

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

from serving.util import request_cost, tensors
from serving.util.errors import ServingError, invalid_argument


# --- JSON -> request (util/json_tensor.cc FillPredictRequestFromJson and friends) -------------------

_INT32_LIKE = (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8)
_TF_TYPE_NAMES = {types_pb2.DT_FLOAT: "float", types_pb2.DT_DOUBLE: "double", types_pb2.DT_INT32: "int32",
                  types_pb2.DT_INT16: "int16", types_pb2.DT_INT8: "int8", types_pb2.DT_UINT8: "uint8",
                  types_pb2.DT_STRING: "string", types_pb2.DT_INT64: "int64", types_pb2.DT_BOOL: "bool",
                  types_pb2.DT_UINT32: "uint32", types_pb2.DT_UINT64: "uint64"}


def _debug(value, limit: int = 256) -> str:
    """JsonValueToDebugString: compact JSON, cut at 256 bytes (json_tensor.cc kMaxJsonDebugStringBytes).
    Written with an explicit stack and stopped at the limit, so a value nested past Python's recursion
    limit (json_iterative) or a body of 100 MB costs what the first 256 bytes cost."""
    parts, size, stack, current = [], 0, [], value
    while True:
        if isinstance(current, dict):
            piece = "{"
            stack.append([iter(current.items()), "}", True, True])
        elif isinstance(current, list):
            piece = "["
            stack.append([iter(current), "]", False, True])
        else:
            piece = json.dumps(current, ensure_ascii=False, allow_nan=True)
        parts.append(piece)
        size += len(piece)
        while True:  # the next value to write, closing the containers that end first
            if size >= limit or not stack:
                return "".join(parts)[:limit]
            frame = stack[-1]
            item = next(frame[0], _END)
            if item is _END:
                parts.append(frame[1])
                size += 1
                stack.pop()
                continue
            separator = "" if frame[3] else ","
            frame[3] = False
            if frame[2]:
                name, current = item
                separator += json.dumps(name, ensure_ascii=False) + ":"
            else:
                current = item
            parts.append(separator)
            size += len(separator)
            break


_END = object()


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_name(dtype: int) -> str:
    return _TF_TYPE_NAMES.get(dtype, tensors.dtype_name(dtype))


def _type_error(value, dtype: int):
    return invalid_argument(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
                            f"{_type_name(dtype)}")


def _format_error(doc, text: str):
    return invalid_argument(f"JSON Value: {_debug(doc)} {text}")


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value) -> bytes:
    if not _is_b64(value):
        raise invalid_argument(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError):
        raise invalid_argument("Unable to base64 decode") from None


def _is_int(value, low, high) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _scalar(value, dtype: int):
    """AddValueToTensor: one JSON leaf as the signature's dtype, or TF Serving's type error."""
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, dtype)
        return value
    if dtype in _INT32_LIKE:
        if not _is_int(value, -2 ** 31, 2 ** 31 - 1):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_INT64:
        if not _is_int(value, -2 ** 63, 2 ** 63 - 1):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_UINT32:
        if not _is_int(value, 0, 2 ** 32 - 1):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_UINT64:
        if not _is_int(value, 0, 2 ** 64 - 1):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"Conversion of JSON Value: {_debug(value)} to type: {_type_name(dtype)}")


def _dense_shape(value) -> list:
    """GetDenseTensorShape: the sizes along the first element of each nesting level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, dtype: int, shape, out: list) -> None:
    """FillTensorProto: every leaf at the tensor's rank, every list of its level's size."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON "
                                   f"DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(_decode_b64(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
                               f"size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, dtype, shape, out)


class _Unparsable(ServingError):
    """A JSON value of more dimensions than a TensorShape holds: the "tensor parsing error" TF Serving's
    Predict answers for it (Tensor::FromProto refuses the shape), not wrapped in the JSON's context."""

    def __init__(self, name: str):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {name}")


def _tensor(value, dtype: int, name: str, outer_dims: int = 0) -> tuple:
    """(shape, flat values) of one JSON value; `outer_dims` more dimensions wrap it (rows: one)."""
    shape = _dense_shape(value)
    if len(shape) + outer_dims > request_cost.MAX_DIMENSIONS:  # and _fill recurses once per dimension
        raise _Unparsable(name)
    values: list = []
    _fill(value, 0, dtype, shape, values)
    return shape, values


def _to_proto(values, shape, dtype: int, proto) -> None:
    proto.dtype = dtype
    proto.tensor_shape.Clear()
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    field = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT64: "int64_val",
             types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val", types_pb2.DT_UINT32: "uint32_val",
             types_pb2.DT_UINT64: "uint64_val"}.get(dtype, "int_val")
    getattr(proto, field).extend(values)


def _status_text(err: ServingError) -> str:
    """absl::Status::ToString() of a nested error, as TF Serving embeds it in its messages."""
    return f"{err.code.name}: {err.message}"


def _instances(instances, inputs_info, request) -> None:
    """FillTensorMapFromInstancesList."""
    def is_object(v):
        return isinstance(v, dict) and not _is_b64(v)

    if not isinstance(instances[0], dict) and len(inputs_info) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input tensors "
                               "required as per tensorinfo_map")
    objects = is_object(instances[0])
    names = sorted(inputs_info)
    collected: Dict[str, list] = {}
    shapes: Dict[str, list] = {}
    sizes: Dict[str, int] = {}

    def add(item, name):
        if name not in inputs_info:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        shape, values = _tensor(item, inputs_info[name].dtype, name, outer_dims=1)
        if name not in sizes:
            sizes[name], shapes[name] = len(values), shape
        elif sizes[name] != len(values):
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {len(values)}")
        elif shapes[name] != shape:
            raise invalid_argument(f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: "
                                   f"[{','.join(map(str, shape))}]")
        collected.setdefault(name, []).extend(values)

    for count, element in enumerate(instances):
        if objects:
            if not is_object(element):
                raise invalid_argument(f"Expecting object but got list at item {count} of input list")
            for name, item in element.items():
                try:
                    add(item, name)
                except _Unparsable:
                    raise
                except ServingError as err:
                    raise invalid_argument(f"Failed to process element: {count} key: {name} of 'instances' list. "
                                           f"Error: {_status_text(err)}") from None
            if set(element) != set(names):
                raise invalid_argument(f"Failed to process element: {count} of 'instances' list. JSON object: "
                                       f"{_debug(element)} keys must be equal to: {','.join(names)}")
        else:
            if is_object(element):
                raise invalid_argument(f"Expecting value/list but got object at item {count} of input list")
            try:
                add(element, names[0])
            except _Unparsable:
                raise
            except ServingError as err:
                raise invalid_argument(f"Failed to process element: {count} of 'instances' list. "
                                       f"Error: {_status_text(err)}") from None
    for name, values in collected.items():
        _to_proto(values, [len(instances)] + shapes[name], inputs_info[name].dtype, request.inputs[name])


def _columns(inputs, inputs_info, request) -> None:
    """FillTensorMapFromInputsMap: keys the signature does not have are ignored, as there."""
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(inputs_info) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                   "required as per tensorinfo_map")
        name = next(iter(inputs_info))
        shape, values = _tensor(inputs, inputs_info[name].dtype, name)
        _to_proto(values, shape, inputs_info[name].dtype, request.inputs[name])
        return
    for name in sorted(inputs_info):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        shape, values = _tensor(inputs[name], inputs_info[name].dtype, name)
        _to_proto(values, shape, inputs_info[name].dtype, request.inputs[name])


ROW, COLUMNAR = "row", "columnar"


def predict_request(body: Mapping[str, Any], spec_source, signature) -> Tuple[predict_pb2.PredictRequest, str]:
    """A PredictRequest from a parsed REST body and the signature (its input dtypes), and the
    format (ROW for "instances", COLUMNAR for "inputs") the answer must use."""
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(spec_source)
    if not signature.inputs:
        name = spec_source.signature_name
        raise invalid_argument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    if "instances" in body:
        if "inputs" in body:
            raise _format_error(body, "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                                      "keys to exist ")
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _format_error(body, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(body, "No values in 'instances' array")
        _instances(instances, signature.inputs, request)
        return request, ROW
    if "inputs" in body:
        _columns(body["inputs"], signature.inputs, request)
        return request, COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# --- response -> JSON (json_tensor.cc MakeJsonFromTensors, MakeJsonFromClassificationResult, ...) ----

def _decimal(value, float32: bool):
    """WriteDecimal: printf %g (6 digits), or max_digits10 when that does not read back the same."""
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return value
    text = "%.6g" % value
    same = (np.float32(float(text)) == np.float32(value)) if float32 else (float(text) == value)
    if not same:
        text = "%.9g" % value if float32 else "%.17g" % value
    return float(text)


def _leaves(array: np.ndarray, alias: str):
    """The values of one output as JSON (strings raw, `*_bytes` aliases as {"b64": ...})."""
    if array.dtype == object or array.dtype.kind in "SU":
        as_b64 = alias.endswith("_bytes")

        def convert(v):
            if isinstance(v, list):
                return [convert(x) for x in v]
            if not isinstance(v, bytes):
                v = str(v).encode("utf-8")
            if as_b64:
                return {"b64": base64.b64encode(v).decode("ascii")}
            return v.decode("utf-8", "replace")
        return convert(array.tolist())
    if array.dtype.kind == "f":
        float32 = array.dtype != np.float64
        vectorised = np.vectorize(lambda v: _decimal(v, float32), otypes=[object])
        return vectorised(array).tolist() if array.size else array.tolist()
    return array.tolist()


def predict_response(response: predict_pb2.PredictResponse, row_format) -> Dict[str, Any]:
    """`row_format`: True/ROW for an "instances" request ("predictions"), else "outputs"."""
    arrays = {alias: tensors.to_ndarray(proto) for alias, proto in sorted(response.outputs.items())}
    if not arrays:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    if row_format in (False, COLUMNAR):
        if len(arrays) == 1:
            (alias, array), = arrays.items()
            return {"outputs": _leaves(array, alias)}
        return {"outputs": {alias: _leaves(a, alias) for alias, a in arrays.items()}}
    batch = None
    for alias, array in arrays.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                                   f"expecting: {batch}")
        batch = array.shape[0]
    if len(arrays) == 1:
        (alias, array), = arrays.items()
        return {"predictions": _leaves(array, alias)}
    columns = {alias: _leaves(a, alias) for alias, a in arrays.items()}
    return {"predictions": [{alias: columns[alias][i] for alias in columns} for i in range(batch)]}


def _incompatible(name: str, feature: feature_pb2.Feature):
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(feature.WhichOneof("kind"),
                                                                                    "UNKNOWN")
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_to_feature(value, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature: a feature's kind is set by its first value; later ones must agree."""
    kind = feature.WhichOneof("kind")

    def need(wanted):
        if kind is not None and kind != wanted:
            raise _incompatible(name, feature)

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    if isinstance(value, bool):
        need("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        need("bytes_list")
        feature.bytes_list.value.append(_decode_b64(value))
    elif isinstance(value, str):
        need("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float):
        need("float_list")
        feature.float_list.value.append(value)
    else:
        need("int64_list")
        if value >= 2 ** 63:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        if value < -2 ** 63:
            raise _incompatible(name, feature)
        feature.int64_list.value.append(value)


def _example(obj, example: example_pb2.Example) -> None:
    """MakeExampleFromJsonObject."""
    if not isinstance(obj, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(obj)}")
    for name, content in obj.items():
        feature = feature_pb2.Feature()
        for value in (content if isinstance(content, list) else [content]):
            _add_to_feature(value, name, feature)
        example.features.feature[name].CopyFrom(feature)


def _fill_input(body, input_proto) -> None:
    """FillClassifyRegressRequestFromJson (after the signature name)."""
    has_context = "context" in body
    if has_context:
        _example(body["context"], input_proto.example_list_with_context.context)
    if "examples" not in body:
        raise _format_error(body, "When method is classify, key 'examples' is expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise _format_error(body, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(body, "'examples' value is an empty array")
    target = input_proto.example_list_with_context if has_context else input_proto.example_list
    for obj in examples:
        _example(obj, target.examples.add())


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
    """{"results": [[[label, score], ...], ...]} (tensorflow_model_server_test.py testClassifyREST)."""
    if not response.result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[c.label, _decimal(c.score, True)] for c in row.classes]
                        for row in response.result.classifications]}


def regress_response(response) -> Dict[str, Any]:
    """{"results": [value, ...]} (tensorflow_model_server_test.py testRegressREST)."""
    if not response.result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return {"results": [_decimal(r.value, True) for r in response.result.regressions]}


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
