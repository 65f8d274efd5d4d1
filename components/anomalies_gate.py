"""AnomaliesGate: stops the pipeline before training when ExampleValidator found anomalies.

TFX's ExampleValidator only records anomalies; the pipeline would go on and train on the bad data.
This gate reads them and fails with one line naming each split and feature, so bad data never
reaches the Trainer, let alone the serving directory. The fix is either in the data or, when the
change is legitimate (a new payment type, say), in the curated schema.
"""
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import ExampleAnomalies

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from components.errors import BadDataError


# TFX's ExampleValidator executor's DEFAULT_FILE_NAME, not imported from it: that module imports TFDV,
# which `taxi-pipeline status` (it reads anomalies through this module) does not otherwise need; a test
# pins the two equal.
ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(BadDataError):
    """The data does not match the schema."""


def anomalies_by_split(artifact) -> dict:
    """split -> {feature: short description} from ExampleValidator's output (TFX's split layout, TFMD's proto).

    `artifact` is the ExampleAnomalies artifact (a TFX Artifact, or the MLMD Artifact proto read back
    from ML Metadata); a split without anomalies maps to {}. The gate and the run's read-back share it.
    """
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.dsl.io import fileio  # on Kubeflow the artifacts are on the object store (gs://, s3://)
    from tfx.types import artifact_utils, standard_artifacts

    if not hasattr(artifact, "split_names"):  # an MLMD proto: wrap it as the TFX artifact it is
        wrapped = standard_artifacts.ExampleAnomalies()
        wrapped.set_mlmd_artifact(artifact)
        artifact = wrapped
    found = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([artifact], split), ANOMALIES_FILE)
        if not fileio.exists(path):
            continue
        with fileio.open(path, "rb") as f:
            proto = anomalies_pb2.Anomalies.FromString(f.read())  # all TFDV's load_anomalies_binary does
        items = {name: info.short_description or info.description for name, info in proto.anomaly_info.items()}
        if proto.HasField("dataset_anomaly_info"):
            items["(dataset)"] = proto.dataset_anomaly_info.short_description
        found[split] = items
    return found


def describe(found) -> str:
    """One short line, a feature once: 'payment_type (Unexpected string values) in eval, train; ...'."""
    by_feature = {}
    for split, items in found.items():
        for feature, text in items.items():
            by_feature.setdefault((feature, text), []).append(split)
    return "; ".join(f"{feature} ({text}) in {', '.join(sorted(splits))}" for (feature, text), splits in sorted(by_feature.items()))


@component
def AnomaliesGate(anomalies: InputArtifact[ExampleAnomalies], fail_on_anomalies: Parameter[int] = 1):
    """Raise DataAnomaliesError when any split has an anomaly (unless fail_on_anomalies is 0)."""
    found = {split: items for split, items in anomalies_by_split(anomalies).items() if items}
    if found and fail_on_anomalies:
        raise DataAnomaliesError(
            f"the data does not match the schema: {describe(found)}. Fix the data, or if the change is "
            "expected, update trainer_module/schema/schema.pbtxt"
        )
