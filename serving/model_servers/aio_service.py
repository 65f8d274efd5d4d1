"""The grpc.aio gRPC front end (`--grpc_compiled=false`, or where the compiled one is not built or TLS is on).

The other front end (grpc_service) is grpcio's thread-pool server: each request is handed from
grpc's poller thread to a worker thread and back, and with batching each waiting request is a
parked thread. Here the requests are coroutines on one event loop in a thread of its own:
- Predict without batching runs on the loop thread (no hand-off at all: the lowest latency for
  one client);
- Predict on a batched signature queues a future; the batch runs on the loop once the loop has no
  other callback due (serving.batching.async_batcher);
- after a first request of a (version, signature, input names, output filter) has passed every
  check, the next ones take a plan (_PredictPlan): decode, run, PredictResponse bytes written
  directly (serving.util.wire);
- a Predict whose tensors declare more than predict_plan.INLINE_DECODE_BYTES (after the checks of
  serving.util.request_cost, which refuse hostile ones in microseconds) is decoded and run in a worker;
- every other method (Classify, Regress, MultiInference, metadata, ModelService) runs its
  handler unchanged in a worker thread, as in the thread-pool front end.
Status codes and messages are exactly the thread front end's: both call serving.servables.handlers,
and expected failures leave as their TF Serving code, anything else as INTERNAL without Python text.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent import futures
from typing import Optional

import grpc
from grpc import aio
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.batching import async_batcher
from serving.model_servers import predict_plan
from serving.core.request_logger import log_request
from serving.servables import handlers
from serving.util import metrics as metrics_lib
from serving.util.errors import UNPARSABLE_MESSAGE, ServingError, internal_error

log = logging.getLogger("serving")


class _Unparsable:
    """What a method receives for request bytes that do not parse as its request."""


_UNPARSABLE = _Unparsable()


def _lenient(request_class):
    """A deserializer that hands the method _UNPARSABLE instead of raising: grpc.aio answers a raising
    deserializer with UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>: ..." (Python
    text; found by the fuzzer, bench.serving_fuzz), where grpcio's thread-pool server and the compiled
    front end answer INTERNAL "Exception deserializing request!"."""
    from google.protobuf.message import DecodeError

    def parse(data):
        try:
            return request_class.FromString(data)
        except DecodeError:
            return _UNPARSABLE
    return parse


def _unary(method, request_class, response_serializer):
    """A unary method handler whose unparsable requests are INTERNAL UNPARSABLE_MESSAGE, as the other
    front ends answer them."""
    async def handler(request, context):
        if request is _UNPARSABLE:
            await context.abort(grpc.StatusCode.INTERNAL, UNPARSABLE_MESSAGE)
        return await method(request, context)
    return grpc.unary_unary_rpc_method_handler(handler, request_deserializer=_lenient(request_class),
                                               response_serializer=response_serializer)


def _in_worker(handler, api=None):
    """A method whose handler runs unchanged in a worker thread; with `api`, counted in the request
    metrics as the thread front end counts it (grpc_service._rpc)."""
    call = functools.partial(metrics_lib.with_api, api, handler)

    async def method(self, request, context):
        metrics = self._metrics if api is not None else None
        started = time.perf_counter()
        try:
            response = await self._loop.run_in_executor(self._pool, call, self._manager, request)
            predict_plan.record(metrics, request, api, "OK", started)
            return response
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001 - report, do not crash the server
            error = internal_error(err, handler.__name__)
        predict_plan.record(metrics, request, api, error.code.name, started)
        await context.abort(error.code, error.message)
    method.__name__ = handler.__name__
    return method


class AioPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager, loop, pool: futures.Executor):
        self._manager, self._loop, self._pool = manager, loop, pool
        self._metrics = None  # requests are counted once count_requests gives the metrics

    def count_requests(self, metrics) -> None:
        self._metrics = metrics

    async def Predict(self, request, context):
        metrics = self._metrics
        started = time.perf_counter()
        try:
            spec = handlers._require_spec(request)  # pylint: disable=protected-access
            with self._manager.servable(spec) as servable:
                response = await self.predict_on(servable, request)
            log_request(self._manager, "predict", request, response)  # bytes (fast path) are parsed only if sampled
            predict_plan.record(metrics, request, "Predict", "OK", started)
            return response
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001
            error = internal_error(err, "predict")
        predict_plan.record(metrics, request, "Predict", error.code.name, started)
        await context.abort(error.code, error.message)

    async def predict_on(self, servable, request) -> bytes:
        """Predict on a held servable: the response's bytes. One whose tensors declare more than
        INLINE_DECODE_BYTES is decoded and run in a worker thread, so the loop keeps answering."""
        if predict_plan.declared_bytes(request) > predict_plan.INLINE_DECODE_BYTES:
            return await self._loop.run_in_executor(self._pool, self._predict_apart, servable, request)
        sig, inputs, output_keys, plan, batched = predict_plan.prepare(
            servable, request, handlers.signature_method_check(self._manager))
        if batched:
            run_started = time.perf_counter()
            results = await async_batcher.run_batched(servable.batcher, servable, sig, inputs, output_keys,
                                                      self._pool)
            if servable.metrics is not None:
                servable.metrics.record_runtime(servable.name, run_started)
        else:
            results = servable.run(sig, inputs, output_keys)  # = run_direct here
        return predict_plan.response_bytes(servable, sig, results, output_keys, plan)

    def _predict_apart(self, servable, request) -> bytes:
        """A large Predict in a worker thread: checked (serving.util.request_cost refuses it at once when
        it is over a limit), decoded, run (batched through the servable's thread batch queue)."""
        sig, inputs, output_keys, plan, _ = predict_plan.prepare(
            servable, request, handlers.signature_method_check(self._manager))
        results = servable.run(sig, inputs, output_keys)
        return predict_plan.response_bytes(servable, sig, results, output_keys, plan)

    Classify = _in_worker(handlers.classify, "Classify")
    Regress = _in_worker(handlers.regress, "Regress")
    MultiInference = _in_worker(handlers.multi_inference)
    GetModelMetadata = _in_worker(handlers.get_model_metadata)


def add_prediction_service(service: AioPredictionService, server) -> None:
    """prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server, except that Predict may
    answer the response's bytes (the fast path) as well as a PredictResponse."""
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2,
                                         regression_pb2)

    methods = {
        "Classify": _unary(service.Classify, classification_pb2.ClassificationRequest,
                          classification_pb2.ClassificationResponse.SerializeToString),
        "Regress": _unary(service.Regress, regression_pb2.RegressionRequest,
                         regression_pb2.RegressionResponse.SerializeToString),
        "Predict": _unary(service.Predict, predict_pb2.PredictRequest, predict_plan.bytes_or_message),
        "MultiInference": _unary(service.MultiInference, inference_pb2.MultiInferenceRequest,
                                inference_pb2.MultiInferenceResponse.SerializeToString),
        "GetModelMetadata": _unary(service.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest,
                                  get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService",
                                                                          methods),))


def add_model_service(service, server) -> None:
    """model_service_pb2_grpc.add_ModelServiceServicer_to_server, with unparsable requests answered
    as the other front ends answer them."""
    from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2

    methods = {
        "GetModelStatus": _unary(service.GetModelStatus, get_model_status_pb2.GetModelStatusRequest,
                                 get_model_status_pb2.GetModelStatusResponse.SerializeToString),
        "HandleReloadConfigRequest": _unary(service.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest,
                                            model_management_pb2.ReloadConfigResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tensorflow.serving.ModelService",
                                                                          methods),))


class AioModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager, loop, pool: futures.Executor):
        self._manager, self._loop, self._pool, self._metrics = manager, loop, pool, None

    GetModelStatus = _in_worker(handlers.get_model_status)
    HandleReloadConfigRequest = _in_worker(handlers.reload_config)


class AioGrpcServer:
    """A grpc.aio server on its own event loop thread, started and stopped from ordinary code: a
    `front_end.GrpcFrontEnd`."""

    kind = "aio"

    def __init__(self, manager, options, max_workers: int = 8, metrics=None):
        self._manager = manager
        self._metrics = metrics
        self._options = list(options)
        self._pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-aio-worker")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server = None
        self._service: Optional[AioPredictionService] = None
        self._stopped = None

    def start(self, address: str, credentials=None) -> int:
        """Listen on `address` and serve; the bound port (0 when it cannot listen)."""
        ready: futures.Future = futures.Future()

        async def serve():
            try:
                loop = asyncio.get_running_loop()
                self._stopped = asyncio.Event()
                server = aio.server(options=self._options, maximum_concurrent_rpcs=None)
                self._service = AioPredictionService(self._manager, loop, self._pool)
                add_prediction_service(self._service, server)
                add_model_service(AioModelService(self._manager, loop, self._pool), server)
                try:
                    port = (server.add_secure_port(address, credentials) if credentials is not None
                            else server.add_insecure_port(address))
                except RuntimeError:  # grpc.aio raises where the sync server returns 0
                    port = 0
                if port:
                    await server.start()
                self._server = server
            except BaseException as err:  # noqa: BLE001 - handed to start()'s caller
                ready.set_exception(err)
                return
            ready.set_result(port)
            if port:
                await self._stopped.wait()

        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="grpc-aio", daemon=True)
        self._thread.start()
        port = ready.result()
        if not port:
            self._thread.join()
        return port

    def count_requests(self) -> None:
        """Count requests in the metrics given at construction from now on."""
        self._service.count_requests(self._metrics)

    def warm_predict(self, servable, request, timeout_s: float = 600.0) -> bytes:
        """One warmup Predict through this front end's path, from the loading thread: parsed from its
        bytes, run on the event loop (plan, batch queue, response bytes made there) and serialized as
        the Predict method's serializer does. Raises what the request raises (a failed warmup)."""
        from tensorflow_serving.apis import predict_pb2

        parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        future = asyncio.run_coroutine_threadsafe(self._service.predict_on(servable, parsed), self._loop)
        return predict_plan.bytes_or_message(future.result(timeout_s))

    def stop(self, grace_s: float = 2.0) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and self._thread.is_alive():
            async def shutdown():
                await server.stop(grace_s)
                self._stopped.set()
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(grace_s + 10)
            except (futures.TimeoutError, RuntimeError):  # pragma: no cover - the loop already ended
                pass
            self._thread.join(grace_s + 10)
        self._server = None
        self._pool.shutdown(wait=False)
