"""`tensorflow_model_server`'s command-line flags, so a command written for TF Serving runs unchanged.

Every TF Serving flag we honour is accepted in its own spelling (`--rest_api_port=8501`) and with
dashes (`--rest-api-port 8501`); boolean flags take TF Serving's `--flag`, `--flag=true|false`.
`tfserving_argv()` turns the parsed flags back into the real binary's argument list, which the
launcher and the printed `docker run` command both use.
"""
from __future__ import annotations

import argparse
from typing import List

# name -> (type, default, help). Names are TF Serving's; order is the order we print them in.
TF_SERVING_FLAGS = {
    "port": (int, 8500, "gRPC port (the stand-in picks a free one for 0 and prints it)"),
    "rest_api_port": (int, 8501, "REST port; 0 disables REST (as in TF Serving)"),
    "model_name": (str, None, "name of the one model to serve (TF Serving's default: 'default')"),
    "model_base_path": (str, None, "directory holding the model's numeric version directories"),
    "model_config_file": (str, None, "ModelServerConfig text proto (several models, version policies, labels)"),
    "enable_batching": ("bool", False, "batch concurrent requests (TF Serving's server-side batching)"),
    "batching_parameters_file": (str, None, "BatchingParameters text proto (max_batch_size, batch_timeout_micros, ...)"),
    "allow_version_labels_for_unavailable_models": ("bool", False, "allow labels on versions not yet loaded"),
    "file_system_poll_wait_seconds": (float, 1.0, "how often model base paths are polled for new versions"),
    "max_num_load_retries": (int, 5, "retries of a failed version load"),
    "load_retry_interval_micros": (int, 60_000_000, "wait between load retries"),
    "saved_model_tags": (str, "serve", "comma-separated MetaGraph tags to load"),
    "grpc_max_threads": (int, 32, "gRPC worker threads"),
    "grpc_channel_arguments": (str, "", "comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000"),
    "ssl_config_file": (str, None, "SSLConfig text proto (server_key, server_cert, custom_ca, client_verify): TLS"),
    "tensorflow_intra_op_parallelism": (int, 0, "intra-op threads per Session (0: TensorFlow decides)"),
    "tensorflow_inter_op_parallelism": (int, 0, "inter-op threads per Session (0: TensorFlow decides)"),
    "enable_signature_method_name_check": ("bool", False, "Classify/Regress/Predict accept only signatures whose "
                                           "method_name says so (TF Serving's default: off)"),
    "enable_model_warmup": ("bool", True, "replay assets.extra/tf_serving_warmup_requests before a version serves"),
    "num_request_iterations_for_warmup": (int, 0, "times each warmup request is replayed (used when > 0; default 1)"),
    "monitoring_config_file": (str, None, "MonitoringConfig text proto; prometheus_config { enable: true } serves "
                                          "metrics on the REST port"),
}


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_tf_serving_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tensorflow_model_server flags")
    for name, (kind, default, help_text) in TF_SERVING_FLAGS.items():
        names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        if kind == "bool":
            group.add_argument(*names, dest=name, nargs="?", const=True, default=default, type=parse_bool,
                               metavar="BOOL", help=help_text)
        else:
            group.add_argument(*names, dest=name, type=kind, default=default, help=help_text)


def tfserving_argv(args, overrides=None) -> List[str]:
    """The flags as `tensorflow_model_server` takes them (only those differing from its defaults)."""
    values = {name: getattr(args, name) for name in TF_SERVING_FLAGS}
    values.update(overrides or {})
    argv = []
    for name, value in values.items():
        default = TF_SERVING_FLAGS[name][1]
        if value is None or (value == default and name not in ("port", "rest_api_port")):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        argv.append(f"--{name}={value}")
    return argv
