"""ServingBaseline: the model serving now, as the Model artifact the Evaluator and the DriftCheck compare with.

Locally the baseline is TFX's LatestBlessedModelStrategy resolver, an ML Metadata query. The open-source
Kubeflow Pipelines backend cannot run resolver tasks (its argo compiler refuses them: "resolver executors
not implemented", backend/src/v2/compiler/argocompiler/dag.go at 2.2.0, 2.5.0 and 2.17.0), so on Kubeflow
the baseline is read where production reads it: the newest version under the push destination (the
folder TF Serving serves, on the shared volume). That is also the right baseline after a rollback,
which the "latest blessed" query is not.

The version is copied into this step's output (the artifact must live under the pipeline root: the
KFP launcher refuses output URIs outside it) in TFX's Model layout (`Format-Serving/`), the training
statistics the Trainer stores inside the model included, so the Evaluator and the DriftCheck read it as
any Model. With nothing pushed yet the artifact is empty and says so (`serving_version` ""): the
Evaluator then checks the absolute bars only and the DriftCheck has nothing to compare, as on a first
local run, and both say so in their logs and reports.
"""

import os

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types.standard_artifacts import Model
from tfx.utils import io_utils, path_utils

VERSION_PROPERTY = "serving_version"  # "" when nothing is served yet


def newest_version(serving_model_dir: str):
    """The newest numbered version folder holding a SavedModel (TF Serving's choice), or None."""
    if not fileio.exists(serving_model_dir):
        return None
    versions = sorted((int(name.strip("/")) for name in fileio.listdir(serving_model_dir)
                       if name.strip("/").isdigit()), reverse=True)
    for version in versions:
        if fileio.exists(os.path.join(serving_model_dir, str(version), "saved_model.pb")):
            return version
    return None


def has_baseline(model) -> bool:
    """False for a ServingBaseline output that found nothing served; True for any other Model."""
    if model is None:
        return False
    if model.has_custom_property(VERSION_PROPERTY):
        return bool(model.get_string_custom_property(VERSION_PROPERTY))
    return True


@component
def ServingBaseline(baseline_model: OutputArtifact[Model], serving_model_dir: Parameter[str]):
    """Copies the newest served version into `baseline_model` (Format-Serving/), or marks it empty."""
    version = newest_version(serving_model_dir)
    baseline_model.set_string_custom_property(VERSION_PROPERTY, "" if version is None else str(version))
    if version is None:
        print(f"ServingBaseline: nothing served under {serving_model_dir} yet: no baseline "
              "(the Evaluator checks the absolute bars only, the DriftCheck has nothing to compare with)")
        return
    io_utils.copy_dir(os.path.join(serving_model_dir, str(version)), path_utils.serving_model_dir(baseline_model.uri))
    print(f"ServingBaseline: the baseline is version {version} of {serving_model_dir}")
