"""The frames between the compiled gRPC front end (`grpc_frontend/`) and the Python server process.

The front end (C++, gRPC's generic async API) owns the gRPC port: HTTP/2, TLS-free transport,
flow control, deadlines. It hands each call's method and request bytes to the Python process over
one Unix stream socket and finishes the call with the status and response bytes that come back.
Python never touches gRPC per request, so what it pays per request is the request's own work
(parse, checks, its share of a batched Session run, the response), and what arrived while a batch
ran is read in one go and becomes the next batch.

All integers little-endian.

Front end -> Python (a call, or control when call_id is 0):
    u32 length (of what follows) | u64 call_id | u8 method | request bytes
    control: call_id 0, method 0, payload b"<port>" once the port is bound, or b"0 <error>".
Python -> front end (an answer):
    u32 length | u64 call_id | u8 status code | u32 message length | message (UTF-8) | response bytes
    control: call_id 0, code 0, message b"shutdown", payload b"<grace seconds>": stop taking calls,
    finish the ones in flight (the Python side keeps answering) for at most the grace, then exit.
"""
from __future__ import annotations

import struct
from typing import List, Tuple

# Method numbers; the front end answers any other method UNIMPLEMENTED itself (as a C++ server does
# for a method it has not registered). Keep in step with kMethods in grpc_frontend/grpc_frontend.cc.
METHODS = (
    "",  # 0: control
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
)
PREDICT, CLASSIFY, REGRESS, MULTI_INFERENCE, GET_MODEL_METADATA, GET_MODEL_STATUS, RELOAD_CONFIG = range(1, 8)

_CALL_HEAD = struct.Struct("<IQB")  # length, call_id, method
_ANSWER_HEAD = struct.Struct("<IQBI")  # length, call_id, code, message length
CALL_HEAD_SIZE = _CALL_HEAD.size
MAX_FRAME_BYTES = 2**31 + 64  # a request may be up to TF Serving's kint32max bytes


class ProtocolError(Exception):
    """The peer sent bytes that are not a frame: the connection cannot be trusted any more."""


def encode_call(call_id: int, method: int, payload: bytes) -> bytes:
    """A call frame (what the front end sends; used by tests that stand in for it)."""
    return _CALL_HEAD.pack(8 + 1 + len(payload), call_id, method) + payload


def encode_answer(call_id: int, code: int, message: bytes = b"", payload: bytes = b"") -> bytes:
    """An answer frame: `code` is the gRPC status code's number, `payload` the response (code 0 only)."""
    return _ANSWER_HEAD.pack(8 + 1 + 4 + len(message) + len(payload), call_id, code, len(message)) + message + payload


def shutdown_frame(grace_s: float) -> bytes:
    return encode_answer(0, 0, b"shutdown", f"{grace_s:g}".encode())


def decode_calls(buffer: bytearray) -> Tuple[List[Tuple[int, int, bytes]], int]:
    """The complete call frames at the start of `buffer` as (call_id, method, payload), and how many
    bytes they took; a trailing partial frame is left for the next read."""
    calls, offset, end = [], 0, len(buffer)
    view = memoryview(buffer)
    try:
        while end - offset >= CALL_HEAD_SIZE:
            length, call_id, method = _CALL_HEAD.unpack_from(buffer, offset)
            if length < 9 or length > MAX_FRAME_BYTES:
                raise ProtocolError(f"call frame of length {length}")
            if end - offset < 4 + length:
                break
            calls.append((call_id, method, bytes(view[offset + CALL_HEAD_SIZE:offset + 4 + length])))
            offset += 4 + length
    finally:
        view.release()
    return calls, offset


def decode_answers(buffer: bytearray) -> Tuple[List[Tuple[int, int, bytes, bytes]], int]:
    """The complete answer frames at the start of `buffer` as (call_id, code, message, payload)
    (used by tests that stand in for the front end)."""
    answers, offset, end = [], 0, len(buffer)
    while end - offset >= _ANSWER_HEAD.size:
        length, call_id, code, message_len = _ANSWER_HEAD.unpack_from(buffer, offset)
        if end - offset < 4 + length:
            break
        start = offset + _ANSWER_HEAD.size
        answers.append((call_id, code, bytes(buffer[start:start + message_len]),
                        bytes(buffer[start + message_len:offset + 4 + length])))
        offset += 4 + length
    return answers, offset
