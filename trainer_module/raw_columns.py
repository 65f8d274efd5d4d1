"""Raw feature columns as `serving_raw` and TF Lite take them, and as `parse_example` would have given them.

A column is dense (`[batch]`); a missing value is marked in it ("" for strings, NaN for floats, -1 for
integers) and becomes "no value" in the parsed form: a SparseTensor for an optional feature.
"""
import tensorflow as tf


def missing_value(dtype) -> object:
    """How a raw column marks a missing value: "" for strings, NaN for floats, -1 for integers."""
    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        return b""
    return float("nan") if dtype.is_floating else -1


def as_parsed(column, spec):
    """A [batch] column as `parse_example` would give it; "" / NaN / negative ints mark missing values."""
    if isinstance(spec, tf.io.FixedLenFeature):
        return tf.reshape(column, [-1, 1])
    if column.dtype == tf.string:
        present = tf.not_equal(column, "")
    elif column.dtype.is_floating:
        present = tf.logical_not(tf.math.is_nan(column))
    else:
        present = tf.greater_equal(column, 0)
    rows = tf.cast(tf.where(present), tf.int64)
    indices = tf.concat([rows, tf.zeros_like(rows)], axis=1)
    return tf.sparse.SparseTensor(indices, tf.boolean_mask(column, present), [tf.size(column, tf.int64), 1])
