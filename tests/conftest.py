"""Shared fixtures: one real pipeline run on a small sample of the taxi data, shared by the whole session.

Every integration test (serving, multi-worker trainer, summary, status) reads the outputs of this one
run instead of running its own, which keeps the suite within its time budget.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests_support import SAMPLE_ROWS, write_sample  # noqa: F401  (also used by tests directly)


@pytest.fixture(scope="session")
def taxi_sample_dir(tmp_path_factory) -> Path:
    """A data folder with a real 4,000-row sample of the taxi data."""
    folder = tmp_path_factory.mktemp("taxi-sample")
    write_sample(folder / "data.csv")
    return folder


@pytest.fixture(scope="session")
def taxi_pipeline_config(taxi_sample_dir, tmp_path_factory):
    """Settings of the shared run: short training (20 passes over ~2,700 training rows, ~210 steps of 256,
    its length derived from the data); bars lowered to what a 4k-row sample can reach."""
    from pipeline import configs

    return configs.PipelineConfig(
        home=tmp_path_factory.mktemp("pipeline-home"),
        data_root=taxi_sample_dir,
        epochs=20,
        eval_steps=10,
        min_auc=0.85,
        min_accuracy=0.80,
    )


@pytest.fixture(scope="session")
def taxi_pipeline_result(taxi_pipeline_config):
    """(config, RunResult) of one completed local run of the real pipeline on the sample."""
    from pipeline.local_runner import run_pipeline

    return taxi_pipeline_config, run_pipeline(taxi_pipeline_config)


@pytest.fixture(scope="session")
def taxi_pipeline_run(taxi_pipeline_result):
    """The PipelineConfig of the completed run (its pipeline_root, metadata_path, serving_base...)."""
    return taxi_pipeline_result[0]


@pytest.fixture(scope="session")
def taxi_serving_base(taxi_pipeline_run) -> Path:
    """<base> such that <base>/taxi/<version>/saved_model.pb is the model the run pushed."""
    base = taxi_pipeline_run.serving_base
    assert list((base / taxi_pipeline_run.model_name).glob("*/saved_model.pb")), "the shared run pushed no model"
    return base


# Fixtures behind which a whole pipeline runs, or a container image is built and run: a test that uses one
# (directly or through another fixture) is `slow`. `make test ARGS="-m 'not slow'"` leaves them out.
SLOW_FIXTURES = {"taxi_pipeline_result", "pipeline_image"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the whole pipeline or builds/runs the container image")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
