"""Values the Kubeflow tests compile with, and the compile fixture they share.

Not a conftest.py: another test directory imports `conftest` by name, and a second conftest
module would shadow it. Test modules import the fixtures from here instead (pytest then runs
the compile once per importing module; after the first, TFX is imported and it takes ~2 s).
"""
import json

import pytest

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before anything loads TensorFlow)

IMAGE = "registry.example.com/ml/taxi-pipeline:1.2.3"
PIPELINE_ROOT = "gs://taxi-bucket/pipeline-root"
WORKERS = 3
TRAIN_STEPS = 123


@pytest.fixture(scope="module")
def compiled_spec_path(tmp_path_factory):
    """The real pipeline compiled through the CLI, as a user would."""
    from pipeline.cli import main

    out = tmp_path_factory.mktemp("kfp") / "taxi-pipeline.json"
    rc = main(["compile", "--image", IMAGE, "--output", str(out), "--pipeline-root", PIPELINE_ROOT,
               "--workers", str(WORKERS), "--training-loop", "custom", "--train-steps", str(TRAIN_STEPS)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def compiled_job(compiled_spec_path):
    return json.loads(compiled_spec_path.read_text())
