"""Small SavedModels for tests, the benchmark and trying the server without a pipeline run.

`export_taxi_like_model` writes the same interface the pipeline's exported model has
(`serving_default` on serialized tf.Example -> `probabilities` [None, 1]; `serving_raw` with one
tensor per raw feature) on a few taxi columns, with seeded untrained weights: enough to check that
a server returns exactly what the SavedModel computes. `export_classify_regress_model` is a TF1
graph with real `tensorflow/serving/classify` and `.../regress` signatures (TF2's saver only writes
predict signatures), as estimators exported them.
"""
from __future__ import annotations

import os

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# Raw taxi column -> dtype name used by the sample model (the pipeline's schema types).
TAXI_LIKE_FEATURES = {
    "fare": "float32",
    "trip_miles": "float32",
    "trip_seconds": "int64",
    "trip_start_hour": "int64",
    "payment_type": "string",
    "company": "string",
}


def export_taxi_like_model(path: str, seed: int = 0, bias: float = 0.0) -> str:
    """Write a taxi-like SavedModel at `path` (a version directory); returns `path`."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    dtypes = {name: tf.as_dtype(d) for name, d in TAXI_LIKE_FEATURES.items()}
    defaults = {tf.float32: 0.0, tf.int64: 0, tf.string: ""}
    spec = {name: tf.io.FixedLenFeature([], dt, default_value=defaults[dt]) for name, dt in dtypes.items()}
    width = 3 + 24 + 8 + 8
    model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu", input_shape=(width,)),
                                 tf.keras.layers.Dense(1, activation="sigmoid",
                                                       bias_initializer=tf.keras.initializers.Constant(bias))])

    def features(raw):
        def hashed(name):
            return tf.one_hot(tf.strings.to_hash_bucket_fast(raw[name], 8), 8)
        numeric = tf.stack([tf.math.log1p(tf.maximum(raw["fare"], 0.0)),
                            tf.math.log1p(tf.maximum(raw["trip_miles"], 0.0)),
                            tf.cast(raw["trip_seconds"], tf.float32) / 3600.0], axis=1)
        hour = tf.one_hot(tf.clip_by_value(raw["trip_start_hour"], 0, 23), 24)
        return tf.concat([numeric, hour, hashed("payment_type"), hashed("company")], axis=1)

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(self, examples):
            raw = tf.io.parse_example(examples, spec)
            return {"probabilities": self.model(features(raw))}

        @tf.function(input_signature=[tf.TensorSpec([None], dt, name=n) for n, dt in dtypes.items()])
        def serve_raw(self, *columns):
            raw = dict(zip(dtypes, columns))
            return {"probabilities": self.model(features(raw))}

    module = Exported()
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.serve_examples.get_concrete_function(),
        "serving_raw": module.serve_raw.get_concrete_function()})
    return path


def export_classify_regress_model(path: str, weight: float = 2.0, bias: float = -1.0) -> str:
    """TF1 SavedModel over tf.Examples with feature `x` (float): classify, regress, predict signatures.

    regress: outputs = weight*x + bias, shape [None, 1]; classify: classes ["yes","no"] with scores
    [sigmoid(y), 1-sigmoid(y)]; serving_default (predict): {"x": [None,1]} -> {"y", "p": [None,1]}.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x_examples = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        x_direct = v1.placeholder(tf.float32, [None, 1], name="x")
        w = v1.Variable([[weight]], name="w")
        b = v1.Variable([bias], name="b")
        y_examples = tf.matmul(x_examples, w) + b
        y_direct = tf.matmul(x_direct, w) + b
        p = tf.sigmoid(y_examples)
        scores = tf.concat([p, 1.0 - p], axis=1)
        classes = tf.tile(tf.constant([["yes", "no"]]), [tf.shape(serialized)[0], 1])
        utils = v1.saved_model.signature_def_utils
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": utils.predict_signature_def({"x": x_direct},
                                                               {"y": y_direct, "p": tf.sigmoid(y_direct)}),
                "classify": utils.classification_signature_def(serialized, classes, scores),
                "regress": utils.regression_signature_def(serialized, y_examples),
            })
            builder.save()
    return path


def version_dir(base: str, name: str, version: int) -> str:
    return os.path.join(base, name, str(version))
