"""TensorProto <-> numpy without per-request TensorFlow overhead.

`tf.make_tensor_proto`/`tf.make_ndarray` cost tens of microseconds per call, a large share of a
sub-millisecond request, so the common dtypes take a direct path here and the rest fall back to
TensorFlow. Responses carry values in the typed `*_val` fields, as TF Serving's default
(`AsProtoField`) does, so clients reading `float_val` work unchanged.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.util.errors import invalid_argument

# DataType -> (numpy dtype, TensorProto repeated field holding its values).
_FIELDS = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_STRING: (object, "string_val"),
}
_DTYPE_OF_NUMPY = {np.dtype(np_type): dt for dt, (np_type, _) in _FIELDS.items()
                   if np_type is not object and dt not in (types_pb2.DT_UINT16,)}


def dtype_name(dtype: int) -> str:
    """'float', 'string', ... as TensorFlow names them in its own messages."""
    name = types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)
    return name[3:].lower() if name.startswith("DT_") else name


def numpy_dtype(dtype: int):
    entry = _FIELDS.get(dtype)
    if entry is not None:
        return entry[0]
    import tensorflow as tf

    return tf.dtypes.as_dtype(dtype).as_numpy_dtype


class TensorParseError(ValueError):
    """A TensorProto that TensorFlow's `Tensor::FromProto` would refuse (bad shape, dtype or content)."""


def to_ndarray(proto: tensor_pb2.TensorProto, alias: Optional[str] = None) -> np.ndarray:
    """Decode a TensorProto as TensorFlow's `Tensor::FromProto` does (tensorflow/core/framework/tensor.cc).

    Typed `*_val` fields: fewer values than the shape needs are padded with the last one, none
    at all gives zeros, more are cut to the shape; `tensor_content` must hold exactly the
    shape's bytes. What FromProto refuses (DT_INVALID, unknown rank, negative dimension,
    content of the wrong length) is INVALID_ARGUMENT "tensor parsing error: <alias>", as TF
    Serving's GetInputValues (tensorflow/cc/saved_model/util.cc) answers; with `alias=None` a
    `TensorParseError` is raised instead, for callers that are not decoding a request.
    """
    try:
        return _decode(proto)
    except TensorParseError:
        if alias is None:
            raise
        raise invalid_argument(f"tensor parsing error: {alias}") from None


def _decode(proto: tensor_pb2.TensorProto) -> np.ndarray:
    dims = proto.tensor_shape.dim
    shape = tuple(d.size for d in dims)
    if any(s < 0 for s in shape):
        raise TensorParseError("negative dimension")
    entry = _FIELDS.get(proto.dtype)
    if entry is None:
        if proto.dtype == types_pb2.DT_INVALID or proto.dtype not in types_pb2.DataType.values():
            raise TensorParseError("invalid dtype")
        return _slow_to_ndarray(proto)
    np_type, field = entry
    count = math.prod(shape)
    if proto.tensor_content:
        if np_type is object:
            return _slow_to_ndarray(proto)
        if len(proto.tensor_content) != count * np.dtype(np_type).itemsize:
            raise TensorParseError("tensor_content does not hold the shape's bytes")
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape)
    values = getattr(proto, field)
    if np_type is object:
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    elif field == "int_val" and np_type is not np.int32:
        flat = np.array(values, dtype=np.int32).astype(np_type)  # int8/16, uint8/16 wrap as C++'s cast does
    else:
        flat = np.array(values, dtype=np_type)
    if flat.size == 0:
        flat = np.full(count, b"", dtype=object) if np_type is object else np.zeros(count, dtype=np_type)
    elif flat.size < count:  # FromProtoField repeats the last value
        flat = np.concatenate([flat, np.full(count - flat.size, flat[-1], dtype=flat.dtype)])
    elif flat.size > count:
        flat = flat[:count]
    return flat.reshape(shape)


def _slow_to_ndarray(proto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 - malformed content, whatever numpy/TF says about it
        raise TensorParseError("cannot decode") from None


def from_ndarray(array, proto: Optional[tensor_pb2.TensorProto] = None,
                 dtype: Optional[int] = None) -> tensor_pb2.TensorProto:
    """Encode a result into typed `*_val` fields (TF Serving's AsProtoField form)."""
    array = np.asarray(array)
    proto = proto if proto is not None else tensor_pb2.TensorProto()
    if dtype is None:
        dtype = types_pb2.DT_STRING if array.dtype.kind in "OSU" else _DTYPE_OF_NUMPY.get(array.dtype)
    if dtype is None or dtype not in _FIELDS:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    proto.dtype = dtype
    proto.tensor_shape.SetInParent()  # AsProtoField always writes a shape, empty for a scalar
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    field = _FIELDS[dtype][1]
    flat = array.ravel()
    if dtype == types_pb2.DT_STRING:
        getattr(proto, field).extend([v if isinstance(v, bytes) else str(v).encode() for v in flat])
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def shape_of(proto: tensor_shape_pb2.TensorShapeProto) -> Optional[Sequence[int]]:
    """A signature's declared shape, None when the rank is unknown; -1 for unknown dimensions."""
    if proto.unknown_rank:
        return None
    return tuple(d.size for d in proto.dim)


def shape_matches(declared: Optional[Sequence[int]], actual: Sequence[int]) -> bool:
    if declared is None:
        return True
    if len(declared) != len(actual):
        return False
    return all(d < 0 or d == a for d, a in zip(declared, actual))


def format_shape(shape: Optional[Sequence[int]]) -> str:
    return "<unknown rank>" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"
