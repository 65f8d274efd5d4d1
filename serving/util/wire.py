"""PredictResponse bytes written directly, for the gRPC fast path (`--grpc_aio`).

Building a PredictResponse message per request (model_spec, the outputs map, one TensorProto per
output, its shape and values) and serializing it costs ~15 us in Python, a large share of what
the server may spend per request under load. A response is the model_spec (the same for every
request of a signature) and one TensorProto per output (dtype, shape, values): the model_spec's
bytes are made once per plan, and float/double outputs are written as their packed value bytes
straight from the array. Any other dtype is encoded by `tensors.from_ndarray` (the slow path's
own encoder) and embedded, so every dtype answers exactly what `handlers.predict_response` answers:
tests/serving/test_serving_wire.py parses both and compares them.

Wire format (protobuf encoding, field numbers from predict.proto / tensor.proto / tensor_shape.proto):
PredictResponse { 1: map<string, TensorProto> outputs (entries {1: key, 2: value}), 2: ModelSpec },
TensorProto { 1: dtype (varint), 2: tensor_shape, 5: float_val (packed fixed32), 6: double_val (packed fixed64) },
TensorShapeProto { 2: dim { 1: size (varint) } }.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.util import tensors


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return bytes((tag << 3 | 2,)) + varint(len(payload)) + payload


_PACKED = {  # dtype -> (value field number, little-endian numpy dtype of its packed values)
    types_pb2.DT_FLOAT: (5, np.dtype("<f4")),
    types_pb2.DT_DOUBLE: (6, np.dtype("<f8")),
}
_SHAPE_CACHE: dict = {}


def _shape_bytes(shape) -> bytes:
    data = _SHAPE_CACHE.get(shape)
    if data is None:
        # AsProtoField always writes the shape (empty for a scalar); a zero size is an empty dim.
        dims = b"".join(_field(2, (b"\x08" + varint(size)) if size else b"") for size in shape)
        data = _field(2, dims)
        if len(_SHAPE_CACHE) < 4096:
            _SHAPE_CACHE[shape] = data
    return data


def tensor_bytes(array: np.ndarray, dtype: int) -> bytes:
    """The serialized TensorProto `tensors.from_ndarray(array, dtype=dtype)` makes."""
    packed = _PACKED.get(dtype)
    if packed is not None and array.dtype == packed[1]:
        head = b"\x08" + varint(dtype) + _shape_bytes(array.shape)
        if array.size == 0:
            return head
        return head + _field(packed[0], array.tobytes())
    return tensors.from_ndarray(array, tensor_pb2.TensorProto(), dtype).SerializeToString()


class ResponseEncoder:
    """PredictResponse bytes for one (servable version, signature, output keys)."""

    def __init__(self, model_name: str, version: int, signature_name: str, output_keys: Sequence[str],
                 output_dtypes: Mapping[str, int]):
        spec = _field(1, model_name.encode()) + _field(2, b"\x08" + varint(version)) \
            + _field(3, signature_name.encode())
        self._spec = _field(2, spec)  # PredictResponse.model_spec
        self._outputs = [(alias, _field(1, alias.encode()), output_dtypes[alias]) for alias in output_keys]

    def encode(self, results: Mapping[str, np.ndarray]) -> bytes:
        parts = []
        for alias, key, dtype in self._outputs:
            parts.append(_field(1, key + _field(2, tensor_bytes(np.asarray(results[alias]), dtype))))
        parts.append(self._spec)
        return b"".join(parts)
