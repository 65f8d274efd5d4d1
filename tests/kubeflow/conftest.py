"""One real compile of the real pipeline, shared by the compile and submit tests (~20 s: TFX)."""
import json

import pytest
from kfp_testdata import IMAGE, PIPELINE_ROOT, TRAIN_STEPS, WORKERS

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before anything loads TensorFlow)


@pytest.fixture(scope="session")
def compiled_spec_path(tmp_path_factory):
    from pipeline.cli import main

    out = tmp_path_factory.mktemp("kfp") / "taxi-pipeline.json"
    rc = main(["compile", "--image", IMAGE, "--output", str(out), "--pipeline-root", PIPELINE_ROOT,
               "--workers", str(WORKERS), "--training-loop", "custom", "--train-steps", str(TRAIN_STEPS)])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def compiled_job(compiled_spec_path):
    return json.loads(compiled_spec_path.read_text())
