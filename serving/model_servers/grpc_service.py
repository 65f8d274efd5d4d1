"""The thread-pool gRPC front end (`--grpc_aio=false`): TF Serving's PredictionService and ModelService
on the official stubs in grpcio's thread-pool server, a worker thread per request.

Any TF Serving client (this project's, TFX's InfraValidator, a Go or Java one) talks to it unchanged.
Expected failures leave as the TF Serving status code and message; anything else is logged and
returned as INTERNAL, and the server keeps serving.
"""
from __future__ import annotations

import functools
import logging
import time
from concurrent import futures
from typing import Optional, Sequence, Tuple

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.servables import handlers
from serving.servables.servable import DEFAULT_SIGNATURE
from serving.util import metrics as metrics_lib
from serving.util.errors import ServingError, internal_error

log = logging.getLogger("serving")


def _rpc(handler, api=None):
    """A servicer method; `api` names the RPC in TF Serving's request metrics (Predict/Classify/Regress)."""
    @functools.wraps(handler)
    def method(self, request, context):
        if api is None or self._metrics is None:
            return _call(handler, self._manager, request, context)
        started = time.perf_counter()
        token = metrics_lib.current_api.set(api)
        status = "OK"
        try:
            return _call(handler, self._manager, request, context)
        except Exception:  # context.abort raises; record the status it sent
            status = context.code().name if context.code() is not None else "UNKNOWN"
            raise
        finally:
            metrics_lib.current_api.reset(token)
            spec = request.model_spec
            self._metrics.record_request(spec.name, api, spec.signature_name or DEFAULT_SIGNATURE, "GRPC", status,
                                         started)
    return method


def _call(handler, manager, request, context):
    try:
        return handler(manager, request)
    except ServingError as err:
        context.abort(err.code, err.message)
    except Exception as err:  # noqa: BLE001 - report, do not crash the server
        error = internal_error(err, handler.__name__)  # trace to the log, no Python text to the client
        context.abort(error.code, error.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager):
        self._manager = manager
        self._metrics = None  # requests are counted once count_requests gives the metrics

    def count_requests(self, metrics) -> None:
        self._metrics = metrics

    Predict = _rpc(handlers.predict, "Predict")
    Classify = _rpc(handlers.classify, "Classify")
    Regress = _rpc(handlers.regress, "Regress")
    MultiInference = _rpc(handlers.multi_inference)
    GetModelMetadata = _rpc(handlers.get_model_metadata)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager):
        self._manager = manager
        self._metrics = None

    GetModelStatus = _rpc(handlers.get_model_status)
    HandleReloadConfigRequest = _rpc(handlers.reload_config)


def warm_predict(manager, servable, request) -> bytes:
    """One warmup Predict as this front end runs one: parsed from its bytes, the handler on the
    version being loaded, the response serialized (the codec's first calls paid before AVAILABLE)."""
    from tensorflow_serving.apis import predict_pb2

    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    return handlers.predict_on(servable, parsed, handlers.signature_method_check(manager)).SerializeToString()


class ThreadPoolGrpcServer:
    """grpcio's thread-pool server with both services: a `front_end.GrpcFrontEnd`."""

    kind = "threads"

    def __init__(self, manager, options: Sequence[Tuple[str, object]], max_workers: int, metrics=None):
        self._manager = manager
        self._metrics = metrics
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                                   options=list(options), maximum_concurrent_rpcs=None)
        self._service = PredictionService(manager)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self._service, self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), self._server)

    def start(self, address: str, credentials: Optional[grpc.ServerCredentials] = None) -> int:
        port = (self._server.add_secure_port(address, credentials) if credentials is not None
                else self._server.add_insecure_port(address))
        if port:
            self._server.start()
        return port

    def warm_predict(self, servable, request) -> bytes:
        return warm_predict(self._manager, servable, request)

    def count_requests(self) -> None:
        self._service.count_requests(self._metrics)

    def stop(self, grace_s: float = 2.0) -> None:
        self._server.stop(grace_s).wait()
