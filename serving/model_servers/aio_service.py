"""gRPC front end on `grpc.aio` (stand-in option `--grpc_aio`): the same services, one event loop.

The default front end (grpc_service) is grpcio's thread-pool server: each request is handed from
grpc's poller thread to a worker thread and back, and with batching each waiting request is a
parked thread. Here the requests are coroutines on one event loop in a thread of its own:
- Predict without batching runs on the loop thread (no hand-off at all: the lowest latency for
  one client);
- Predict on a batched signature queues a future; batches run in worker threads while the loop
  decodes the next requests (serving.batching.async_batcher);
- every other method (Classify, Regress, MultiInference, metadata, ModelService) runs its
  handler unchanged in a worker thread, as in the thread-pool front end.
Status codes and messages are exactly the thread front end's: both call serving.servables.handlers,
and expected failures leave as their TF Serving code, anything else as INTERNAL without Python text.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from typing import Optional

import grpc
from grpc import aio
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.batching import async_batcher
from serving.core.request_logger import log_request
from serving.servables import handlers
from serving.util.errors import ServingError, internal_error

log = logging.getLogger("serving")


def _in_worker(handler):
    async def method(self, request, context):
        try:
            return await self._loop.run_in_executor(self._pool, handler, self._manager, request)
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001 - report, do not crash the server
            error = internal_error(err, handler.__name__)
        await context.abort(error.code, error.message)
    method.__name__ = handler.__name__
    return method


class AioPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager, loop, pool: futures.Executor):
        self._manager, self._loop, self._pool = manager, loop, pool

    async def Predict(self, request, context):
        try:
            spec = handlers._require_spec(request)  # pylint: disable=protected-access
            with self._manager.servable(spec) as servable:
                sig, inputs, output_keys = handlers.predict_prepare(
                    servable, request, handlers.signature_method_check(self._manager))
                if servable.batcher is not None and sig.batchable:
                    results = await async_batcher.run_batched(servable.batcher, servable, sig, inputs, output_keys,
                                                              self._pool)
                else:
                    results = servable.run(sig, inputs, output_keys)  # = run_direct here
                response = handlers.predict_response(servable, sig, results, output_keys)
            log_request(self._manager, "predict", request, response)
            return response
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001
            error = internal_error(err, "predict")
        await context.abort(error.code, error.message)

    Classify = _in_worker(handlers.classify)
    Regress = _in_worker(handlers.regress)
    MultiInference = _in_worker(handlers.multi_inference)
    GetModelMetadata = _in_worker(handlers.get_model_metadata)


class AioModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager, loop, pool: futures.Executor):
        self._manager, self._loop, self._pool = manager, loop, pool

    GetModelStatus = _in_worker(handlers.get_model_status)
    HandleReloadConfigRequest = _in_worker(handlers.reload_config)


class AioGrpcServer:
    """A grpc.aio server on its own event loop thread, started and stopped from ordinary code."""

    def __init__(self, manager, options, max_workers: int = 8):
        self._manager = manager
        self._options = list(options)
        self._pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-aio-worker")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server = None
        self._stopped = None

    def start(self, address: str, credentials=None) -> int:
        """Listen on `address` and serve; the bound port (0 when it cannot listen)."""
        ready: futures.Future = futures.Future()

        async def serve():
            try:
                loop = asyncio.get_running_loop()
                self._stopped = asyncio.Event()
                server = aio.server(options=self._options, maximum_concurrent_rpcs=None)
                prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
                    AioPredictionService(self._manager, loop, self._pool), server)
                model_service_pb2_grpc.add_ModelServiceServicer_to_server(
                    AioModelService(self._manager, loop, self._pool), server)
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
