"""The ServingValidator blesses a model only when a model server loads it and answers real requests."""
from __future__ import annotations

import shutil

import pytest

from components.serving_validator import check_model, eval_examples


@pytest.fixture(scope="module")
def pushed_model_and_examples(taxi_pipeline_result):
    config, result = taxi_pipeline_result
    model_dir = next((config.serving_model_dir).iterdir())
    examples = eval_examples(result.nodes["CsvExampleGen"].output_uri("examples"), 16)
    return model_dir, examples


def test_a_good_model_passes(pushed_model_and_examples):
    model_dir, examples = pushed_model_and_examples
    assert len(examples) == 16
    assert check_model(str(model_dir), examples, "taxi", load_timeout_s=60) == ""


def test_a_model_the_server_cannot_load_fails(pushed_model_and_examples, tmp_path):
    model_dir, examples = pushed_model_and_examples
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    problem = check_model(str(broken), examples, "taxi", load_timeout_s=5)
    assert "could not load" in problem


def test_a_model_that_rejects_its_requests_fails(pushed_model_and_examples):
    model_dir, _ = pushed_model_and_examples
    problem = check_model(str(model_dir), [b"\x00not a tf.Example"] * 4, "taxi", load_timeout_s=60)
    assert problem.startswith("serving_default failed on 4 eval examples")
