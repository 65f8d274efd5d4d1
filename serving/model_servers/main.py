"""The model server's main: serve models with TF Serving's own flags (`tensorflow_model_server`'s `main.cc`).

Runs the real `tensorflow_model_server` when it is on PATH (or `--backend tfserving`), otherwise
the stand-in in this package; either way it prints the `docker run tensorflow/serving:2.16.1 ...`
command that serves the same models in production. Knows nothing of any pipeline: a caller that
has a default model (the pipeline's `serve` command) passes it to `main(args, default_model=DefaultModel(...))`.
Bad flags or files raise `ServerConfigError`; the caller's CLI turns that into a message.

`python -m serving.model_servers.main --model_name=m --model_base_path=/models/m` runs it alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional, TypeVar

from serving.model_servers import flags, launcher
from serving.util.errors import ServerConfigError

T = TypeVar("T")

BACKENDS = ("auto", "standin", "tfserving")
# grpc.aio delivers each completed gRPC operation (a request arrived, a response sent) from its poller
# thread, which needs the GIL to hand it to the event loop; a busy loop thread releases the GIL to a
# waiting thread only every switch interval (Python's default 5 ms) or when it blocks. So under load
# requests reached the loop in bursts up to 5 ms late. Measured with the pipeline's pushed model, 16
# clients, batching, servers side by side (ad hoc probe of bench/serving_latency's servers, server CPU
# from /proc, 8 and 10 rounds of 3 s, 2026-12-02): 5 ms 2,777 / 3,321 req/s, 2 ms 3,608, 1 ms 3,455 /
# 3,572, 0.5 ms 3,261, 0.25 ms 3,355, 0.1-0.2 ms 3,156-3,160; server CPU per request 354-419 us at
# 5 ms, 321-337 at 1-2 ms (fewer loop wake-ups per request). `python -m bench.serving_latency` carries
# the 5 ms server beside the default one.
GIL_SWITCH_INTERVAL_MS = 1.0
# From SIGTERM/SIGINT to the process's exit, at most this long. Kubernetes sends SIGKILL a pod's
# terminationGracePeriodSeconds (30 by default) after SIGTERM; a server that is stopping gets that long
# and no more, so it must not hang. A stop that overruns the deadline (a thread that does not end, in the
# stop or in the interpreter's exit, which joins non-daemon threads) writes every thread's stack to stderr
# and exits 1: faulthandler's watchdog, a C thread that fires even while Python's threads are stuck.
STOP_DEADLINE_S = 25.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the stand-in listens on (default: %(default)s; real TF Serving uses 0.0.0.0)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: tensorflow_model_server if on PATH, else the stand-in")
    parser.add_argument("--run_in_caller_thread", "--run-in-caller-thread", nargs="?", const=True, default=True,
                        type=flags.parse_bool, metavar="BOOL",
                        help="stand-in only: run each Session call on the request's thread (default: true; "
                             "faster for small models, false lets one request use the inter-op pool)")
    parser.add_argument("--grpc_aio", "--grpc-aio", nargs="?", const=True, default=True, type=flags.parse_bool,
                        metavar="BOOL",
                        help="stand-in only: serve gRPC on grpc.aio, one event loop instead of a thread per request "
                             "(default: true; false: grpcio's thread-pool server; see serving/README.md Speed)")
    parser.add_argument("--grpc_compiled", "--grpc-compiled", nargs="?", const=True, default="auto",
                        type=_auto_or_bool, metavar="auto|BOOL",
                        help="stand-in only: serve gRPC in the compiled front end (C++ gRPC in a child process, "
                             "the models here; `make grpc-frontend`). Default auto: when it is built and the "
                             "transport is neither TLS nor --grpc_aio=false; see serving/README.md Speed")
    parser.add_argument("--grpc_processes", "--grpc-processes", type=int, default=1, metavar="N",
                        help="stand-in only: N server processes share the gRPC port (SO_REUSEPORT; each loads "
                             "the models and polls the model directory itself; REST on the first). Default 1")
    parser.add_argument("--grpc_reuseport", nargs="?", const=True, default=False, type=flags.parse_bool,
                        help=argparse.SUPPRESS)  # set by --grpc_processes for every process
    parser.add_argument("--gil_switch_interval_ms", "--gil-switch-interval-ms", type=float,
                        default=GIL_SWITCH_INTERVAL_MS, metavar="MS",
                        help="stand-in only: how long a Python thread keeps the GIL while another waits for it "
                             "(sys.setswitchinterval; Python's own default is 5). Default %(default)s: gRPC's "
                             "poller thread hands every arrived request to the event loop under the GIL")
    parser.add_argument("--request_memory_budget_bytes", "--request-memory-budget-bytes", type=int,
                        default=None, metavar="BYTES",
                        help="stand-in only: the most a request's input tensors may take once decoded (a short "
                             "*_val list is padded to the shape it declares); more is RESOURCE_EXHAUSTED before "
                             "any decoding. Default 64 MiB (serving/util/request_cost.py)")
    flags.add_tf_serving_flags(parser)


def _auto_or_bool(text: str):
    """`auto` -> None, else a boolean flag value."""
    return None if text.strip().lower() == "auto" else flags.parse_bool(text)


@dataclasses.dataclass(frozen=True)
class DefaultModel:
    """What a caller serves when the flags give neither --model_base_path nor --model_config_file:
    model `--model_name` (default `name`) from `<serving_base>/<that name>`."""

    serving_base: Path
    name: str
    missing_hint: str  # what to do when <serving_base>/<name> holds no model, e.g. how to make one


def resolve_models(args, default: Optional[DefaultModel] = None):
    """What to serve, resolved from the flags once (shared by both backends and the docker line):
    (config, name, base), name and base None for a --model_config_file."""
    from serving.config import model_config

    if args.model_config_file and (args.model_base_path or args.model_name):
        raise ServerConfigError("give either --model_config_file or --model_name/--model_base_path, not both")
    if args.model_config_file:
        try:
            config = model_config.load_config_file(args.model_config_file)
        except model_config.ConfigError as err:
            raise ServerConfigError(str(err)) from None
        return config, None, None
    if args.model_base_path:
        name, base = args.model_name or "default", args.model_base_path
    elif default is not None:
        name = args.model_name or default.name
        base = str(default.serving_base / name)
        if not os.path.isdir(base):
            hint = (default.missing_hint if name == default.name
                    else f"{default.name} is served from {default.serving_base / default.name}")
            raise ServerConfigError(f"no model at {base}: {hint}, or pass --model_base_path/--model_config_file")
    else:
        raise ServerConfigError("nothing to serve: pass --model_name and --model_base_path, or --model_config_file")
    if not os.path.isdir(base):
        raise ServerConfigError(f"model base path {base} does not exist; pass the directory holding the numeric "
                                "version directories")
    return model_config.single_model_config(name, os.path.abspath(base)), name, os.path.abspath(base)


def read_config_file(path: str, what: str, parse: Callable[[str], T]) -> T:
    """`parse` of the text of the file a flag names; ServerConfigError, naming `what`, when the file
    cannot be read or `parse` raises ValueError."""
    try:
        return parse(Path(path).read_text())
    except OSError as err:
        raise ServerConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    except ValueError as err:
        raise ServerConfigError(str(err)) from None


def _batching_options(args):
    from serving.batching import batcher as batching

    if not args.enable_batching:
        if args.batching_parameters_file:
            raise ServerConfigError("--batching_parameters_file needs --enable_batching")
        return None
    if not args.batching_parameters_file:
        return batching.BatchingOptions()
    return read_config_file(args.batching_parameters_file, "batching parameters file",
                            batching.parse_batching_parameters)


def _channel_arguments(text: str):
    """--grpc_channel_arguments: comma-separated key=value, integer values as integers."""
    channel_args = []
    for item in filter(None, (a.strip() for a in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ServerConfigError(f"--grpc_channel_arguments item {item!r} is not key=value")
        channel_args.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return tuple(channel_args)


def _check_ranges(args) -> None:
    if args.num_request_iterations_for_warmup < 0:
        raise ServerConfigError("--num_request_iterations_for_warmup must be >= 0, not "
                                f"{args.num_request_iterations_for_warmup}")
    if args.rest_api_port < 0:
        raise ServerConfigError(f"--rest_api_port must be >= 0 (0 disables REST), not {args.rest_api_port}")
    if args.request_memory_budget_bytes is not None and args.request_memory_budget_bytes < 1:
        raise ServerConfigError(f"--request_memory_budget_bytes must be >= 1, not {args.request_memory_budget_bytes}")
    if args.port < 0:
        raise ServerConfigError(f"--port must be >= 0, not {args.port}")
    if args.grpc_max_threads < 1:
        raise ServerConfigError(f"--grpc_max_threads must be >= 1, not {args.grpc_max_threads}")


def server_options(args, config):
    """ServerOptions for the stand-in from TF Serving flags (ServerConfigError for unusable files)."""
    from serving.model_servers.server_options import ServerOptions, parse_monitoring_config, parse_ssl_config
    from serving.servables.warmup import WarmupOptions
    from serving.util.request_cost import RequestLimits

    batching_options = _batching_options(args)
    tls = None
    if args.ssl_config_file:
        tls = read_config_file(args.ssl_config_file, "SSL config file", parse_ssl_config)
    channel_args = _channel_arguments(args.grpc_channel_arguments)
    prometheus_path = None
    if args.monitoring_config_file:
        prometheus_path = read_config_file(args.monitoring_config_file, "monitoring config file",
                                           parse_monitoring_config)
        if prometheus_path is not None and not args.rest_api_port:  # TF Serving then serves no metrics either
            print("warning: Prometheus metrics are served on the REST port, which --rest_api_port=0 disables",
                  file=sys.stderr)
    _check_ranges(args)
    request_limits = RequestLimits()
    if args.request_memory_budget_bytes is not None:
        request_limits = RequestLimits(max_request_bytes=args.request_memory_budget_bytes)
    return ServerOptions(
        config=config, host=args.host, grpc_port=args.port,
        rest_port=args.rest_api_port or None,  # 0 disables REST, as in TF Serving
        batching=batching_options, poll_wait_s=args.file_system_poll_wait_seconds,
        grpc_max_threads=args.grpc_max_threads, grpc_channel_arguments=channel_args,
        tls=tls, saved_model_tags=tuple(t.strip() for t in args.saved_model_tags.split(",") if t.strip()),
        intra_op_threads=args.tensorflow_intra_op_parallelism, inter_op_threads=args.tensorflow_inter_op_parallelism,
        run_in_caller_thread=args.run_in_caller_thread,
        max_load_retries=args.max_num_load_retries, load_retry_interval_s=args.load_retry_interval_micros / 1e6,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        enable_signature_method_name_check=args.enable_signature_method_name_check,
        warmup=WarmupOptions(enabled=args.enable_model_warmup,
                             num_request_iterations=args.num_request_iterations_for_warmup or 1),
        prometheus_path=prometheus_path, grpc_aio=args.grpc_aio, grpc_compiled=args.grpc_compiled,
        request_limits=request_limits, grpc_reuseport=args.grpc_reuseport or args.grpc_processes > 1)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes, not the one at set-up (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging() -> None:
    log = logging.getLogger("serving")
    if not log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(args, default_model: Optional[DefaultModel] = None) -> int:
    """Serve until SIGINT/SIGTERM; `default_model` is what to serve when the flags name no model path."""
    config, name, base = resolve_models(args, default_model)
    binary = launcher.find_binary()
    if args.backend == "tfserving" and binary is None:
        raise ServerConfigError(f"--backend tfserving: {launcher.TF_SERVING_BINARY} is not on PATH; install TF Serving "
                        "or use the docker command printed with --backend standin")
    overrides = {}
    if name is not None:
        overrides = {"model_name": name, "model_base_path": base}
    flag_argv = flags.tfserving_argv(args, overrides)
    config_paths = [m.base_path for m in config.model_config_list.config] if args.model_config_file else []
    docker = launcher.docker_command(flag_argv, name, base, args.model_config_file, config_paths, args.port,
                                     args.rest_api_port)
    print(f"TF Serving equivalent: {launcher.format_command(docker)}", flush=True)
    if binary is not None and args.backend != "standin":
        print(f"running {binary}", flush=True)
        return launcher.run_tf_serving(binary, flag_argv)
    processes = args.grpc_processes
    if processes < 1:
        raise ServerConfigError(f"--grpc_processes must be >= 1, not {processes}")
    child_argv = None
    if processes > 1:
        child_argv = flags.tfserving_argv(args, dict(overrides, rest_api_port=0)) + [
            f"--host={args.host}", "--backend=standin", f"--run_in_caller_thread={str(args.run_in_caller_thread).lower()}",
            f"--grpc_aio={str(args.grpc_aio).lower()}", "--grpc_reuseport=true",
            f"--grpc_compiled={'auto' if args.grpc_compiled is None else str(args.grpc_compiled).lower()}",
            f"--gil_switch_interval_ms={args.gil_switch_interval_ms}",
            *([f"--request_memory_budget_bytes={args.request_memory_budget_bytes}"]
              if args.request_memory_budget_bytes is not None else [])]
    if not args.gil_switch_interval_ms > 0:
        raise ServerConfigError(f"--gil_switch_interval_ms must be > 0, not {args.gil_switch_interval_ms}")
    return run_standin(server_options(args, config), extra_processes=processes - 1, child_argv=child_argv,
                       gil_switch_interval_ms=args.gil_switch_interval_ms)


def freeze_import_time_objects() -> None:
    """Leave what is alive before any model loads out of the cyclic GC's full collections.

    A full collection walks every tracked object while it holds the GIL, so it stalls the event loop
    and every request in flight. With TensorFlow, gRPC and the protos imported that is ~330k objects:
    165-180 ms per full collection with the pipeline's taxi model loaded (the allocations of a version
    load trigger them, later ones come at random). After `gc.freeze()` a full collection walks only
    what came later: 0.1-16 ms (/tmp probe, 2026-12-02; `tests/serving/test_serving_gc.py` pins it).
    TensorFlow is imported first so that its modules are frozen too (the servable imports it lazily);
    models load after the freeze, so an unloaded version's objects are still collected. The server's
    own process only: a library user's process keeps its GC as it is. Costs start-up one full
    collection (~170 ms), once, before anything serves.
    """
    import gc

    import tensorflow  # noqa: F401  (its modules are the bulk of what is frozen)

    gc.collect()
    gc.freeze()


def run_standin(options, extra_processes: int = 0, child_argv=None,
                gil_switch_interval_ms: float = GIL_SWITCH_INTERVAL_MS) -> int:
    from serving.model_servers import processes
    from serving.model_servers.server import ModelServer

    configure_logging()
    freeze_import_time_objects()
    sys.setswitchinterval(gil_switch_interval_ms / 1000)  # the server's own process only, as the freeze
    server = ModelServer(options)
    try:
        server.start()
    except OSError as err:
        server.stop()
        raise ServerConfigError(f"{err}; pick other ports with --port/--rest_api_port") from None
    children = processes.start_children(extra_processes, child_argv, server.grpc_port) if extra_processes else []
    models = ", ".join(server.manager.model_names())
    rest = f", REST http://{options.host}:{server.rest_port}/v1/models/<name>" if server.rest_port else ""
    if server.rest_port and options.prometheus_path:
        rest += f", metrics http://{options.host}:{server.rest_port}{options.prometheus_path}"
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:  # the line below says the server is up: a signal from then on stops it as below
        print(f"stand-in model server: {models} on gRPC {options.host}:{server.grpc_port}{rest} (Ctrl-C stops)",
              flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        # Armed until the process ends: this function's caller exits after it (the `serve` commands).
        faulthandler.dump_traceback_later(STOP_DEADLINE_S, exit=True)
        processes.ask_children_to_stop(children)  # they stop while this process does
        server.stop()
        processes.stop_children(children, timeout_s=STOP_DEADLINE_S / 2)
    print("model server stopped", flush=True)
    return 0


def _standalone(argv=None) -> int:
    """`python -m serving.model_servers.main ...`: the server without the pipeline's CLI around it."""
    parser = argparse.ArgumentParser(prog="python -m serving.model_servers.main",
                                     description="A TF Serving-compatible model server (tensorflow_model_server's flags).")
    add_arguments(parser)
    try:
        return main(parser.parse_args(argv))
    except ServerConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
