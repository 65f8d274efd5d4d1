"""What a model server is built from: `ServerOptions`, the stand-in's `Server::Options`, and the
readers of the config files TF Serving's flags name (SSL, monitoring).

TF Serving's `Server::Options` (tensorflow_serving/model_servers/server.h:39-109 at 2.16.1) holds the
flags; `Server::BuildAndStart` (server.cc:196-320) turns them into `ServerCore::Options` and a
SessionBundleConfig. `ModelServer` does the same with `ServerOptions`: `ManagerOptions`
(serving.core.manager) and `ServableOptions` (serving.servables.servable), each object built whole.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

from tensorflow_serving.config import model_server_config_pb2

from serving.batching.batcher import BatchingOptions
from serving.servables import warmup
from serving.util.request_cost import RequestLimits

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
    """The server's flags as values: TF Serving's Server::Options (server.h:39-109) for the flags the
    stand-in takes, with files already read (model config, batching parameters, SSL, monitoring),
    plus the stand-in's own."""

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


def parse_ssl_config(text: str) -> TlsConfig:
    """TF Serving's `--ssl_config_file` text proto (server_key, server_cert, custom_ca, client_verify)."""
    from serving.config.extra_protos import parse_text, ssl_config_class

    config = parse_text(text, ssl_config_class()(), "SSL config")
    if not config.server_key or not config.server_cert:
        raise ValueError("SSL config needs server_key and server_cert (PEM text)")
    return TlsConfig(server_key=config.server_key.encode(), server_cert=config.server_cert.encode(),
                     custom_ca=config.custom_ca.encode() if config.custom_ca else None,
                     client_verify=config.client_verify)


def parse_monitoring_config(text: str) -> Optional[str]:
    """TF Serving's `--monitoring_config_file` text proto: the Prometheus path when enabled, else None.

    An empty `path` means PrometheusExporter::kPrometheusPath, /monitoring/prometheus/metrics.
    """
    from serving.config.extra_protos import monitoring_config_class, parse_text
    from serving.util.metrics import DEFAULT_PATH

    config = parse_text(text, monitoring_config_class()(), "monitoring config")
    if not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise ValueError(f"prometheus_config path must start with '/', not {path!r}")
    return path
