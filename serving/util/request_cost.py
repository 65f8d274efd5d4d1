"""What a request will cost, read from what it declares, before any work that grows with it.

A TensorProto's typed `*_val` fields may carry fewer values than its shape declares: TensorFlow's
`Tensor::FromProto` fills the rest with the last value (FromProtoField, tensorflow/core/framework/
tensor.cc), so a Predict of about 30 bytes can declare a string tensor of 1,000,000,000 elements and
the server would build it (issue 29: the process sat at 70% CPU, every later request timed out).
Here every input tensor of a request is priced from its shape, dtype and field sizes (O(rank) per
tensor, no element is touched) and the request is refused, in microseconds, when:
- its shape is not a valid TensorShape (TensorShapeBase::IsValid, tensor_shape.cc: more than 254
  dimensions, a negative dimension, an element count past int64; `unknown_rank` is ignored there for
  a TensorShape, "backwards compatibility", and so here): FromProto fails, so
  INVALID_ARGUMENT "tensor parsing error: <alias>", as TF Serving's GetInputValues answers
  (tensorflow/cc/saved_model/util.cc);
- its signature is batched and its 0th dimension is over the batch limit: INVALID_ARGUMENT in
  TensorFlow's words (shared_batch_scheduler.h ValidateBatchTaskQueueCapacity: "Task size %d is
  larger than maximum input batch size %d", the limit being the queue's input_batch_size_limit,
  i.e. max_batch_size), which TF Serving answers once its BatchingSession has the tensor;
- the tensors it would decode into need more bytes than the per-request memory budget
  (`RequestLimits.max_request_bytes`, `--request_memory_budget_bytes`): RESOURCE_EXHAUSTED, the code
  TensorFlow gives an allocation over its limit ("OOM when allocating tensor") and gRPC a message
  over its size limit. TF Serving has no such budget: it allocates (32 GB for the request above) or
  fails the allocation, whose FromProto then answers "tensor parsing error".
Classify, Regress and MultiInference build one serialized tf.Example per example with the context
in front (util.cc InputToSerializedExampleTensor): a large context times many examples is priced
the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple

import grpc
from tensorflow.core.framework import types_pb2

from serving.util.errors import ServingError, invalid_argument

# TensorShapeBase::MaxDimensions() (tensorflow/core/framework/tensor_shape.h:63 in TF 2.16).
MAX_DIMENSIONS = 254
_INT64_MAX = 2 ** 63 - 1
# One string element: TensorFlow's tstring (24 bytes, tsl/platform/ctstring_internal.h TF_TString)
# plus the numpy object array's pointer the request is decoded into first.
STRING_ELEMENT_BYTES = 24 + 8
# What a 64 MiB budget admits: 16M floats, 2M strings; a batch of 1,000 tf.Examples of 1 KB needs ~1 MB.
DEFAULT_MAX_REQUEST_BYTES = 64 << 20

_ITEMSIZE = {types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8, types_pb2.DT_INT32: 4, types_pb2.DT_INT16: 2,
             types_pb2.DT_INT8: 1, types_pb2.DT_UINT8: 1, types_pb2.DT_UINT16: 2, types_pb2.DT_INT64: 8,
             types_pb2.DT_UINT32: 4, types_pb2.DT_UINT64: 8, types_pb2.DT_BOOL: 1, types_pb2.DT_HALF: 2,
             types_pb2.DT_BFLOAT16: 2, types_pb2.DT_COMPLEX64: 8, types_pb2.DT_COMPLEX128: 16}
_STRING_FIELD = "string_val"


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Per-request bounds (stand-in only; ServerOptions.request_limits, which every loaded servable is built with)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self):
        if self.max_request_bytes < 1:
            raise ValueError(f"the per-request memory budget must be at least 1 byte, not {self.max_request_bytes}")


def declared_shape(proto, alias: str) -> Tuple[tuple, int]:
    """(dimensions, element count) `proto` declares, checked as TensorShapeBase<TensorShape>::IsValid
    checks a proto (tensor_shape.cc)."""
    dims = proto.tensor_shape.dim
    if len(dims) > MAX_DIMENSIONS:
        raise invalid_argument(f"tensor parsing error: {alias}")
    sizes, count = tuple(d.size for d in dims), 1
    for size in sizes:  # MultiplyWithoutOverflow at every step, as IsValid does
        if size < 0:
            raise invalid_argument(f"tensor parsing error: {alias}")
        count *= size
        if count > _INT64_MAX:
            raise invalid_argument(f"tensor parsing error: {alias}")
    return sizes, count


def tensor_bytes(proto, count: int) -> int:
    """Bytes the decoded tensor takes: elements x item size; a string element its tstring, its
    pointer and its bytes (the carried ones, then the last one again for each padded element)."""
    if count == 0:
        return 0
    if proto.dtype != types_pb2.DT_STRING:
        return count * _ITEMSIZE.get(proto.dtype, 8)
    carried = proto.ByteSize()  # every value's bytes, in C: no Python loop over the values
    values = proto.string_val
    padded = count - len(values)
    last = len(values[-1]) if values and not proto.tensor_content else 0
    return count * STRING_ELEMENT_BYTES + carried + max(padded, 0) * last


def check_inputs(protos: Mapping[str, object], limits: RequestLimits, batch_limit: Optional[int] = None) -> int:
    """Refuse a request whose input tensors cannot be parsed, exceed the batch limit (`batch_limit`:
    the batched signature's max_batch_size, None when unbatched) or the memory budget; their bytes."""
    total, largest_dim0 = 0, 0
    for alias in sorted(protos):
        proto = protos[alias]
        shape, count = declared_shape(proto, alias)
        if shape:
            largest_dim0 = max(largest_dim0, shape[0])
        total += tensor_bytes(proto, count)
    if batch_limit is not None and largest_dim0 > batch_limit:
        raise invalid_argument(f"Task size {largest_dim0} is larger than maximum input batch size {batch_limit}")
    _check_budget(total, limits)
    return total


def check_examples(input_proto, limits: RequestLimits) -> int:
    """Refuse a tensorflow.serving.Input whose serialized examples (each with the context in front)
    exceed the budget; their bytes."""
    kind = input_proto.WhichOneof("kind")
    total = input_proto.ByteSize()
    if kind == "example_list_with_context":
        lst = input_proto.example_list_with_context
        total += len(lst.examples) * (lst.context.ByteSize() + STRING_ELEMENT_BYTES)
    elif kind == "example_list":
        total += len(input_proto.example_list.examples) * STRING_ELEMENT_BYTES
    _check_budget(total, limits)
    return total


def _check_budget(total: int, limits: RequestLimits) -> None:
    if total > limits.max_request_bytes:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Request needs {total} bytes for its input tensors, more than the per-request memory "
                           f"budget of {limits.max_request_bytes} bytes (--request_memory_budget_bytes)")
