"""Hostile requests for the model server's front ends, as hypothesis strategies (issue 29).

Structure-aware: PredictRequest, ClassificationRequest, RegressionRequest and MultiInferenceRequest
built field by field from the values that break servers (shapes past TensorShape's limits, dtypes
TensorFlow has no numpy type for, short or long `*_val` lists, `tensor_content` of the right and the
wrong length, element counts of 1e7 and 1e9 on a few bytes, contexts repeated over many examples,
model specs naming nothing), plus raw bytes to any method, plus REST bodies (JSON nested deeper than
Python's recursion limit, wrong types, bad base64). `check_grpc_answer` and `check_rest_answer` say
what a server may answer: a TF Serving status code, never INTERNAL (our own failure) except for bytes
gRPC cannot parse, and no Python text. Used by tests/serving/test_serving_fuzz.py (a bounded run
with a fixed seed) and `python -m bench serving_fuzz` (a longer one).
"""
from __future__ import annotations

import json
import re
from typing import Optional, Tuple

from hypothesis import strategies as st
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2, regression_pb2

PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
METHODS = ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata")
MODEL_NAMES = ("taxi", "half", "", "nope")
SIGNATURES = ("", "serving_default", "serving_raw", "regress_x_to_y", "regress_x2_to_y3", "classify_x_to_y",
              "nope")
ALIASES = ("examples", "x", "inputs", "fare", "trip_miles", "trip_seconds", "trip_start_hour", "payment_type",
           "company", "nope")
FEATURES = ("fare", "trip_miles", "trip_seconds", "trip_start_hour", "payment_type", "company", "x", "x2")
# Dimension sizes: ordinary ones, batch limits, 1e7 and 1e9 elements on a few bytes, int64 extremes.
DIMS = (0, 1, 2, 3, 8, 17, 1000, 1001, 10_000_000, 1_000_000_000, 2 ** 31, 2 ** 62, 2 ** 63 - 1, -1, -2, -2 ** 63)
VALUE_FIELDS = ("float_val", "double_val", "int_val", "int64_val", "string_val", "bool_val", "half_val",
                "uint32_val", "uint64_val", "scomplex_val", "dcomplex_val")
ALLOWED_CODES = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
                 "UNIMPLEMENTED", "UNAVAILABLE", "INTERNAL"}
UNPARSABLE = "Exception deserializing request!"  # grpcio's words for bytes that are no request
# What Python puts in a text that no client should see: a trace, an exception's class, an object's repr.
PYTHON_TEXT = re.compile(r"Traceback|File \"|, line \d+, in |<class '| object at 0x|\bException\b|"
                         r"\b(Value|Type|Key|Index|Attribute|Recursion|Overflow|Memory|Unicode\w*|Runtime|Assertion|"
                         r"ZeroDivision|NotImplemented|Name|OS|Lookup|Buffer|Struct)Error\b")
TF_STATUS_WORDS = ("Exception deserializing request!",)

_FLOAT = st.floats(width=32, allow_nan=True, allow_infinity=True)
_MOSTLY = st.sampled_from((True,) * 9 + (False,))  # hypothesis favours small integers: no `integers(0, n) > 0`
_INT64 = st.integers(-2 ** 63, 2 ** 63 - 1)


def _values(field: str):
    if field in ("float_val", "scomplex_val", "half_val"):
        return st.lists(_FLOAT if field != "half_val" else st.integers(0, 2 ** 31 - 1), max_size=6)
    if field in ("double_val", "dcomplex_val"):
        return st.lists(st.floats(allow_nan=True), max_size=6)
    if field == "int_val":
        return st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), max_size=6)
    if field == "int64_val":
        return st.lists(_INT64, max_size=6)
    if field == "uint32_val":
        return st.lists(st.integers(0, 2 ** 32 - 1), max_size=6)
    if field == "uint64_val":
        return st.lists(st.integers(0, 2 ** 64 - 1), max_size=6)
    if field == "bool_val":
        return st.lists(st.booleans(), max_size=6)
    return st.lists(st.one_of(st.binary(max_size=40), _examples_bytes()), max_size=6)


@st.composite
def _example(draw) -> example_pb2.Example:
    example = example_pb2.Example()
    for name in draw(st.lists(st.sampled_from(FEATURES), max_size=4, unique=True)):
        feature = example.features.feature[name]
        kind = draw(st.sampled_from(("float_list", "int64_list", "bytes_list", "empty")))
        if kind == "float_list":
            feature.float_list.value.extend(draw(st.lists(_FLOAT, max_size=3)))
        elif kind == "int64_list":
            feature.int64_list.value.extend(draw(st.lists(_INT64, max_size=3)))
        elif kind == "bytes_list":
            feature.bytes_list.value.extend(draw(st.lists(st.binary(max_size=12), max_size=3)))
    return example


def _examples_bytes():
    return _example().map(lambda e: e.SerializeToString())


@st.composite
def tensor_proto(draw) -> tensor_pb2.TensorProto:
    """A TensorProto of any dtype (and numbers no DataType has), shape and content."""
    proto = tensor_pb2.TensorProto()
    proto.dtype = draw(st.one_of(st.sampled_from(sorted(types_pb2.DataType.values())),
                                 st.sampled_from((types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT64)),
                                 st.integers(-5, 300)))
    if draw(st.integers(0, 30)) == 0:
        proto.tensor_shape.unknown_rank = True
    rank = draw(st.one_of(st.integers(0, 3), st.sampled_from((4, 254, 255, 300))))
    if rank > 4:  # many dimensions of size 1 (a few bytes each), or one large one among them
        sizes = [1] * rank
        sizes[draw(st.integers(0, rank - 1))] = draw(st.sampled_from(DIMS))
    else:
        sizes = draw(st.lists(st.one_of(st.sampled_from(DIMS), st.integers(0, 5)), min_size=rank, max_size=rank))
    for size in sizes:
        proto.tensor_shape.dim.add(size=size, name=draw(st.sampled_from(("", "batch"))))
    if draw(st.booleans()):
        field = draw(st.sampled_from(VALUE_FIELDS))
        getattr(proto, field).extend(draw(_values(field)))
    if draw(st.integers(0, 4)) == 0:
        proto.tensor_content = draw(st.one_of(st.binary(max_size=64),
                                              st.integers(0, 16).map(lambda n: b"\0" * (4 * n))))
    return proto


@st.composite
def _model_spec(draw, spec):
    served = st.sampled_from(MODEL_NAMES[:2])  # mostly models that exist, so the deeper checks are reached
    spec.name = draw(st.one_of(served, served, served, st.sampled_from(MODEL_NAMES), st.text(min_size=1, max_size=8)))
    spec.signature_name = draw(st.one_of(st.sampled_from(SIGNATURES), st.sampled_from(SIGNATURES),
                                         st.text(max_size=8)))
    version = draw(st.sampled_from(("latest",) * 6 + ("value", "label")))  # mostly the latest, which exists
    if version == "value":
        spec.version.value = draw(st.one_of(st.sampled_from((0, 1, 123, 124, -1, 2 ** 63 - 1)), _INT64))
    elif version == "label":
        spec.version_label = draw(st.sampled_from(("stable", "canary", "")))
    return spec


@st.composite
def _near_valid_predict(draw) -> predict_pb2.PredictRequest:
    """A Predict the served models answer, or nearly (a size, a value, an element count changed):
    half_plus_two's `x` (float [-1, 1]) or the taxi-like model's serialized tf.Examples."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(st.sampled_from(MODEL_NAMES[:2]))
    count = draw(st.one_of(st.integers(1, 20), st.sampled_from(DIMS)))
    if request.model_spec.name == "half":
        proto = request.inputs["x"]
        proto.dtype = types_pb2.DT_FLOAT
        proto.float_val.extend(draw(st.lists(_FLOAT, min_size=1, max_size=20)))
    else:
        proto = request.inputs["examples"]
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(draw(st.lists(_examples_bytes(), min_size=1, max_size=20)))
    proto.tensor_shape.dim.add().size = count
    if draw(st.booleans()):
        proto.tensor_shape.dim.add().size = 1
    return request


@st.composite
def predict_request(draw) -> predict_pb2.PredictRequest:
    if draw(st.integers(0, 2)) == 0:
        return draw(_near_valid_predict())
    request = predict_pb2.PredictRequest()
    if draw(_MOSTLY):
        draw(_model_spec(request.model_spec))
    for alias in draw(st.lists(st.one_of(st.sampled_from(ALIASES), st.text(max_size=6)), max_size=4, unique=True)):
        request.inputs[alias].CopyFrom(draw(tensor_proto()))
    request.output_filter.extend(draw(st.lists(st.sampled_from(("probabilities", "y", "nope", "")), max_size=3)))
    return request


@st.composite
def _input(draw, target):
    kind = draw(st.sampled_from(("example_list", "example_list_with_context", "none")))
    if kind == "example_list":
        target.example_list.examples.extend(draw(st.lists(_example(), max_size=5)))
    elif kind == "example_list_with_context":
        lst = target.example_list_with_context
        lst.context.CopyFrom(draw(_example()))
        if draw(st.integers(0, 5)) == 0:  # a large context times many examples
            lst.context.features.feature["pad"].bytes_list.value.append(b"p" * 4096)
            lst.examples.extend([example_pb2.Example()] * draw(st.sampled_from((10, 20_000))))
        else:
            lst.examples.extend(draw(st.lists(_example(), max_size=5)))
    return target


@st.composite
def classify_or_regress(draw, request_class):
    request = request_class()
    if draw(_MOSTLY):
        draw(_model_spec(request.model_spec))
    draw(_input(request.input))
    return request


@st.composite
def multi_inference_request(draw) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for _ in range(draw(st.sampled_from((1, 2, 3, 0)))):
        task = request.tasks.add()
        draw(_model_spec(task.model_spec))
        task.method_name = draw(st.sampled_from(("tensorflow/serving/classify", "tensorflow/serving/regress",
                                                 "tensorflow/serving/predict", "")))
    draw(_input(request.input))
    return request


def grpc_calls():
    """(method, request bytes, structured?): a structure-aware request of its method (3 in 4), or raw
    bytes to any method."""
    structured = st.one_of(
        predict_request().map(lambda r: ("Predict", r.SerializeToString(), True)),
        classify_or_regress(classification_pb2.ClassificationRequest).map(
            lambda r: ("Classify", r.SerializeToString(), True)),
        classify_or_regress(regression_pb2.RegressionRequest).map(lambda r: ("Regress", r.SerializeToString(), True)),
        multi_inference_request().map(lambda r: ("MultiInference", r.SerializeToString(), True)))
    raw = st.tuples(st.sampled_from(METHODS), st.binary(max_size=80), st.just(False))
    return st.one_of(structured, structured, structured, raw)


def _deep(depth: int, closed: bool) -> str:
    return "[" * depth + ("]" * depth if closed else "")


@st.composite
def rest_call(draw) -> Tuple[str, bytes, bool]:
    """(path, body, structured?) of a REST call: JSON built from the REST API's own keys, deep
    nesting, or raw bytes (not structured)."""
    verb = draw(st.sampled_from(("predict", "classify", "regress")))
    model = draw(st.sampled_from(("taxi", "half", "nope")))
    path = f"/v1/models/{model}:{verb}"
    kind = draw(st.sampled_from(("json", "deep", "raw")))
    if kind == "raw":
        return path, draw(st.binary(max_size=80)), False
    if kind == "deep":
        depth = draw(st.sampled_from((300, 5_000, 200_000)))
        key = draw(st.sampled_from(("instances", "inputs", "signature_name", "nested", "examples")))
        closed = draw(st.booleans())
        return path, (f'{{"{key}": ' + _deep(depth, closed) + ("}" if closed else "")).encode(), True
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=8),
                     st.fixed_dictionaries({"b64": st.text(max_size=8)}))
    value = st.recursive(leaf, lambda children: st.one_of(st.lists(children, max_size=4),
                                                          st.dictionaries(st.sampled_from(FEATURES + ALIASES),
                                                                          children, max_size=3)), max_leaves=12)
    body = draw(st.dictionaries(st.sampled_from(("instances", "inputs", "signature_name", "examples", "context")),
                                value, max_size=3))
    return path, json.dumps(body, allow_nan=True).encode(), True


def check_grpc_answer(code: str, details: str) -> Optional[str]:
    """None when (code, details) is an answer TF Serving could give; else what is wrong with it."""
    if code not in ALLOWED_CODES:
        return f"status {code}"
    if code == "INTERNAL" and details != UNPARSABLE:
        return f"INTERNAL (our own failure): {details!r}"
    if code != "OK" and details not in TF_STATUS_WORDS and PYTHON_TEXT.search(details or ""):
        return f"Python text in the message: {details[:200]!r}"
    return None


def check_rest_answer(status: int, body: bytes) -> Optional[str]:
    """None when an HTTP answer is TF Serving's kind: JSON, an error as {"error": ...} with a 4xx/501/503."""
    try:
        payload = json.loads(body)
    except ValueError:
        return f"HTTP {status}: body is not JSON: {body[:100]!r}"
    if status == 200:
        return None
    if status >= 500 and status not in (501, 503):
        return f"HTTP {status}: {payload!r:.200}"
    message = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(message, str):
        return f"HTTP {status} without an error message: {payload!r:.200}"
    if PYTHON_TEXT.search(message):
        return f"Python text in the message: {message[:200]!r}"
    return None
