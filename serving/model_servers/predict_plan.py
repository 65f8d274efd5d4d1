"""Predict's fast path, shared by the grpc.aio and the compiled front ends: a checked request plan.

After a first request of a (version, signature, input names, output filter) has passed every check
of `handlers.predict_prepare`, the next ones with the same names take its plan: decode the tensors
(checking their dtypes), run, and write the PredictResponse's bytes directly (serving.util.wire).
"""
from __future__ import annotations

from serving.servables import handlers
from serving.servables.servable import DEFAULT_SIGNATURE
from serving.util import request_cost, tensors, wire
from serving.util.errors import ServingError

MAX_PLANS = 256  # per servable version: (signature, input names, output filter) combinations that passed
# A Predict whose tensors declare more than this once decoded is decoded and run away from a front end's
# dispatch thread or event loop (serving.model_servers.compiled_frontend): a batch of 1,000 tf.Examples
# of 300 bytes declares ~0.3 MiB, and 1 MiB of floats decodes in ~0.1 ms.
INLINE_DECODE_BYTES = 1 << 20


class PredictPlan:
    """What one (servable version, signature, input names, output filter) needs per request once a
    first request has passed every check of predict_prepare: later requests with the same names
    only decode their tensors (and their dtypes are checked) and get response bytes directly."""

    __slots__ = ("sig", "inputs", "output_keys", "encoder", "batched", "batch_limit")

    def __init__(self, servable, sig, output_keys):
        self.sig = sig
        self.inputs = tuple((alias, sig.inputs[alias].dtype) for alias in sorted(sig.inputs))
        self.output_keys = tuple(output_keys)
        self.encoder = wire.ResponseEncoder(servable.name, servable.version, sig.name, self.output_keys,
                                            {k: sig.outputs[k].dtype for k in self.output_keys})
        self.batched = servable.batcher is not None and sig.batchable
        self.batch_limit = servable.batcher.options.max_batch_size if self.batched else None

    def decode(self, servable, request_inputs):
        """predict_prepare's input decoding and checks, in its order (cost, values, then dtypes)."""
        self.cost(servable, request_inputs)
        arrays, mismatch = {}, False
        for alias, dtype in self.inputs:
            proto = request_inputs[alias]
            arrays[alias] = tensors.to_ndarray(proto, alias)
            if proto.dtype != dtype:
                mismatch = True
        if mismatch:
            servable.check_dtypes(self.sig, {alias: request_inputs[alias].dtype for alias, _ in self.inputs})
        return arrays

    def cost(self, servable, request_inputs) -> int:
        """The request's declared cost checked before any decoding (serving.util.request_cost): its bytes."""
        return request_cost.check_inputs({alias: request_inputs[alias] for alias, _ in self.inputs},
                                         servable.request_limits, self.batch_limit)


def declared_bytes(request) -> int:
    """What the request's input tensors declare they take once decoded (serving.util.request_cost),
    in O(rank) per tensor; a tensor that cannot be parsed counts 0 (its Predict fails at once)."""
    total = 0
    for alias, proto in request.inputs.items():
        try:
            total += request_cost.tensor_bytes(proto, request_cost.declared_shape(proto, alias)[1])
        except ServingError:
            pass
    return total


def prepare(servable, request, method_check: bool):
    """(signature, inputs, output keys, plan or None, batched?) for a Predict on a held servable.

    Plans live on the servable (`aio_plans`), so they go with the version when it unloads. An empty
    signature name is the default signature's (as in TF Serving's predict_util.cc), so warmup records
    naming `serving_default` warm the plan of clients that name none: keyed by the name as sent, the
    first such real request after warmup went through predict_prepare's checks again
    (bench.serving_warmup --scenario new-version: first / median 1.05 before)."""
    plans = servable.aio_plans
    names = request.inputs
    key = (request.model_spec.signature_name or DEFAULT_SIGNATURE,
           tuple(names) if len(names) < 2 else tuple(sorted(names)), tuple(request.output_filter), method_check)
    plan = plans.get(key)
    if plan is not None:
        return plan.sig, plan.decode(servable, names), plan.output_keys, plan, plan.batched
    sig, inputs, output_keys = handlers.predict_prepare(servable, request, method_check)
    if len(names) == len(sig.inputs):  # every check passed; no defaults used
        plan = PredictPlan(servable, sig, output_keys)
        if len(plans) < MAX_PLANS:
            plans[key] = plan
    return sig, inputs, output_keys, plan, servable.batcher is not None and sig.batchable


def response_bytes(servable, sig, results, output_keys, plan) -> bytes:
    """The PredictResponse's bytes: written by the plan's encoder, or built and serialized."""
    if plan is not None:
        return plan.encoder.encode(results)
    return handlers.predict_response(servable, sig, results, output_keys).SerializeToString()


def bytes_or_message(response) -> bytes:
    return response if type(response) is bytes else response.SerializeToString()  # noqa: E721


def record(metrics, request, api, status, started) -> None:
    """One request in TF Serving's request metrics (nothing when metrics are off)."""
    if metrics is not None:
        spec = request.model_spec
        metrics.record_request(spec.name, api, spec.signature_name or DEFAULT_SIGNATURE, "GRPC", status, started)
