"""gRPC front end: TF Serving's PredictionService and ModelService on the official stubs.

Any TF Serving client (this project's, TFX's InfraValidator, a Go or Java one) talks to it unchanged.
Expected failures leave as the TF Serving status code and message; anything else is logged and
returned as INTERNAL, and the server keeps serving.
"""
from __future__ import annotations

import functools
import logging

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.servables import handlers
from serving.util.errors import ServingError, internal_error

log = logging.getLogger("serving")


def _rpc(handler):
    @functools.wraps(handler)
    def method(self, request, context):
        try:
            return handler(self._manager, request)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - report, do not crash the server
            error = internal_error(err, handler.__name__)  # trace to the log, no Python text to the client
            context.abort(error.code, error.message)
    return method


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager):
        self._manager = manager

    Predict = _rpc(handlers.predict)
    Classify = _rpc(handlers.classify)
    Regress = _rpc(handlers.regress)
    MultiInference = _rpc(handlers.multi_inference)
    GetModelMetadata = _rpc(handlers.get_model_metadata)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager):
        self._manager = manager

    GetModelStatus = _rpc(handlers.get_model_status)
    HandleReloadConfigRequest = _rpc(handlers.reload_config)


def add_services(server: grpc.Server, manager) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
