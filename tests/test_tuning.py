"""`run --tune`: TFX's Tuner (KerasTuner) searches the model's size and learning rate, and the Trainer
trains with the best; a later run without --tune takes the last tuning's hyperparameters from ML Metadata.

Runs the real pipeline on the shared 4,000-row sample in a home of its own, against the shared untuned
run's AUC."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.local_runner import run_pipeline
from trainer_module import tuning

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(taxi_pipeline_result, tmp_path_factory):
    config, _ = taxi_pipeline_result
    tuned_config = config.replace(home=tmp_path_factory.mktemp("tuned-home"), tune=True, tune_trials=3,
                                  tune_steps=150)
    return tuned_config, run_pipeline(tuned_config)


def _best(view) -> dict:
    uri = Path(view.nodes["Tuner"].output_uri("best_hyperparameters"))
    return json.loads(next(uri.iterdir()).read_text())["values"]


def _model_config(view) -> dict:
    """The trained model's own config (TaxiModel.get_config), as Keras saved it in the SavedModel."""
    from tf_keras.protobuf import saved_metadata_pb2  # Keras 2 (tf_keras) writes keras_metadata.pb

    model_dir = Path(view.nodes["Trainer"].output_uri("model")) / "Format-Serving"
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((model_dir / "keras_metadata.pb").read_bytes())
    root = next(node for node in metadata.nodes if node.node_path == "root")
    return json.loads(root.metadata)["config"]


def test_the_tuners_best_hyperparameters_reach_the_trained_model(tuned):
    _, view = tuned
    best = _best(view)
    assert set(best) == set(tuning.SEARCH_SPACE)
    model = _model_config(view)
    units = model["hidden_units"]
    units = units["items"] if isinstance(units, dict) else units  # Keras writes a tuple as {"class_name": "__tuple__", ...}
    assert "-".join(map(str, units)) == best["hidden_units"]
    assert model["embedding_dim"] == best["embedding_dim"]
    assert view.training.hyperparameters["learning_rate"] == pytest.approx(best["learning_rate"])
    assert view.training.model_line(tuned_here=True).endswith("(tuned in this run)")


def test_the_tuned_model_is_blessed_and_not_worse_than_the_untuned_default(tuned, taxi_pipeline_result):
    _, untuned = taxi_pipeline_result
    _, view = tuned
    assert view.verdict.evaluator_blessed and view.push is not None
    assert view.overall["auc"] >= untuned.overall["auc"] - 0.005


def test_a_run_without_tune_takes_the_last_tunings_hyperparameters(tuned):
    config, first = tuned
    again = run_pipeline(config.replace(tune=False, epochs=10))  # another length: the Trainer runs again
    assert again.state("Trainer") == "COMPLETE" and "Tuner" not in again.nodes
    assert again.training.hyperparameters["tuned"] is True
    assert again.training.hyperparameters == {**first.training.hyperparameters}
    assert again.training.model_line(tuned_here=False).endswith("(the last tuning's)")
