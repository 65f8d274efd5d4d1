"""SavedModel warmup: replay `assets.extra/tf_serving_warmup_requests` before a version serves.

TF Serving's semantics (tensorflow_serving/servables/tensorflow/saved_model_warmup.cc and
saved_model_warmup_util.cc, pinned by their *_test.cc):
- the file is a TFRecord file of `tensorflow.serving.PredictionLog`; no file means no warmup (OK),
  an empty file replays nothing (OK);
- classify_log, regress_log, predict_log and multi_inference_log requests run against the version
  being loaded (its own signatures; the request's model name and version are not looked up);
  session_run_log and predict_streamed_log fail with UNIMPLEMENTED "Unsupported log_type for
  warmup"; a record with no log type is skipped;
- each record runs `num_request_iterations` times (ModelWarmupOptions, default 1; the server's
  `--num_request_iterations_for_warmup` sets it when > 0);
- more than 1000 records (WarmupConsts::kMaxNumRecords) fail with INVALID_ARGUMENT "Number of
  warmup records exceeds the maximum"; a record that is not a PredictionLog fails with
  INVALID_ARGUMENT "Failed to parse warmup record"; a file that is not TFRecord fails with
  DATA_LOSS "... Please verify your warmup data is in TFRecord format."; a request that fails
  fails the warmup with its own status.
Any failure fails the load: the version never becomes AVAILABLE (the previous one keeps serving).
Requests run through the servable's batcher when batching is on, as TF Serving's warmup runs
through the batching session.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Callable, Optional

import grpc
from tensorflow_serving.apis import prediction_log_pb2

from serving.util import metrics as metrics_lib
from serving.util.errors import ServingError, invalid_argument, unimplemented

log = logging.getLogger("serving")

ASSETS_EXTRA = "assets.extra"  # tensorflow/cc/saved_model/constants.h kSavedModelAssetsExtraDirectory
REQUESTS_FILE = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords

_API = {"classify_log": "Classify", "regress_log": "Regress", "predict_log": "Predict",
        "multi_inference_log": "MultiInference"}


@dataclasses.dataclass(frozen=True)
class WarmupOptions:
    """`--enable_model_warmup` (TF Serving's default: on) and ModelWarmupOptions.num_request_iterations."""

    enabled: bool = True
    num_request_iterations: int = 1


@dataclasses.dataclass(frozen=True)
class WarmupResult:
    records: int  # records read (each replayed num_request_iterations times)
    requests: int  # requests run
    seconds: float


def requests_path(export_dir: str) -> str:
    return os.path.join(export_dir, ASSETS_EXTRA, REQUESTS_FILE)


class _ThisVersion:
    """A manager stand-in that answers every ModelSpec with the version being loaded. Warmup requests
    are not logged and take any signature shaped for them."""

    request_logger = None
    enable_signature_method_name_check = False

    def __init__(self, servable):
        self._servable = servable

    def servable(self, _model_spec):
        return contextlib.nullcontext(self._servable)


def _with_spec(request, servable):
    """A copy whose model_spec is set (TF Serving's Run* functions need none, our handlers do)."""
    copy = type(request)()
    copy.CopyFrom(request)
    if not copy.model_spec.name:
        copy.model_spec.name = servable.name
    return copy


def replay(servable, prediction_log: prediction_log_pb2.PredictionLog, predict: Optional[Callable] = None) -> bool:
    """Run one warmup record on `servable`; False when the record has no log type (skipped)."""
    from serving.servables import handlers

    kind = prediction_log.WhichOneof("log_type")
    if kind is None:
        return False
    if kind not in _API:
        number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise unimplemented(f"Unsupported log_type for warmup: {number} ({kind})")
    request = getattr(prediction_log, kind).request
    manager = _ThisVersion(servable)
    token = metrics_lib.current_api.set(_API[kind])
    try:
        if kind == "predict_log" and predict is not None:
            predict(servable, _with_spec(request, servable))
        elif kind == "predict_log":
            handlers.predict(manager, _with_spec(request, servable))
        elif kind == "classify_log":
            handlers.classify(manager, _with_spec(request, servable))
        elif kind == "regress_log":
            handlers.regress(manager, _with_spec(request, servable))
        else:
            copy = type(request)()
            copy.CopyFrom(request)
            for task in copy.tasks:
                if not task.model_spec.name:
                    task.model_spec.name = servable.name
            handlers.multi_inference(manager, copy)
    finally:
        metrics_lib.current_api.reset(token)
    return True


def _records(path: str):
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    with deprecation.silence():
        yield from tf.compat.v1.io.tf_record_iterator(path)


def run_warmup(servable, export_dir: str, options: WarmupOptions = WarmupOptions(),
               metrics: Optional["metrics_lib.ServingMetrics"] = None,
               predict: Optional[Callable] = None) -> Optional[WarmupResult]:
    """Replay the version's warmup records; None when it has no warmup file. Raises ServingError.

    `predict(servable, request)`, when given, runs each Predict record instead of the transport-
    independent handler: the gRPC front end passes its own Predict path (request parsed from its
    bytes, the front end's handler code, batching, the response serialized), so the first real
    request finds that path warm too, not only the Session."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    path = requests_path(export_dir)
    if not options.enabled:
        return None
    if not os.path.exists(path):
        log.debug("No warmup data file found at %s", path)
        return None
    iterations = max(1, options.num_request_iterations)
    log.info("Model %s version %d: replaying warmup requests from %s (%d iteration%s each)", servable.name,
             servable.version, path, iterations, "" if iterations == 1 else "s")
    started = time.perf_counter()
    records = requests = 0
    status = "OK"
    try:
        try:
            for record in _records(path):
                prediction_log = prediction_log_pb2.PredictionLog()
                try:
                    prediction_log.ParseFromString(record)
                except DecodeError:
                    raise invalid_argument(f"Failed to parse warmup record: {record[:64]!r} from {path}") from None
                for _ in range(iterations):
                    if replay(servable, prediction_log, predict):
                        requests += 1
                records += 1
                if records > MAX_RECORDS:
                    raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        except tf.errors.DataLossError as err:
            raise ServingError(grpc.StatusCode.DATA_LOSS, f"{err.message.splitlines()[0]}. Please verify your "
                                                          f"warmup data is in TFRecord format.") from None
        except tf.errors.OpError as err:  # the file cannot be read
            raise ServingError(grpc.StatusCode.UNKNOWN, f"cannot read warmup data {path}: {err.message}") from None
    except ServingError as err:
        status = f"{err.code.name}: {err.message}"
        raise ServingError(err.code, f"warmup failed after {records} record(s): {err.message}") from None
    except Exception as err:
        status = f"INTERNAL: {type(err).__name__}"
        raise
    finally:
        seconds = time.perf_counter() - started
        if metrics is not None:
            metrics.record_warmup(export_dir, status, records, seconds)
    log.info("Model %s version %d: warmup done, %d record(s), %d request(s) in %.3f s", servable.name,
             servable.version, records, requests, seconds)
    return WarmupResult(records, requests, seconds)
