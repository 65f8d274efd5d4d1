"""The stand-in model server: model manager + gRPC + REST, started and stopped as one object.

`ModelServer(options).start()` loads the configured models (in the background), listens on
127.0.0.1 unless told otherwise, and `stop()` closes the listeners then unloads every version.
Tests, the demo, the benchmark and `taxi-pipeline serve` all run it through this one class.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent import futures
from typing import Optional, Sequence, Tuple

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.model_servers import grpc_service
from serving.batching.batcher import BatchingOptions, ServableBatcher
from serving.core.manager import ModelManager
from serving.core.request_logger import ServerRequestLogger
from serving.model_servers.rest import RestServer
from serving.servables import warmup
from serving.servables.servable import SavedModelServable, session_config
from serving.util.errors import ServerConfigError
from serving.util.request_cost import RequestLimits
from serving.util.metrics import ServingMetrics

log = logging.getLogger("serving")

DEFAULT_MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving's gRPC limit (kint32max)


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TF Serving's SSLConfig: server key/cert (PEM), optional CA to verify clients with."""

    server_key: bytes
    server_cert: bytes
    custom_ca: Optional[bytes] = None
    client_verify: bool = False


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    config: model_server_config_pb2.ModelServerConfig
    host: str = "127.0.0.1"
    grpc_port: int = 8500  # 0: pick a free port
    rest_port: int = 8501  # 0: pick a free port; None: no REST
    batching: Optional[BatchingOptions] = None
    poll_wait_s: float = 1.0
    grpc_max_threads: int = 32
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grpc_channel_arguments: Tuple[Tuple[str, object], ...] = ()
    tls: Optional[TlsConfig] = None
    saved_model_tags: Sequence[str] = ("serve",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    run_in_caller_thread: bool = True
    max_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    allow_version_labels_for_unavailable_models: bool = False
    enable_signature_method_name_check: bool = False  # TF Serving's flag of that name (default off)
    warmup: warmup.WarmupOptions = warmup.WarmupOptions()
    # MonitoringConfig.prometheus_config: the REST path of the Prometheus page when enabled, else None.
    prometheus_path: Optional[str] = None
    grpc_aio: bool = True  # stand-in only: gRPC on grpc.aio (serving.model_servers.aio_service); False: thread pool
    # stand-in only: gRPC in the compiled front end (serving.model_servers.compiled_frontend). None: when it
    # is built and neither TLS nor grpc_aio=False asks for a Python one; True: required; False: never.
    grpc_compiled: Optional[bool] = None
    grpc_reuseport: bool = False  # SO_REUSEPORT: several server processes share the port (processes.py)
    # stand-in only: per-request bounds checked before any input is decoded (--request_memory_budget_bytes)
    request_limits: RequestLimits = RequestLimits()


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.manager = ModelManager(
            options.config, loader=self._load, poll_wait_s=options.poll_wait_s,
            max_load_retries=options.max_load_retries, load_retry_interval_s=options.load_retry_interval_s,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models)
        # Read by the request handlers (serving.servables.handlers.signature_method_check).
        self.manager.enable_signature_method_name_check = options.enable_signature_method_name_check
        # Per-model logging_config (TF Serving's ServerRequestLogger); the handlers log through the manager.
        self.manager.request_logger = ServerRequestLogger(options.saved_model_tags)
        self.manager.request_logger.update(options.config)
        self._session_config = session_config(options.intra_op_threads, options.inter_op_threads)
        self.metrics: Optional[ServingMetrics] = None
        if options.prometheus_path is not None:
            self.metrics = ServingMetrics()
            self.metrics.watch_versions(self._version_states)
        self._grpc: Optional[grpc.Server] = None
        self._prediction_service = None
        self._rest: Optional[RestServer] = None
        self.grpc_port: Optional[int] = None
        self.rest_port: Optional[int] = None
        self.front_end = choose_front_end(options)

    def _load(self, name: str, version: int, path: str) -> SavedModelServable:
        started = time.monotonic()
        try:
            servable = SavedModelServable(name, version, path, tags=self.options.saved_model_tags,
                                          config=self._session_config,
                                          run_in_caller_thread=self.options.run_in_caller_thread)
        except Exception:
            if self.metrics is not None:
                self.metrics.record_load(path, False, time.monotonic() - started)
            raise
        if self.metrics is not None:
            self.metrics.record_load(path, True, time.monotonic() - started)
            servable.metrics = self.metrics
        if self.options.batching is not None:
            servable.batcher = ServableBatcher(self.options.batching)
        servable.request_limits = self.options.request_limits
        try:  # before the manager marks the version AVAILABLE; a failed warmup fails the load
            warmup.run_warmup(servable, path, self.options.warmup, self.metrics, predict=self._warm_predict)
        except Exception:
            servable.close()
            raise
        return servable

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
            with grpc.insecure_channel(f"{_bracket(host)}:{self.grpc_port}") as channel:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_pb2.PredictRequest(),
                                                                                  timeout=10)
        except grpc.RpcError:
            pass  # INVALID_ARGUMENT "Missing ModelSpec", as expected (or unreachable: nothing warmed)

    def _warm_predict(self, servable, request) -> None:
        """A warmup Predict record through the gRPC front end's own Predict path (see run_warmup)."""
        front = self._grpc
        if self.front_end != "threads" and front is not None:
            front.warm_predict(servable, request)
        else:
            grpc_service.warm_predict(self.manager, servable, request)

    def _version_states(self):
        from tensorflow_serving.apis import get_model_status_pb2, model_pb2

        from serving.util.errors import ServingError

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
        grpc_options = [("grpc.max_receive_message_length", o.max_message_bytes),
                        ("grpc.max_send_message_length", o.max_message_bytes),
                        ("grpc.so_reuseport", int(o.grpc_reuseport))] + list(o.grpc_channel_arguments)
        address = f"{_bracket(o.host)}:{o.grpc_port}"
        credentials = None
        if o.tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(o.tls.server_key, o.tls.server_cert)], root_certificates=o.tls.custom_ca,
                require_client_auth=o.tls.client_verify)
        if self.front_end == "compiled":
            from serving.model_servers.compiled_frontend import CompiledGrpcServer, FrontEndDidNotStart

            self._grpc = CompiledGrpcServer(self.manager, grpc_options, max_workers=o.grpc_max_threads)
            try:
                self.grpc_port = self._grpc.start(address)
            except FrontEndDidNotStart as err:
                if o.grpc_compiled:  # required
                    raise
                log.warning("%s: serving gRPC on grpc.aio instead", err)
                self.front_end = "aio"
        if self.front_end == "aio":
            from serving.model_servers.aio_service import AioGrpcServer

            self._grpc = AioGrpcServer(self.manager, grpc_options, max_workers=o.grpc_max_threads)
            self.grpc_port = self._grpc.start(address, credentials)
        elif self.front_end == "threads":
            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=o.grpc_max_threads,
                                                                thread_name_prefix="grpc"),
                                     options=grpc_options, maximum_concurrent_rpcs=None)
            self._prediction_service = grpc_service.add_services(self._grpc, self.manager)
            if credentials is not None:
                self.grpc_port = self._grpc.add_secure_port(address, credentials)
            else:
                self.grpc_port = self._grpc.add_insecure_port(address)
        if not self.grpc_port:
            raise OSError(f"cannot listen for gRPC on {address} (port in use?)")
        try:
            if o.rest_port is not None:
                self._rest = RestServer(self.manager, o.host, o.rest_port, max_body_bytes=o.max_message_bytes,
                                        metrics=self.metrics, metrics_path=o.prometheus_path)
                self.rest_port = self._rest.port
        except OSError as err:
            raise OSError(f"cannot listen for REST on {o.host}:{o.rest_port}: {err.strerror}") from None
        if self.front_end == "threads":
            self._grpc.start()  # the other front ends serve from start(address) on
        self._warm_transport()
        # Counted from here on (the transport's own warm call above is not a client's request).
        if self.front_end != "threads":
            self._grpc.set_metrics(self.metrics)
        else:
            self._prediction_service.set_metrics(self.metrics)
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
            if self.front_end != "threads":
                self._grpc.stop(grace_s)
            else:
                self._grpc.stop(grace_s).wait()
            self._grpc = None
        self.manager.stop()
        self.manager.request_logger.close()

    def wait_until_available(self, name: str, timeout_s: float = 60.0, version: Optional[int] = None) -> bool:
        return self.manager.wait_until_available(name, timeout_s, version)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def choose_front_end(options: ServerOptions) -> str:
    """"compiled", "aio" or "threads" (see ServerOptions.grpc_compiled); ServerConfigError when the
    compiled one is required and cannot be had."""
    from serving.model_servers.compiled_frontend import frontend_binary

    if options.grpc_compiled:
        if options.tls is not None:
            raise ServerConfigError("the compiled gRPC front end serves without TLS; drop --ssl_config_file or "
                                    "use --grpc_compiled=false")
        if frontend_binary() is None:
            raise ServerConfigError("the compiled gRPC front end is not built: run 'make grpc-frontend' "
                                    "(needs g++ and libgrpc++-dev: 'make grpc-frontend-tools' as root)")
        return "compiled"
    if options.grpc_compiled is None and options.grpc_aio and options.tls is None and frontend_binary() is not None:
        return "compiled"
    return "aio" if options.grpc_aio else "threads"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_ssl_config(text: str) -> TlsConfig:
    """TF Serving's `--ssl_config_file` text proto (server_key, server_cert, custom_ca, client_verify)."""
    from google.protobuf import text_format

    from serving.config.extra_protos import ssl_config_class

    config = ssl_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValueError(f"SSL config is not an SSLConfig text proto: {err}") from None
    if not config.server_key or not config.server_cert:
        raise ValueError("SSL config needs server_key and server_cert (PEM text)")
    return TlsConfig(server_key=config.server_key.encode(), server_cert=config.server_cert.encode(),
                     custom_ca=config.custom_ca.encode() if config.custom_ca else None,
                     client_verify=config.client_verify)


def parse_monitoring_config(text: str) -> Optional[str]:
    """TF Serving's `--monitoring_config_file` text proto: the Prometheus path when enabled, else None.

    An empty `path` means PrometheusExporter::kPrometheusPath, /monitoring/prometheus/metrics.
    """
    from google.protobuf import text_format

    from serving.config.extra_protos import monitoring_config_class
    from serving.util.metrics import DEFAULT_PATH

    config = monitoring_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValueError(f"monitoring config is not a MonitoringConfig text proto: {err}") from None
    if not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise ValueError(f"prometheus_config path must start with '/', not {path!r}")
    return path
