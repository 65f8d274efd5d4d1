"""One loaded SavedModel version, run the way TF Serving runs it: a TF Session over the MetaGraph.

TF Serving does not call Python signature functions; it loads the `serve` MetaGraph into a Session
and feeds/fetches the tensors each SignatureDef names. Doing the same here serves TF1 graphs (with
reference variables, e.g. TF Serving's saved_model_counter) and TF2/Keras exports alike, and a
Session callable made once per (signature, inputs, outputs) costs microseconds per call instead of
the ~0.1 ms Python dispatch of a concrete function.

Requests hold the servable through `acquire()`/`release()`, so unloading a version (hot swap)
waits for in-flight requests instead of closing the Session under them.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from serving.batching.batcher import BatchingOptions, ServableBatcher
from serving.util import request_cost, tensors
from serving.util.errors import failed_precondition, internal_error, invalid_argument

log = logging.getLogger("serving")


class _QuietLoads(logging.Filter):
    """Drop TensorFlow's per-load chatter so a load/unload is one line of our own."""

    def filter(self, record):
        return not record.getMessage().startswith("Restoring parameters from")


_QUIET = _QuietLoads()

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    alias: str
    tensor_name: str
    dtype: int  # types_pb2.DataType
    shape: Optional[Tuple[int, ...]]  # None: unknown rank; -1: unknown dimension

    @property
    def batched(self) -> bool:
        """Has a leading batch dimension (what server-side batching concatenates along)."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] < 0


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    # SignatureDef.defaults (TF2 exports of functions with default arguments): inputs a request may omit.
    defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def output_keys(self) -> Tuple[str, ...]:
        return tuple(sorted(self.outputs))

    @property
    def batchable(self) -> bool:
        return bool(self.inputs) and all(t.batched for t in self.inputs.values()) and all(
            t.batched for t in self.outputs.values())


def _signature_from_def(name, signature_def) -> Signature:
    def specs(tensor_infos):
        # No tensor_shape at all (old TF1 exports such as half_plus_three) means "unknown", not scalar.
        return {alias: TensorSpec(alias, info.name, info.dtype,
                                  tensors.shape_of(info.tensor_shape) if info.HasField("tensor_shape") else None)
                for alias, info in tensor_infos.items() if info.name}

    return Signature(name, signature_def.method_name, specs(signature_def.inputs), specs(signature_def.outputs),
                     dict(signature_def.defaults))


def session_config(intra_op: int = 0, inter_op: int = 0):
    """Session options for serving; 0 threads means TensorFlow decides (TF Serving's default).

    Function inlining lets the graph executor run a TF2 export's `StatefulPartitionedCall` body
    directly instead of through a function call per request: the same kernels and results, about
    15% less time per single-example request on the taxi model.
    """
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op, inter_op_parallelism_threads=inter_op,
                                      allow_soft_placement=True)
    config.graph_options.optimizer_options.do_function_inlining = True
    return config


@dataclasses.dataclass(frozen=True)
class ServableOptions:
    """How every version is loaded and run: TF Serving's SessionBundleConfig
    (tensorflow_serving/servables/tensorflow/session_bundle_config.proto:26-140 at 2.16.1, built from the
    server's flags in model_servers/server.cc:221-300), plus what the stand-in adds."""

    saved_model_tags: Sequence[str] = ("serve",)
    session_config: object = None  # a tf.compat.v1.ConfigProto; None: session_config()
    run_in_caller_thread: bool = True
    batching: Optional[BatchingOptions] = None  # BatchingParameters; None: no server-side batching
    # Per-request bounds checked before any input is decoded (serving.util.request_cost; stand-in only).
    request_limits: request_cost.RequestLimits = request_cost.RequestLimits()
    metrics: object = None  # serving.util.metrics.ServingMetrics when monitoring is on: runtime_latency


class SavedModelServable:
    """A SavedModel version loaded in its own Graph and Session."""

    def __init__(self, name: str, version: int, path: str, options: ServableOptions = ServableOptions()):
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.util import deprecation

        self._config_pb2 = config_pb2
        # Run each Session call on the request's own thread (RunOptions.inter_op_thread_pool = -1):
        # for small per-request graphs this skips a hand-off to the inter-op pool, ~45 us of ~190 us
        # on the taxi model, more when the CPU is contended. Kernels still use the intra-op pool.
        self._run_in_caller_thread = options.run_in_caller_thread
        self.name = name
        self.version = version
        self.path = path
        tf_logger = tf.get_logger()
        if _QUIET not in tf_logger.filters:
            tf_logger.addFilter(_QUIET)
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._session = tf.compat.v1.Session(graph=self._graph, config=options.session_config or session_config())
            try:
                with deprecation.silence():  # the TF1 loader is what TF Serving's C++ loader does; no nag
                    meta_graph = tf.compat.v1.saved_model.loader.load(self._session, list(options.saved_model_tags),
                                                                      path)
            except Exception:
                self._session.close()
                raise
        self.meta_graph = meta_graph
        self.signature_defs = dict(meta_graph.signature_def)
        self.signatures: Dict[str, Signature] = {
            key: _signature_from_def(key, sd) for key, sd in meta_graph.signature_def.items()
            if key != INIT_OP_SIGNATURE}
        self._callables: Dict[tuple, object] = {}
        self._callables_lock = threading.Lock()
        self._refs = 0
        self._closed = False
        self._refs_cv = threading.Condition()
        self.batcher = ServableBatcher(options.batching) if options.batching is not None else None
        self.metrics = options.metrics
        self.request_limits = options.request_limits
        # The grpc.aio front end's checked request plans (serving.model_servers.aio_service._PredictPlan),
        # kept here so they go with the version when it unloads.
        self.aio_plans: Dict[tuple, object] = {}

    # -- life cycle ------------------------------------------------------------------------
    def acquire(self) -> bool:
        with self._refs_cv:
            if self._closed:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._refs_cv:
            self._refs -= 1
            if self._refs == 0:
                self._refs_cv.notify_all()

    def close(self, drain_timeout_s: float = 30.0) -> None:
        """Wait for in-flight requests (bounded), then free the Session."""
        with self._refs_cv:
            self._closed = True
            self._refs_cv.wait_for(lambda: self._refs == 0, timeout=drain_timeout_s)
        if self.batcher is not None:
            self.batcher.stop()
        self._callables.clear()
        self._session.close()

    # -- running ---------------------------------------------------------------------------
    def signature(self, name: str) -> Signature:
        """Predict's lookup (predict_util.cc RunPredict): an unknown key is FAILED_PRECONDITION."""
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return sig

    def find_signature(self, name: str) -> Optional[Signature]:
        """The signature `name` names ('' is serving_default), None when the model has none such."""
        return self.signatures.get(name or DEFAULT_SIGNATURE)

    def prepare_inputs(self, sig: Signature, request_inputs: Mapping[str, object]
                       ) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
        """PredictRequest.inputs (alias -> TensorProto) -> the arrays to feed, checked as TF Serving checks.

        Names as predict_util.cc VerifyRequestInputsSize then tensorflow/cc/saved_model/util.cc
        GetInputValues check them: too many inputs, or too few for a signature without defaults,
        fail with the sent-extra/missing message; an input left out takes the signature's default
        value (TF2 functions with default arguments); an unknown name fails. Shapes are the graph's
        business (TF Serving does not check them). Dtypes are checked after the output filter,
        where TF Serving's Session run checks them (`check_dtypes`, given the DataTypes returned
        beside the arrays). Before any tensor is decoded, the request's cost is checked from what its
        tensors declare (`check_cost`).
        """
        sent, expected = set(request_inputs), set(sig.inputs)
        if len(sent) > len(expected) or (len(sent) < len(expected) and not sig.defaults):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sorted(sent))}}}) "
                f"!= len({{{','.join(sorted(expected))}}}). Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        self.check_cost(sig, {alias: request_inputs[alias] for alias in sent & expected})
        arrays, dtypes = {}, {}
        for alias in sorted(sig.inputs):
            proto = request_inputs.get(alias)
            if proto is None:
                proto = sig.defaults.get(alias)
                if proto is None:
                    raise invalid_argument(
                        f"Signature input alias: {alias}(feed name: {sig.inputs[alias].tensor_name}) not found in "
                        f"request and no default value provided. Inputs expected to be in the request "
                        f"{{{','.join(sorted(sent))}}}, or default input alias set: {{{','.join(sorted(sig.defaults))}}}")
            arrays[alias] = tensors.to_ndarray(proto, alias)
            dtypes[alias] = proto.dtype
        unused = sent - expected
        if sent and unused:
            raise invalid_argument(
                f"Inputs contains invalid name. Used request inputs: {','.join(sorted(sent & expected))}, "
                f"request input: {','.join(sorted(sent))}")
        return arrays, dtypes

    def check_cost(self, sig: Signature, protos: Mapping[str, object]) -> int:
        """The input tensors' shapes, batch size and bytes as declared, refused before decoding
        (serving.util.request_cost); the bytes they will take."""
        batch_limit = self.batcher.options.max_batch_size if self.batcher is not None and sig.batchable else None
        return request_cost.check_inputs(protos, self.request_limits, batch_limit)

    @staticmethod
    def check_dtypes(sig: Signature, dtypes: Mapping[str, int]) -> None:
        """Each fed tensor's DataType must be the signature's: INVALID_ARGUMENT worded as TF's Session
        says it ("Expects arg[i] to be float but string is provided", predict_util_test.cc); arg[i]
        counts the feeds in the order they are fed (sorted aliases)."""
        for index, alias in enumerate(sorted(dtypes)):
            expected = sig.inputs[alias].dtype
            if dtypes[alias] != expected:
                raise invalid_argument(f"Expects arg[{index}] to be {tensors.dtype_name(expected)} but "
                                       f"{tensors.dtype_name(dtypes[alias])} is provided")

    def validate_outputs(self, sig: Signature, output_filter: Sequence[str]) -> Tuple[str, ...]:
        if not output_filter:
            return sig.output_keys
        seen = set()
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(sig.outputs))}}}.")
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return tuple(output_filter)

    def run(self, sig: Signature, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str]
            ) -> Dict[str, np.ndarray]:
        """Run validated inputs; batched through the batcher when one serves this signature."""
        if self.metrics is not None:  # TF Serving's runtime_latency: the Session run, batching included
            started = time.perf_counter()
            outputs = self._run(sig, inputs, output_keys)
            self.metrics.record_runtime(self.name, started)
            return outputs
        return self._run(sig, inputs, output_keys)

    def _run(self, sig, inputs, output_keys):
        if self.batcher is not None and sig.batchable:
            return self.batcher.run(self, sig, inputs, tuple(output_keys))
        return self.run_direct(sig, inputs, output_keys)

    def run_direct(self, sig: Signature, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str]
                   ) -> Dict[str, np.ndarray]:
        input_keys = tuple(sorted(inputs))
        fn = self._callable(sig, input_keys, tuple(output_keys))
        try:
            values = fn(*[inputs[k] for k in input_keys])
        except Exception as err:
            raise _as_serving_error(err) from None
        return dict(zip(output_keys, values))

    def _callable(self, sig: Signature, input_keys: tuple, output_keys: tuple):
        key = (sig.name, input_keys, output_keys)
        fn = self._callables.get(key)
        if fn is None:
            with self._callables_lock:
                fn = self._callables.get(key)
                if fn is None:
                    options = self._config_pb2.CallableOptions()
                    options.feed.extend(sig.inputs[k].tensor_name for k in input_keys)
                    options.fetch.extend(sig.outputs[k].tensor_name for k in output_keys)
                    if self._run_in_caller_thread:
                        options.run_options.inter_op_thread_pool = -1
                    fn = self._session._make_callable_from_options(options)  # pylint: disable=protected-access
                    self._callables[key] = fn
        return fn


def _as_serving_error(err: Exception):
    """TF runtime errors keep their own status code (e.g. INVALID_ARGUMENT for a bad tf.Example)."""
    import grpc
    import tensorflow as tf

    from serving.util.errors import ServingError

    if isinstance(err, UnicodeDecodeError) and isinstance(err.object, bytes):
        # TF could not turn its own status message into str: it echoes an undecodable input (e.g. a
        # corrupt tf.Example), which only happens for a bad input. The message bytes are kept.
        message = err.object.decode("utf-8", "replace").splitlines()[0]
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)
    if isinstance(err, tf.errors.OpError):
        code = {c.value[0]: c for c in grpc.StatusCode}.get(err.error_code, grpc.StatusCode.INTERNAL)
        message = err.message.splitlines()[0] if err.message else type(err).__name__
        return ServingError(code, message)
    # Anything else is our failure: the trace goes to the server log, the client gets no Python text.
    return internal_error(err, "session run")
