"""One error type for every expected serving failure, carrying the gRPC status TF Serving would return.

The request handlers are shared by the gRPC and the REST front ends, so they raise `ServingError`
with a `grpc.StatusCode`; each front end turns it into its own wire form (gRPC status, or HTTP code
plus `{"error": ...}` as TF Serving's REST layer does).
"""
from __future__ import annotations

import logging

import grpc

log = logging.getLogger("serving")

# What gRPC servers answer, as INTERNAL, for request bytes that do not parse as the method's request
# (grpcio's words; a C++ server says INTERNAL too): every front end answers them so.
UNPARSABLE_MESSAGE = "Exception deserializing request!"
# What a client sees of a failure that is ours (a bug, not its request): never a Python exception text.
INTERNAL_MESSAGE = "Internal error while processing the request (details are in the server log)"


class ServerConfigError(Exception):
    """The server cannot start as asked (bad flag, unreadable config file, port in use): one line saying so."""


class ServingError(Exception):
    """A request failed with a TF Serving status code and a one-line message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def internal_error(err: BaseException, where: str) -> ServingError:
    """Log `err` with its trace server-side and return the generic INTERNAL error for the client."""
    log.error("unexpected error in %s", where, exc_info=(type(err), err, err.__traceback__))
    return ServingError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


# TF Serving's http_status_code mapping (util/net_http ToHTTPStatusCode).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


# error_codes.Code numbers used in ModelVersionStatus.status (tensorflow/core/protobuf/error_codes.proto).
def error_code_number(code: grpc.StatusCode) -> int:
    return code.value[0]
