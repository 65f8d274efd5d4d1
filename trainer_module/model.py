"""The Keras model: a `tf.keras.Model` subclass (the TF 2 style users port to).

Categorical inputs (vocabulary indices, coordinate buckets) get embeddings; numeric inputs go in as
they are (already z-scored by Transform); an MLP (its widths: trainer_module/settings.py) sits on
top, with a direct "wide" logit from the categorical one-hots beside it, so strong single signals
such as the payment type are learned at once and the MLP refines them. It outputs the probability
of a big tip.
"""
from typing import Dict, Sequence

import tensorflow as tf

from trainer_module import features
from trainer_module.settings import EMBEDDING_DIM, HIDDEN_UNITS


def numeric_inputs() -> Sequence[str]:
    """Numeric model inputs (after Transform), missing-value indicators included, in a fixed order."""
    names = features.LOG_NUMERIC_FEATURES + features.NUMERIC_FEATURES
    names = tuple(names) + tuple(n + features.MISSING_SUFFIX for n in names)
    return tuple(features.transformed_name(n) for n in names)


class TaxiModel(tf.keras.Model):
    """Wide (linear over one-hots) & deep (embeddings + MLP) binary classifier on transformed features.

    All categorical inputs share one embedding table (each feature owns a slice of rows, found by an
    offset), so a batch costs two lookups instead of two per feature: the same model, several times
    fewer ops per training step.
    """

    def __init__(
        self, cardinalities: Dict[str, int], hidden_units=HIDDEN_UNITS, embedding_dim=EMBEDDING_DIM, dropout=0.3,
        l2=1e-3, **kwargs
    ):
        super().__init__(**kwargs)
        self.sizes = {"hidden_units": tuple(hidden_units), "embedding_dim": int(embedding_dim),
                      "dropout": dropout, "l2": l2}
        self.cardinalities = dict(sorted(cardinalities.items()))
        sizes = list(self.cardinalities.values())
        self.offsets = tf.constant([sum(sizes[:i]) for i in range(len(sizes))], tf.int64)
        reg = tf.keras.regularizers.l2(l2) if l2 else None
        self.embedding = tf.keras.layers.Embedding(sum(sizes), embedding_dim, embeddings_regularizer=reg, name="embed")
        self.wide = tf.keras.layers.Embedding(sum(sizes), 1, embeddings_regularizer=reg, name="wide")
        self.hidden = [
            tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"hidden_{i}")
            for i, units in enumerate(hidden_units)
        ]
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.deep_logit = tf.keras.layers.Dense(1, name="deep_logit")

    def call(self, inputs, training=False):
        numeric = tf.stack([tf.reshape(tf.cast(inputs[name], tf.float32), [-1]) for name in numeric_inputs()], axis=1)
        categories = tf.stack([tf.reshape(tf.cast(inputs[name], tf.int64), [-1]) for name in self.cardinalities], axis=1)
        rows = categories + self.offsets  # [batch, features]: each feature's own rows of the shared table
        embedded = tf.reshape(self.embedding(rows), [tf.shape(rows)[0], -1])
        x = tf.concat([numeric, embedded], axis=1)
        for layer in self.hidden:
            x = self.dropout(layer(x), training=training)
        wide_logit = tf.reduce_sum(self.wide(rows), axis=1)
        return tf.sigmoid(self.deep_logit(x) + wide_logit)

    # Keras traces these with AutoGraph, which then converts every Keras internal they call (loss,
    # metrics, optimizer): ~15 s of a 20 s training run here. Nothing in them branches on tensor
    # values, so plain tracing is exact and the first step starts almost at once.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        return super().train_step(data)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        return super().test_step(data)

    def get_config(self):
        return {"cardinalities": self.cardinalities, **self.sizes}


def cardinalities_from(tf_transform_output) -> Dict[str, int]:
    """Input sizes of the categorical inputs, read from Transform's vocabularies."""
    xf = features.transformed_name
    sizes = {
        xf(name): features.categorical_cardinality(tf_transform_output.vocabulary_size_by_name(name))
        for name in features.CATEGORICAL_FEATURES
    }
    sizes.update({xf(name): features.bucket_cardinality() for name in features.BUCKET_FEATURES})
    sizes.update({xf(name + features.BUCKET_SUFFIX): features.NUM_FINE_BUCKETS for name in features.FINE_BUCKET_FEATURES})
    return sizes


def build_model(cardinalities: Dict[str, int], learning_rate: float, decay_steps: int = 0, **sizes) -> TaxiModel:
    """A compiled model; call inside `strategy.scope()` so its variables are mirrored.

    With `decay_steps`, the learning rate follows a cosine down to 0 over training: the last steps
    only refine, so the final weights do not depend on where the noise of the last batches left them.
    """
    return compile_model(TaxiModel(cardinalities, **sizes), learning_rate, decay_steps)


def compile_model(model: TaxiModel, learning_rate: float, decay_steps: int = 0) -> TaxiModel:
    """`build_model`'s optimizer, loss and metrics, for a model made (and warm-started) before."""
    if decay_steps:
        learning_rate = tf.keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy"), tf.keras.metrics.AUC(name="auc")],
    )
    return model
