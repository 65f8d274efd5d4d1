"""Request logging as TF Serving does it: per-model `logging_config` in the ModelServerConfig.

Mirrors tensorflow_serving/core/server_request_logger.cc (model name -> loggers, one logger per
distinct LoggingConfig, rebuilt on every config update), request_logger.cc (uniform sampling at
`sampling_config.sampling_rate`, the sampling config and saved-model tags copied into the log's
LogMetadata) and log_collector.cc (collectors created by `log_collector_config.type` from a registry):

    model_config_list { config {
      name: "taxi" base_path: "/models/taxi" model_platform: "tensorflow"
      logging_config {
        log_collector_config { type: "" filename_prefix: "/logs/taxi/requests" }
        sampling_config { sampling_rate: 0.1 }
      }
    } }

Each logged request is a `tensorflow.serving.PredictionLog` (predict_log, classify_log, regress_log or
multi_inference_log, with the request and the response) written as one record of a TFRecord file
`<filename_prefix>-<collector id>.tfrecord`, flushed per record so readers see it at once. The
registered collector types are "" and "tfrecord" (both that file format). Open-source
tensorflow_model_server ships no collector and refuses a logging_config; this server honours it.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from serving.util.errors import ServerConfigError

log = logging.getLogger("serving")

LOG_KINDS = {"predict": "predict_log", "classify": "classify_log", "regress": "regress_log",
             "multi_inference": "multi_inference_log"}


class RequestLoggingError(ServerConfigError):
    """A logging_config cannot be honoured (unknown collector type, no filename prefix, bad rate)."""


# ---- log collectors ---------------------------------------------------------------------------------

class TFRecordLogCollector:
    """Appends serialized messages to `<filename_prefix>-<id>.tfrecord`, one record each, flushed."""

    def __init__(self, filename_prefix: str, collector_id: int):
        import tensorflow as tf

        if not filename_prefix:
            raise RequestLoggingError("log_collector_config needs a filename_prefix")
        folder = os.path.dirname(filename_prefix)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.path = f"{filename_prefix}-{collector_id:010d}.tfrecord"
        self._writer = tf.io.TFRecordWriter(self.path)
        self._lock = threading.Lock()

    def collect(self, message) -> None:
        data = message.SerializeToString()
        with self._lock:
            self._writer.write(data)
            self._writer.flush()

    def close(self) -> None:
        with self._lock:
            self._writer.close()


_COLLECTORS: Dict[str, Callable] = {}


def register_collector(collector_type: str, factory: Callable) -> None:
    """LogCollector::RegisterFactory: factory(LogCollectorConfig, id) -> collector."""
    if collector_type in _COLLECTORS:
        raise RequestLoggingError(f"log collector type {collector_type!r} is already registered")
    _COLLECTORS[collector_type] = factory


def create_collector(config, collector_id: int):
    factory = _COLLECTORS.get(config.type)
    if factory is None:
        raise RequestLoggingError(f"Cannot find LogCollector::Factory for type: {config.type!r} "
                                  f"(known: {', '.join(repr(t) for t in sorted(_COLLECTORS))})")
    return factory(config, collector_id)


for _type in ("", "tfrecord"):
    register_collector(_type, lambda config, cid: TFRecordLogCollector(config.filename_prefix, cid))


# ---- loggers -------------------------------------------------------------------------------------

class RequestLogger:
    """One LoggingConfig: samples requests and writes PredictionLogs to its collector."""

    def __init__(self, config: logging_config_pb2.LoggingConfig, saved_model_tags: Sequence[str] = (),
                 rng: Optional[random.Random] = None):
        rate = config.sampling_config.sampling_rate
        if not 0.0 <= rate <= 1.0:
            raise RequestLoggingError(f"sampling_rate must be in [0, 1], not {rate}")
        self.config = config
        self.saved_model_tags = list(saved_model_tags)
        self.collector = create_collector(config.log_collector_config, random.getrandbits(31))
        self._rng = rng or random.Random()
        self.logged = 0

    def log(self, kind: str, request, response) -> bool:
        """Log (request, response) with probability sampling_rate; True when it was logged."""
        if not self._rng.random() < self.config.sampling_config.sampling_rate:
            return False
        entry = prediction_log_pb2.PredictionLog()
        body = getattr(entry, LOG_KINDS[kind])
        if isinstance(response, bytes):  # grpc.aio's Predict fast path answers the serialized response
            response = type(body.response).FromString(response)
        meta = entry.log_metadata
        meta.model_spec.CopyFrom(_answered_spec(kind, request, response))
        meta.sampling_config.CopyFrom(self.config.sampling_config)
        meta.saved_model_tags.extend(self.saved_model_tags)
        meta.timestamp_secs = int(time.time())
        body.request.CopyFrom(request)
        body.response.CopyFrom(response)
        self.collector.collect(entry)
        self.logged += 1
        return True

    def close(self) -> None:
        self.collector.close()


def _answered_spec(kind: str, request, response):
    """The model spec of the version that answered (the response's), as TF Serving logs it."""
    if kind == "multi_inference":
        return response.results[0].model_spec if response.results else request.tasks[0].model_spec
    return response.model_spec if response.HasField("model_spec") else request.model_spec


class ServerRequestLogger:
    """Model name -> its request loggers, per the ModelServerConfig (rebuilt by `update`)."""

    def __init__(self, saved_model_tags: Sequence[str] = ()):
        self.saved_model_tags = list(saved_model_tags)
        self._lock = threading.Lock()
        self._by_model: Dict[str, List[RequestLogger]] = {}
        self._by_config: Dict[bytes, RequestLogger] = {}

    def update(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Loggers for every model with a logging_config; a config seen before keeps its logger."""
        by_model: Dict[str, List[RequestLogger]] = {}
        by_config: Dict[bytes, RequestLogger] = {}
        for model in config.model_config_list.config:
            if not model.HasField("logging_config"):
                continue
            key = model.logging_config.SerializeToString(deterministic=True)
            logger = by_config.get(key) or self._by_config.get(key) or RequestLogger(model.logging_config,
                                                                                     self.saved_model_tags)
            by_config[key] = logger
            by_model.setdefault(model.name, []).append(logger)
        with self._lock:
            retired = [l for k, l in self._by_config.items() if k not in by_config]
            self._by_model, self._by_config = by_model, by_config
        for logger in retired:
            logger.close()

    def log(self, kind: str, request, response) -> None:
        """Hand a finished request to the loggers of its model; a logging failure never fails the request."""
        name = request.tasks[0].model_spec.name if kind == "multi_inference" else request.model_spec.name
        with self._lock:
            loggers = list(self._by_model.get(name, ()))
        for logger in loggers:
            try:
                logger.log(kind, request, response)
            except Exception:  # noqa: BLE001
                log.exception("request logging failed for model %s", name)

    def close(self) -> None:
        with self._lock:
            loggers, self._by_model, self._by_config = list(self._by_config.values()), {}, {}
        for logger in loggers:
            logger.close()


def log_request(manager, kind: str, request, response) -> None:
    """The hook the request handlers call: logs when the manager was built with a request logger."""
    logger = manager.request_logger
    if logger is not None:
        logger.log(kind, request, response)


def read_logs(paths: Sequence[str]):
    """PredictionLog records from TFRecord files (the collector's format)."""
    import tensorflow as tf

    for path in paths:
        for record in tf.data.TFRecordDataset([path]):
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(record.numpy())
            yield entry
