"""The grpc.aio fast path's response bytes (serving.util.wire) parse to exactly the PredictResponse
the slow path builds (handlers.predict_response, TF Serving's AsProtoField form), for every dtype
and shape the encoder treats specially (float/double written as packed bytes) and for the rest
(encoded by tensors.from_ndarray)."""
from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from serving.servables import handlers
from serving.servables.servable import Signature, TensorSpec
from serving.util import wire


class _Servable:
    def __init__(self, name, version):
        self.name, self.version = name, version


CASES = [
    ("float [2,1]", types_pb2.DT_FLOAT, np.array([[0.25], [0.75]], np.float32)),
    ("float scalar", types_pb2.DT_FLOAT, np.float32(1.5)),
    ("float empty [0,3]", types_pb2.DT_FLOAT, np.zeros([0, 3], np.float32)),
    ("float [1,0,2] (zero dim in the middle)", types_pb2.DT_FLOAT, np.zeros([1, 0, 2], np.float32)),
    ("float strided slice", types_pb2.DT_FLOAT, np.arange(24, dtype=np.float32).reshape(4, 6)[1:3, ::2]),
    ("float nan/-0/inf", types_pb2.DT_FLOAT, np.array([np.nan, -0.0, np.inf, -np.inf], np.float32)),
    ("double [3]", types_pb2.DT_DOUBLE, np.array([1e300, -2.5, 0.0], np.float64)),
    ("int64 [2,2]", types_pb2.DT_INT64, np.array([[1, -2], [2**40, 0]], np.int64)),
    ("int32 [3]", types_pb2.DT_INT32, np.array([-1, 0, 7], np.int32)),
    ("string [2]", types_pb2.DT_STRING, np.array([b"a", b"\xff\x00"], dtype=object)),
    ("bool [2]", types_pb2.DT_BOOL, np.array([True, False])),
    ("large [300,200] (multi-byte lengths)", types_pb2.DT_FLOAT, np.random.default_rng(0).random(
        (300, 200), dtype=np.float32)),
]


@pytest.mark.parametrize("name, dtype, value", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("version", [1, 0, 300])
def test_response_bytes_parse_to_the_slow_paths_response(name, dtype, value, version):
    servable = _Servable("taxi-model", version)
    sig = Signature("serving_default", "tensorflow/serving/predict", {},
                    {"out": TensorSpec("out", "o:0", dtype, None), "b": TensorSpec("b", "b:0", types_pb2.DT_FLOAT, None)})
    results = {"out": value, "b": np.array([[3.0]], np.float32)}
    keys = ("b", "out")
    expected = handlers.predict_response(servable, sig, results, keys)
    encoder = wire.ResponseEncoder(servable.name, servable.version, sig.name, keys,
                                   {k: sig.outputs[k].dtype for k in keys})
    parsed = predict_pb2.PredictResponse.FromString(encoder.encode(results))
    # Byte-compared after a deterministic re-serialization: NaN != NaN would fail message equality.
    assert parsed.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True), (
        parsed, expected)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE) and np.size(value) and not np.isnan(value).any():
        assert list(parsed.outputs["out"].float_val or parsed.outputs["out"].double_val) == list(
            np.asarray(value).ravel())


def test_varint_matches_protobufs_encoding():
    from google.protobuf.internal import encoder

    for value in (0, 1, 127, 128, 300, 2**21, 2**35 + 7, 2**63 - 1):
        out = []
        encoder._VarintEncoder()(out.append, value, False)  # pylint: disable=protected-access
        assert wire.varint(value) == b"".join(out)
