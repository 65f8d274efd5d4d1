"""Fixtures of the multi-worker trainer tests (helpers live in trainer_helpers.py)."""
from pathlib import Path

import pytest

from trainer_helpers import TrainerExecution


@pytest.fixture
def trainer_execution(tmp_path):
    """Factory: trainer_execution(workers=2, toy_mode="fail", ...) -> TrainerExecution."""
    return lambda **kwargs: TrainerExecution(tmp_path / "run", **kwargs)


@pytest.fixture(scope="session")
def trainer_reference_run(request, tmp_path_factory):
    """The PipelineConfig of a completed single-worker pipeline run: the lead's shared
    `taxi_pipeline_run` when tests/conftest.py provides it, else one run of our own (same sample).
    TRAINER_REFERENCE_HOME=<home of a finished run> reuses that run instead (to iterate quickly)."""
    import os

    if os.environ.get("TRAINER_REFERENCE_HOME"):
        from pipeline import configs

        return configs.PipelineConfig(home=Path(os.environ["TRAINER_REFERENCE_HOME"]).resolve())
    try:
        return request.getfixturevalue("taxi_pipeline_run")
    except pytest.FixtureLookupError:
        from pipeline import configs
        from pipeline.local_runner import run_pipeline

        config = configs.PipelineConfig(home=tmp_path_factory.mktemp("trainer-reference-home"), train_steps=300,
                                        eval_steps=20)
        run_pipeline(config)
        return config
