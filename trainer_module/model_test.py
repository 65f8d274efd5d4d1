"""The Keras model: build, forward pass, and both training loops on a tiny in-memory dataset."""
from __future__ import annotations

import numpy as np
import pytest

import trainer_module  # noqa: F401  (TF_USE_LEGACY_KERAS first)
import tensorflow as tf

from trainer_module import model as model_lib
from trainer_module import distribution, training

CARDINALITIES = {"payment_type_xf": 5, "company_xf": 7, "pickup_latitude_xf": 11}


def _batch(n=64, seed=0):
    """Inputs where the label is exactly "payment_type index == 1": learnable in a few steps."""
    rng = np.random.default_rng(seed)
    x = {name: tf.constant(rng.normal(size=n).astype("float32")) for name in model_lib.numeric_inputs()}
    for name, size in CARDINALITIES.items():
        x[name] = tf.constant(rng.integers(0, size, size=n), dtype=tf.int64)
    y = tf.cast(tf.equal(x["payment_type_xf"], 1), tf.int64)
    return x, y




def test_is_a_keras_model_subclass_with_probabilities():
    m = model_lib.build_model(CARDINALITIES, 0.01)
    assert isinstance(m, tf.keras.Model) and type(m) is not tf.keras.Model
    x, _ = _batch()
    p = m(x).numpy()
    assert p.shape == (64, 1) and ((p > 0) & (p < 1)).all()


def test_fit_learns_a_simple_rule():
    m = model_lib.build_model(CARDINALITIES, 0.05)
    ds = tf.data.Dataset.from_tensors(_batch()).repeat()
    history = training.train_with_fit(m, ds, ds, steps=100, eval_steps=1)
    assert history["val_auc"][-1] > 0.99 and history["loss"][-1] < history["loss"][0]


def test_custom_loop_learns_the_same_rule_and_adds_the_l2_penalty():
    strategy = tf.distribute.get_strategy()
    m = model_lib.build_model(CARDINALITIES, 0.05)
    ds = tf.data.Dataset.from_tensors(_batch()).repeat()
    history = training.train_with_custom_loop(strategy, m, ds, ds, steps=100, eval_steps=1, global_batch=64)
    assert history["val_auc"][-1] > 0.99 and history["loss"][-1] < history["loss"][0]
    assert m.losses  # L2 on embeddings and kernels is part of the model, so both loops optimise it


def test_default_strategy_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribution.make_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert distribution.task_of(strategy) == {"task_type": "worker", "task_index": 0, "is_chief": True}


def test_model_size_comes_from_the_settings_and_survives_a_copy():
    """hidden_units / embedding_dim reach the layers (custom_config gives JSON lists), and the model's
    config rebuilds the same shapes: the TF Lite export copies the trained model from it."""
    from trainer_module.settings import TrainingSettings

    settings = TrainingSettings.from_custom_config({"hidden_units": [16, 8, 4], "embedding_dim": 3})
    assert settings.hidden_units == (16, 8, 4) and settings.embedding_dim == 3
    m = model_lib.build_model(CARDINALITIES, 0.01, hidden_units=settings.hidden_units,
                              embedding_dim=settings.embedding_dim)
    x, _ = _batch()
    m(x)
    assert [layer.units for layer in m.hidden] == [16, 8, 4]
    assert m.embedding.get_weights()[0].shape == (sum(CARDINALITIES.values()), 3)
    copy = model_lib.TaxiModel(**m.get_config())
    copy(x)
    copy.set_weights(m.get_weights())
    np.testing.assert_allclose(copy(x).numpy(), m(x).numpy(), atol=1e-6)
