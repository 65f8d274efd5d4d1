"""`preprocessing_fn` for TensorFlow Transform: one full pass over the training data computes the
vocabularies, means, variances and quantiles; the resulting graph is attached to the exported model,
so serving applies exactly the transformation training saw.

Missing values are handled explicitly: an optional feature arrives as a SparseTensor (no value in some
rows); numbers are imputed with the training mean (z-score 0) and flagged by a `<name>_missing` indicator,
a missing category becomes its own token (learned like any other value), a missing coordinate its
own bucket.
"""
import tensorflow as tf
import tensorflow_transform as tft

from trainer_module import features

xf = features.transformed_name

# Transform traces `preprocessing_fn` in TF1 graph mode: 20 s -> 16 s on the default data (the
# pipeline's Transform and this module's test both use it, so the test checks the graph that ships).
FORCE_TF_COMPAT_V1 = True


def _dense(value, default):
    """A [batch] dense tensor from a FixedLen ([batch, 1]) or VarLen (sparse) input, plus a presence mask."""
    if isinstance(value, tf.sparse.SparseTensor):
        default = tf.constant(default) if value.dtype == tf.string else tf.cast(default, value.dtype)
        present = tf.sparse.to_dense(
            tf.sparse.SparseTensor(value.indices, tf.ones_like(value.values, tf.bool), value.dense_shape),
            default_value=False,
        )
        dense = tf.sparse.to_dense(value, default_value=default)
        # Rows with no value give an empty second dimension: pad to one column.
        dense = tf.concat([dense, tf.fill([tf.shape(dense)[0], 1], default)], axis=1)
        present = tf.concat([present, tf.zeros([tf.shape(present)[0], 1], tf.bool)], axis=1)
        return dense[:, 0], present[:, 0]
    dense = tf.reshape(value, [-1])
    return dense, tf.ones_like(dense, tf.bool)


def _z_score(values, present):
    """z-score against the mean and variance of the present values; a missing value scores 0 (the mean).

    Mean, variance and (below) quantiles all come from the first analysis pass over the data, so
    Transform needs a single pass: imputing first and scaling after would need two.
    """
    observed = tf.boolean_mask(values, present)
    mean, var = tft.mean(observed), tft.var(observed)
    scaled = (values - mean) / tf.where(var > 0, tf.sqrt(var), 1.0)
    return tf.where(present, scaled, 0.0)


def _bucketize(values, present, num_buckets):
    """Quantile buckets computed on the present values."""
    boundaries = tft.quantiles(tf.boolean_mask(values, present), num_buckets, epsilon=0.01)
    return tft.apply_buckets(values, boundaries)


def make_label(inputs):
    """big_tipper = tips > 20% of the fare; rows without a tip amount count as not big tippers."""
    tips, tips_present = _dense(inputs["tips"], float("nan"))
    fare, _ = _dense(inputs["fare"], 0.0)
    big = tf.greater(tf.cast(tips, tf.float32), features.BIG_TIP_FRACTION * tf.cast(fare, tf.float32))
    return tf.cast(tf.logical_and(tips_present, big), tf.int64)


# Transform traces this function several times; with AutoGraph each trace would also convert the TFT
# analyzers beneath it. Its loops and branches are over Python values (feature names, dtypes), so
# plain tracing gives the same graph, seconds sooner.
@tf.autograph.experimental.do_not_convert
def preprocessing_fn(inputs):
    """Raw features in, model-ready features out (`<name>_xf`; `big_tipper` as the label)."""
    outputs = {}
    for name in features.LOG_NUMERIC_FEATURES + features.NUMERIC_FEATURES:
        values, present = _dense(inputs[name], 0.0)
        raw = tf.cast(values, tf.float32)
        values = tf.math.log1p(tf.maximum(raw, 0.0)) if name in features.LOG_NUMERIC_FEATURES else raw
        outputs[xf(name)] = _z_score(values, present)
        outputs[xf(name + features.MISSING_SUFFIX)] = 1.0 - tf.cast(present, tf.float32)
        if name in features.FINE_BUCKET_FEATURES:
            # Buckets of the raw value (the same buckets as of its log: log1p is monotonic). Quantile
            # boundaries are data values, so a value at a boundary must compare exactly: on the raw
            # input it does in every runtime, on log1p it can land one ulp either side (TF Lite
            # computes log1p as log(1 + x); measured: with buckets of log1p, TF Lite's bucket of
            # trip_miles differed by one from TF-Transform's on an eval row) and change bucket.
            outputs[xf(name + features.BUCKET_SUFFIX)] = _bucketize(
                tf.maximum(raw, 0.0) if name in features.LOG_NUMERIC_FEATURES else raw, present,
                features.NUM_FINE_BUCKETS)

    for name in features.CATEGORICAL_FEATURES:
        values, present = _dense(inputs[name], "" if name in features.STRING_FEATURES else 0)
        if values.dtype != tf.string:
            values = tf.strings.as_string(values)
        values = tf.where(present, tf.strings.strip(values), features.MISSING_TOKEN)
        outputs[xf(name)] = tft.compute_and_apply_vocabulary(
            values, top_k=features.VOCAB_TOP_K, num_oov_buckets=features.OOV_BUCKETS, vocab_filename=name
        )

    for name in features.BUCKET_FEATURES:
        values, present = _dense(inputs[name], 0.0)
        buckets = _bucketize(tf.cast(values, tf.float32), present, features.NUM_BUCKETS)
        outputs[xf(name)] = tf.where(present, buckets, tf.cast(features.NUM_BUCKETS, tf.int64))

    outputs[features.LABEL_KEY] = make_label(inputs)
    return outputs
