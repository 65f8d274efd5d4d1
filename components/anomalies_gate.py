"""AnomaliesGate: stops the pipeline before Transform when ExampleValidator found anomalies.

TFX's ExampleValidator only records anomalies; the pipeline would go on and train on the bad data.
This gate reads them and fails with one line naming each split and feature, so bad data never
reaches the Trainer, let alone the serving directory. The fix is either in the data or, when the
change is legitimate (a new payment type, say), in the curated schema.
"""
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import ExampleAnomalies

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


class DataAnomaliesError(RuntimeError):
    """The data does not match the schema."""


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
    from pipeline import run_results

    found = {split: items for split, items in run_results.anomalies(anomalies.uri).items() if items}
    if found and fail_on_anomalies:
        raise DataAnomaliesError(
            f"the data does not match the schema: {describe(found)}. Fix the data, or if the change is "
            "expected, update pipeline/schema/schema.pbtxt"
        )
