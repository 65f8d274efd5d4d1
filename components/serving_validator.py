"""ServingValidator: the candidate model must load in a model server and answer real requests.

The Evaluator judges predictions computed by TFMA in process; it cannot tell whether a model server
will load the export (a missing asset, an op the server lacks, a signature taking the wrong input).
This component loads the candidate in our TF Serving-compatible server, sends serialized eval
examples over gRPC exactly as clients will, and checks the answers (one row per example, finite,
probabilities in [0, 1]). The Pusher requires its blessing, so a model that cannot serve is never
pushed. (TFX's InfraValidator does this with Docker or Kubernetes, neither of which a local run has.)

Like InfraValidator with `RequestSpec.make_warmup` (tfx/components/infra_validator/executor.py
`_CreateWarmupModel`), it also writes the model to push: a copy of the candidate in the blessing's
`stamped_model/` with `assets.extra/tf_serving_warmup_requests`, one PredictionLog per eval example
built as InfraValidator's request_builder builds them (a PredictRequest on `serving_default` with the
serialized example as its single string input), and sets the blessing's `has_model` to 1; the
stock Pusher, given the infra blessing instead of the Trainer's model, pushes that copy. TF Serving
(and our server) replay the records when the version loads, before it takes traffic. The copy,
warmup included, is what gets loaded and queried here, so the pushed artifact itself is checked.
"""
import os
import shutil
import tempfile

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Examples, InfraBlessing, Model

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from kubeflow import tfx_internals
from trainer_module.records import EVAL_SPLIT, split_dir

SIGNATURE = "serving_default"


def check_model(model_dir: str, serialized_examples, model_name: str, load_timeout_s: float) -> str:
    """'' when the model serves the examples correctly, else why not (one line)."""
    import numpy as np

    from serving.config import model_config
    from serving.model_servers import main as serve_cli
    from serving.client import ServingClient
    from serving.model_servers.server import ModelServer, ServerOptions

    serve_cli.configure_logging()
    with tempfile.TemporaryDirectory(prefix="serving-validator-") as tmp:
        base = os.path.join(tmp, model_name)  # TF Serving's layout: <base path>/<numeric version>/
        _copy_dir(model_dir, os.path.join(base, "1"))
        options = ServerOptions(model_config.single_model_config(model_name, base), grpc_port=0, rest_port=None,
                                max_load_retries=0)
        with ModelServer(options) as server, ServingClient(f"127.0.0.1:{server.grpc_port}", timeout_s=30) as client:
            if not server.manager.wait_until_settled(load_timeout_s) or not server.wait_until_available(model_name, 0):
                errors = [s.status.error_message for s in client.status(model_name) if s.status.error_message]
                return (f"the model server could not load the model: {errors[0]}" if errors else
                        f"the model server could not load the model within {load_timeout_s:.0f} s")
            try:
                input_key = next(iter(client.signature_defs(model_name)[SIGNATURE].inputs))
                outputs, _ = client.predict(model_name, {input_key: np.array(serialized_examples, dtype=object)},
                                            SIGNATURE)
            except Exception as err:  # a gRPC error: the model loads but does not answer
                return f"{SIGNATURE} failed on {len(serialized_examples)} eval examples: {getattr(err, 'details', lambda: err)()}"
    for name, values in outputs.items():
        if values.shape[0] != len(serialized_examples):
            return f"output {name} has {values.shape[0]} rows for {len(serialized_examples)} examples"
        if not np.all(np.isfinite(values)):
            return f"output {name} has non-finite values"
    probabilities = outputs.get("probabilities")
    if probabilities is not None and not ((probabilities >= 0) & (probabilities <= 1)).all():
        return "probabilities outside [0, 1]"
    return ""


def serialized_input_key(model_dir: str, signature: str = SIGNATURE) -> str:
    """The signature's one input of serialized records (string, [None]), as InfraValidator requires."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.python.saved_model import loader_impl

    saved_model = loader_impl.parse_saved_model(model_dir)
    meta_graph = next(m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags)
    inputs = meta_graph.signature_def[signature].inputs
    (key, info), = inputs.items() if len(inputs) == 1 else ((None, None),)
    if key is None or info.dtype != types_pb2.DT_STRING or [d.size for d in info.tensor_shape.dim] != [-1]:
        raise ValueError(f"signature {signature} must take one string input of shape [None] (serialized "
                         f"tf.Examples) to build requests from examples; it takes {sorted(inputs)}")
    return key


def warmup_logs(model_dir: str, serialized_examples, model_name: str):
    """One PredictionLog per example, as InfraValidator's request builder makes its PredictRequests."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    key = serialized_input_key(model_dir)
    logs = []
    for record in serialized_examples:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = SIGNATURE
        request.inputs[key].CopyFrom(tf.make_tensor_proto([record]))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_model(model_dir: str, output_dir: str, logs) -> str:
    """InfraValidator's _CreateWarmupModel: copy the model, add assets.extra/tf_serving_warmup_requests."""
    import tensorflow as tf

    _copy_dir(model_dir, output_dir)
    path = tfx_internals.warmup_file(output_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def _copy_dir(source: str, target: str) -> None:
    """A local copy of `source` (a local path, or gs://, s3:// on Kubeflow) at `target`."""
    if "://" not in source:
        shutil.copytree(source, target)
        return
    from tfx.utils import io_utils

    io_utils.copy_dir(source, target)


def eval_examples(examples_uri: str, count: int):
    """The first `count` serialized examples of the eval split ExampleGen wrote."""
    import tensorflow as tf

    from tfx.dsl.io import fileio

    files = sorted(fileio.glob(os.path.join(split_dir(examples_uri, EVAL_SPLIT), "*")))  # local or object store
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [r.numpy() for r in records]


@component
def ServingValidator(
    model: InputArtifact[Model],
    examples: InputArtifact[Examples],
    blessing: OutputArtifact[InfraBlessing],
    model_name: Parameter[str] = "taxi",
    num_examples: Parameter[int] = 32,
    load_timeout_s: Parameter[int] = 120,
):
    """Bless the model (custom property `blessed` = 1, as the Pusher reads it) when it serves correctly.

    A blessed model comes with its warmup copy in `<blessing>/stamped_model` (`has_model` = 1): the
    model the Pusher pushes.
    """
    from tfx.utils import path_utils

    model_dir = path_utils.serving_model_path(model.uri)
    examples_list = eval_examples(examples.uri, num_examples)
    stamped = tfx_internals.stamped_model_dir(blessing.uri)
    try:
        logs = warmup_logs(model_dir, examples_list, model_name)
    except Exception as err:  # noqa: BLE001  an unreadable model, or a signature not taking serialized examples
        problem = check_model(model_dir, examples_list, model_name, load_timeout_s) or f"no warmup requests: {err}"
    else:
        write_warmup_model(model_dir, stamped, logs)
        problem = check_model(stamped, examples_list, model_name, load_timeout_s)
    if problem:
        shutil.rmtree(stamped, ignore_errors=True)  # nothing to push
    tfx_internals.write_infra_blessing(blessing, blessed=not problem, has_model=not problem, note=problem)
    blessing.set_int_custom_property("warmup_requests", 0 if problem else len(examples_list))
    blessing.set_string_custom_property("reason", problem or f"served {num_examples} eval examples over gRPC")
