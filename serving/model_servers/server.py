"""The stand-in model server: model manager + gRPC + REST, started and stopped as one object.

`ModelServer(options).start()` loads the configured models (in the background), listens on
127.0.0.1 unless told otherwise, and `stop()` closes the listeners then unloads every version.
Tests, the demo, the benchmark and `taxi-pipeline serve` all run it through this one class.

As TF Serving's Server::BuildAndStart (model_servers/server.cc:196-320 at 2.16.1) builds
ServerCore::Options from its flags and ServerCore from those, each part here is built whole from
the options derived from `ServerOptions`: the request logger and the metrics first, then the
manager (`ManagerOptions`, which hold them), whose loader builds every version from one
`ServableOptions`; then the gRPC front end and the REST server, given the manager.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Optional

import grpc

from serving.core.manager import ManagerOptions, ModelManager
from serving.core.request_logger import ServerRequestLogger
from serving.model_servers import front_end
from serving.model_servers.rest import RestServer
from serving.model_servers.server_options import ServerOptions, TlsConfig  # noqa: F401  (the server's API)
from serving.servables import warmup
from serving.servables.servable import SavedModelServable, ServableOptions, session_config
from serving.util.errors import ServingError
from serving.util.metrics import ServingMetrics

log = logging.getLogger("serving")


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self._request_logger = ServerRequestLogger(options.saved_model_tags)
        self._request_logger.update(options.config)
        self.metrics: Optional[ServingMetrics] = None
        if options.prometheus_path is not None:
            self.metrics = ServingMetrics(version_states=self._version_states)
        servable_options = ServableOptions(
            saved_model_tags=tuple(options.saved_model_tags),
            session_config=session_config(options.intra_op_threads, options.inter_op_threads),
            run_in_caller_thread=options.run_in_caller_thread, batching=options.batching,
            request_limits=options.request_limits, metrics=self.metrics)
        self.manager = ModelManager(ManagerOptions(
            config=options.config,
            loader=functools.partial(load_version, servable_options, options.warmup, self._warm_predict),
            poll_wait_s=options.poll_wait_s, max_load_retries=options.max_load_retries,
            load_retry_interval_s=options.load_retry_interval_s,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            enable_signature_method_name_check=options.enable_signature_method_name_check,
            request_logger=self._request_logger))
        self._front_end_kind = front_end.choose_front_end(options)
        self._grpc: Optional[front_end.GrpcFrontEnd] = None
        self._rest: Optional[RestServer] = None
        self.grpc_port: Optional[int] = None
        self.rest_port: Optional[int] = None

    @property
    def front_end(self) -> str:
        """The gRPC front end serving ("compiled", "aio" or "threads"; before start, the one chosen)."""
        return self._grpc.kind if self._grpc is not None else self._front_end_kind

    def _warm_predict(self, servable, request) -> None:
        """A warmup Predict record through the gRPC front end's own Predict path (see run_warmup)."""
        self._grpc.warm_predict(servable, request)

    def _warm_transport(self) -> None:
        """One Predict through this server's own gRPC port before any model loads (it fails: no
        ModelSpec), so the first call of the method's server path (dispatch, request parsing,
        handler, status) is paid here rather than by the first client; SavedModel warmup then
        warms the success path and the model (_warm_predict). Best effort; skipped with TLS."""
        o = self.options
        if o.tls is not None or o.grpc_reuseport:  # with SO_REUSEPORT the call could reach a sibling process
            return
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        host = "127.0.0.1" if o.host in ("", "0.0.0.0") else ("::1" if o.host in ("::", "[::]") else o.host)
        try:
            with grpc.insecure_channel(f"{front_end.bracket(host)}:{self.grpc_port}") as channel:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_pb2.PredictRequest(),
                                                                                  timeout=10)
        except grpc.RpcError:
            pass  # INVALID_ARGUMENT "Missing ModelSpec", as expected (or unreachable: nothing warmed)

    def _version_states(self):
        from tensorflow_serving.apis import get_model_status_pb2, model_pb2

        names = get_model_status_pb2.ModelVersionStatus.State.Name
        for model in self.manager.model_names():
            try:
                statuses = self.manager.status(model_pb2.ModelSpec(name=model))
            except ServingError:  # no version known yet
                continue
            for status in statuses:
                yield model, status.version, names(status.state)

    def start(self) -> "ModelServer":
        o = self.options
        front_end_options = front_end.FrontEndOptions(front_end.grpc_server_options(o), o.grpc_max_threads,
                                                      self.metrics)
        self._grpc, self.grpc_port = front_end.start_front_end(
            self._front_end_kind, self.manager, front_end_options, f"{front_end.bracket(o.host)}:{o.grpc_port}",
            front_end.server_credentials(o.tls), required=bool(o.grpc_compiled))
        try:
            if o.rest_port is not None:
                self._rest = RestServer(self.manager, o.host, o.rest_port, max_body_bytes=o.max_message_bytes,
                                        metrics=self.metrics, metrics_path=o.prometheus_path)
                self.rest_port = self._rest.port
        except OSError as err:
            raise OSError(f"cannot listen for REST on {o.host}:{o.rest_port}: {err.strerror}") from None
        self._warm_transport()
        self._grpc.count_requests()  # from here on: the transport's own warm call above is not a client's
        self.manager.start()
        if self._rest is not None:
            self._rest.start()
        log.debug("Serving gRPC on %s:%d%s", o.host, self.grpc_port,
                  f", REST on {o.host}:{self.rest_port}" if self._rest is not None else "")
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace_s)
            self._front_end_kind, self._grpc = self._grpc.kind, None
        self.manager.stop()
        self._request_logger.close()

    def wait_until_available(self, name: str, timeout_s: float = 60.0, version: Optional[int] = None) -> bool:
        return self.manager.wait_until_available(name, timeout_s, version)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def load_version(options: ServableOptions, warmup_options: warmup.WarmupOptions, warm_predict,
                 name: str, version: int, path: str) -> SavedModelServable:
    """The manager's loader: the version loaded, counted in the load metrics, and warmed up (before
    the manager marks it AVAILABLE; a failed warmup fails the load)."""
    started = time.monotonic()
    try:
        servable = SavedModelServable(name, version, path, options)
    except Exception:
        if options.metrics is not None:
            options.metrics.record_load(path, False, time.monotonic() - started)
        raise
    if options.metrics is not None:
        options.metrics.record_load(path, True, time.monotonic() - started)
    try:
        warmup.run_warmup(servable, path, warmup_options, options.metrics, predict=warm_predict)
    except Exception:
        servable.close()
        raise
    return servable
