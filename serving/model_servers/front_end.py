"""The gRPC front ends behind one interface, which one a server runs, and starting it.

Three front ends serve TF Serving's gRPC API over the same request handlers (serving.servables.handlers)
and answer with the same status codes and messages: the compiled C++ one (compiled_frontend, the
default where it is built), grpc.aio (aio_service) and grpcio's thread-pool server (grpc_service). TF
Serving has one, a C++ gRPC server built in Server::BuildAndStart (model_servers/server.cc at 2.16.1).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Protocol, Tuple

import grpc

from serving.model_servers.server_options import ServerOptions
from serving.util.errors import ServerConfigError

log = logging.getLogger("serving")


class GrpcFrontEnd(Protocol):
    """What `ModelServer` needs of a gRPC front end; each is built whole from `FrontEndOptions`."""

    kind: str  # "compiled", "aio" or "threads"

    def start(self, address: str, credentials: Optional[grpc.ServerCredentials] = None) -> int:
        """Listen on `address` and serve; the bound port, 0 when it cannot listen."""

    def warm_predict(self, servable, request) -> bytes:
        """One warmup Predict on a version being loaded, through this front end's own Predict path
        (serving.servables.warmup.run_warmup), so the first client finds that path warm too."""

    def count_requests(self) -> None:
        """Count requests in the metrics the front end was built with from now on: what came before
        (the server's own warm call, ModelServer._warm_transport) is no client's request."""

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop taking calls and finish those in flight for at most `grace_s`."""


@dataclasses.dataclass(frozen=True)
class FrontEndOptions:
    """What every front end is built with (TF Serving's Server::Options gRPC fields, server.h:40-46)."""

    grpc_options: Tuple[Tuple[str, object], ...]  # grpcio server options (message limits, channel arguments)
    max_workers: int  # --grpc_max_threads
    metrics: object = None  # serving.util.metrics.ServingMetrics when monitoring is on


def grpc_server_options(options: ServerOptions) -> Tuple[Tuple[str, object], ...]:
    return (("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.so_reuseport", int(options.grpc_reuseport))) + tuple(options.grpc_channel_arguments)


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


def build_front_end(kind: str, manager, options: FrontEndOptions) -> GrpcFrontEnd:
    if kind == "compiled":
        from serving.model_servers.compiled_frontend import CompiledGrpcServer as front_end_class
    elif kind == "aio":
        from serving.model_servers.aio_service import AioGrpcServer as front_end_class
    else:
        from serving.model_servers.grpc_service import ThreadPoolGrpcServer as front_end_class
    return front_end_class(manager, options.grpc_options, max_workers=options.max_workers, metrics=options.metrics)


def start_front_end(kind: str, manager, options: FrontEndOptions, address: str,
                    credentials: Optional[grpc.ServerCredentials], required: bool) -> Tuple[GrpcFrontEnd, int]:
    """The front end of `kind` serving on `address`, and its port. A compiled front end that does not
    start (FrontEndDidNotStart: e.g. its gRPC C++ libraries are missing) gives way to grpc.aio unless
    it is `required` (--grpc_compiled=true). OSError when the port cannot be had."""
    front = build_front_end(kind, manager, options)
    if kind == "compiled":
        from serving.model_servers.compiled_frontend import FrontEndDidNotStart

        try:
            port = front.start(address, credentials)
        except FrontEndDidNotStart as err:
            if required:
                raise
            log.warning("%s: serving gRPC on grpc.aio instead", err)
            front = build_front_end("aio", manager, options)
            port = front.start(address, credentials)
    else:
        port = front.start(address, credentials)
    if not port:
        front.stop(0)
        raise OSError(f"cannot listen for gRPC on {address} (port in use?)")
    return front, port


def server_credentials(tls) -> Optional[grpc.ServerCredentials]:
    """gRPC server credentials for a `server_options.TlsConfig`, None without TLS."""
    if tls is None:
        return None
    return grpc.ssl_server_credentials([(tls.server_key, tls.server_cert)], root_certificates=tls.custom_ca,
                                       require_client_auth=tls.client_verify)


def bracket(host: str) -> str:
    """`host` as the host part of an address: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

