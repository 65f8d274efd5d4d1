"""ServingValidator: the candidate model must load in a model server and answer real requests.

The Evaluator judges predictions computed by TFMA in process; it cannot tell whether a model server
will load the export (a missing asset, an op the server lacks, a signature taking the wrong input).
This component loads the candidate in our TF Serving-compatible server, sends serialized eval
examples over gRPC exactly as clients will, and checks the answers (one row per example, finite,
probabilities in [0, 1]). The Pusher requires its blessing, so a model that cannot serve is never
pushed. (TFX's InfraValidator does this with Docker or Kubernetes, neither of which a local run has.)
"""
import os
import shutil
import tempfile

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Examples, InfraBlessing, Model

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

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
        options = ServerOptions(model_config.single_model_config(model_name, base), grpc_port=0, rest_port=None)
        with ModelServer(options) as server, ServingClient(f"127.0.0.1:{server.grpc_port}", timeout_s=30) as client:
            if not client.wait_until_available(model_name, load_timeout_s):
                return f"the model server could not load the model within {load_timeout_s:.0f} s"
            try:
                outputs, _ = client.predict(model_name, {"examples": np.array(serialized_examples, dtype=object)}, SIGNATURE)
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

    files = sorted(fileio.glob(os.path.join(examples_uri, "Split-eval", "*")))  # local or object store
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
    """Bless the model (custom property `blessed` = 1, as the Pusher reads it) when it serves correctly."""
    problem = check_model(
        os.path.join(model.uri, "Format-Serving"), eval_examples(examples.uri, num_examples), model_name, load_timeout_s
    )
    blessing.set_int_custom_property("blessed", 0 if problem else 1)
    blessing.set_string_custom_property("reason", problem or f"served {num_examples} eval examples over gRPC")
    marker = "INFRA_NOT_BLESSED" if problem else "INFRA_BLESSED"
    from tfx.dsl.io import fileio

    with fileio.open(os.path.join(blessing.uri, marker), "w") as f:
        f.write(problem)
