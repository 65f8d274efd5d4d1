"""TF Serving config messages that `tensorflow-serving-api` does not ship, built from their fields.

`--batching_parameters_file` (BatchingParameters), `--ssl_config_file` (SSLConfig) and
`--monitoring_config_file` (MonitoringConfig) are text protos; declaring the messages here with TF Serving's field names lets protobuf's own text parser
read them, escapes and all, instead of a hand-written parser.
"""
from __future__ import annotations

from typing import Sequence, Tuple

_BUILT = {}


def message_class(full_name: str, fields: Sequence[Tuple[str, str]]):
    """A message class named `full_name` with (field name, type) fields.

    Types: "int64", "bool", "string", "repeated int64", or a message such as ".google.protobuf.Int64Value".
    """
    if full_name in _BUILT:
        return _BUILT[full_name]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        package, _, name = full_name.rpartition(".")
        f = descriptor_pb2.FileDescriptorProto(name=f"taxi_serving/{name}.proto", package=package, syntax="proto3")
        f.dependency.append(wrappers_pb2.DESCRIPTOR.name)
        message = f.message_type.add(name=name)
        T = descriptor_pb2.FieldDescriptorProto
        scalar = {"int64": T.TYPE_INT64, "bool": T.TYPE_BOOL, "string": T.TYPE_STRING}
        for number, (field_name, kind) in enumerate(fields, start=1):
            field = message.field.add(name=field_name, number=number, label=T.LABEL_OPTIONAL)
            if kind.startswith("repeated "):
                field.label, field.type = T.LABEL_REPEATED, scalar[kind.split()[1]]
            elif kind in scalar:
                field.type = scalar[kind]
            else:
                field.type, field.type_name = T.TYPE_MESSAGE, kind
                dependency = pool.FindMessageTypeByName(kind.lstrip(".")).file.name
                if dependency not in f.dependency:
                    f.dependency.append(dependency)
        pool.Add(f)
        descriptor = pool.FindMessageTypeByName(full_name)
    cls = message_factory.MessageFactory(pool).GetPrototype(descriptor)
    _BUILT[full_name] = cls
    return cls


def parse_text(text: str, message, what: str, error=ValueError):
    """`message` filled from the text proto `text`; `error` naming `what` and the message type when it does
    not parse."""
    from google.protobuf import text_format

    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise error(f"{what} is not a {message.DESCRIPTOR.name} text proto: {err}") from None
    return message


def batching_parameters_class():
    """tensorflow_serving/servables/tensorflow/session_bundle_config.proto: BatchingParameters."""
    i64, s, b = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", ".google.protobuf.BoolValue"
    return message_class("tensorflow.serving.BatchingParameters", [
        ("max_batch_size", i64), ("batch_timeout_micros", i64), ("max_enqueued_batches", i64),
        ("num_batch_threads", i64), ("thread_pool_name", s), ("allowed_batch_sizes", "repeated int64"),
        ("pad_variable_length_inputs", "bool"), ("enable_large_batch_splitting", b),
        ("max_execution_batch_size", i64), ("batch_padding_policy", s)])


def ssl_config_class():
    """tensorflow_serving/config/ssl_config.proto: SSLConfig."""
    return message_class("tensorflow.serving.SSLConfig", [
        ("server_key", "string"), ("server_cert", "string"), ("custom_ca", "string"), ("client_verify", "bool")])


def monitoring_config_class():
    """tensorflow_serving/config/monitoring_config.proto: MonitoringConfig { PrometheusConfig prometheus_config }."""
    message_class("tensorflow.serving.PrometheusConfig", [("enable", "bool"), ("path", "string")])
    return message_class("tensorflow.serving.MonitoringConfig",
                         [("prometheus_config", ".tensorflow.serving.PrometheusConfig")])
