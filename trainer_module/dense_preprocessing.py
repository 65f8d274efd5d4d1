"""TF-Transform's preprocessing on dense columns: the same outputs from a third fewer ops.

TF-Transform's own graph (`transform_features_layer`) works on the sparse tensors `parse_example`
gives: per optional feature it densifies, pads and slices (`preprocessing._dense`), then scales,
buckets and looks up. Run per request, that graph is most of a served model's cost: 359 ops executed
per call of the pushed taxi model's serving_default. `DensePreprocessing` computes the same outputs on
dense `[batch]` columns with a presence mask, in a few ops per feature (z-score: SUB, DIV; missing
indicator; BUCKETIZE; a hash-table lookup): 271 ops per call with the parse and the model included.
Measured with `python -m bench.serving_latency --home <run>` (16 clients, batching): see
bench/RESULTS.md, 2026-12-02 (c).

Two users:
- the served model (`trainer_module.export`): serving_default parses the tf.Examples it is sent, densifies
  each optional feature as `preprocessing._dense` does (first value, presence mask) and runs this
  preprocessing; TF-Transform's own graph stays in the model as `serving_tf_transform`;
- TF Lite (`trainer_module.tflite_export`), which has builtins for these ops and not for
  TF-Transform's sparse ones: raw columns come in with missing values marked ("" / NaN / -1).

The constants are the Transform's own: vocabularies from its files; means, deviations and bucket
boundaries read off its graph by probing it (`from_transform`): the z-score is affine in the (log1p)
value, so three points give mean and deviation; a bucket index is monotone in the value, so bisection
over float32 finds every boundary exactly (preprocessing_fn buckets raw values, not their log1p, so
every runtime compares a value at a boundary alike). `check` and `check_examples` compare every
output with TF-Transform's own on real rows; a user of this class refuses it where they differ.
"""
from __future__ import annotations

import copy
import uuid
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer_module import features
from trainer_module.raw_columns import missing_value
from trainer_module.transform_probe import TransformProbe, dtype_of

# Float outputs may differ from TF-Transform's by rounding ((x - mean) / deviation against its
# (x - mean) / sqrt(var)): 9e-8 at most on the default data. Integer outputs must be equal.
FLOAT_TOLERANCE = 1e-5


class PreprocessingMismatch(ValueError):
    """The dense preprocessing's output differs from TF-Transform's on real rows; the message says which."""


def densify(value: tf.sparse.SparseTensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """(first value of each row, whether the row has one) of a VarLen feature, as `preprocessing._dense`
    takes them (its two to_dense, pad and slice in two SparseToDense ops); absent values are marked
    as `missing_value` marks them."""
    width = tf.maximum(value.dense_shape[1], 1)  # every row empty: a width of 0
    shape = tf.stack([value.dense_shape[0], width])
    dense = tf.raw_ops.SparseToDense(sparse_indices=value.indices, output_shape=shape, sparse_values=value.values,
                                     default_value=tf.constant(missing_value(value.dtype), value.dtype),
                                     validate_indices=False)
    present = tf.raw_ops.SparseToDense(sparse_indices=value.indices, output_shape=shape, sparse_values=True,
                                       default_value=False, validate_indices=False)
    return dense[:, 0], present[:, 0]


class DensePreprocessing:
    """`preprocessing.preprocessing_fn` of one trained Transform, on dense raw columns (see the module doc)."""

    def __init__(self, raw_spec, vocabularies, scores, boundaries):
        self.raw_spec = raw_spec  # serving inputs: name -> FixedLenFeature / VarLenFeature
        self.vocabularies = vocabularies  # categorical feature -> tokens (bytes) in index order
        self.scores = scores  # numeric feature -> (mean, deviation) of its (log1p) value
        self.boundaries = boundaries  # feature -> bucket boundaries (float32 values, ascending)
        # The id of a missing category (MISSING_TOKEN), computed once, outside any graph.
        self.missing_ids = {name: self.token_id(name, features.MISSING_TOKEN.encode()) for name in vocabularies}
        self.tables: Optional[Dict[str, tf.lookup.StaticHashTable]] = None  # see with_static_tables

    # -- what preprocessing_fn does, per feature group (trainer_module.features) --
    def _present(self, name, column, presence):
        """Where a value is present: from `presence` when given, else from the column's missing-value
        markers; None for a required (FixedLen) feature, always present."""
        if presence is not None and name in presence:
            return presence[name]
        if isinstance(self.raw_spec[name], tf.io.FixedLenFeature):
            return None
        if column.dtype == tf.string:
            return tf.not_equal(column, "")
        if column.dtype.is_floating:
            return tf.equal(column, column)  # not NaN (TF Lite has no IsNan)
        return tf.greater_equal(column, 0)

    @staticmethod
    def _where(present, values, otherwise):
        return values if present is None else tf.where(present, values, otherwise)

    def __call__(self, columns, presence: Optional[Mapping[str, tf.Tensor]] = None):
        """Transformed features of raw `[batch]` columns; `presence` (name -> bool column) says which
        values are there, else the markers of `missing_value` do."""
        xf = features.transformed_name
        out = {}
        for name in features.LOG_NUMERIC_FEATURES + features.NUMERIC_FEATURES:
            column = columns[name]
            present = self._present(name, column, presence)
            raw = self._where(present, tf.cast(column, tf.float32), 0.0)
            clipped = tf.maximum(raw, 0.0)
            values = tf.math.log(clipped + 1.0) if name in features.LOG_NUMERIC_FEATURES else raw
            mean, deviation = self.scores[name]
            out[xf(name)] = self._where(present, (values - mean) / deviation, 0.0)
            out[xf(name + features.MISSING_SUFFIX)] = (
                tf.zeros_like(raw) if present is None else 1.0 - tf.cast(present, tf.float32))
            if name in features.FINE_BUCKET_FEATURES:
                source = clipped if name in features.LOG_NUMERIC_FEATURES else raw
                out[xf(name + features.BUCKET_SUFFIX)] = self._bucketize(source, name + features.BUCKET_SUFFIX)
        for name in features.CATEGORICAL_FEATURES:
            column = columns[name]
            present = self._present(name, column, presence)
            values = tf.strings.strip(column) if column.dtype == tf.string else tf.strings.as_string(column)
            # A missing value is the MISSING_TOKEN category: its id is a constant (no string select needed).
            out[xf(name)] = self._where(present, self._lookup(name, values),
                                        tf.constant(self.missing_ids[name], tf.int64))
        for name in features.BUCKET_FEATURES:
            column = columns[name]
            present = self._present(name, column, presence)
            buckets = self._bucketize(self._where(present, tf.cast(column, tf.float32), 0.0), name)
            out[xf(name)] = self._where(present, buckets, tf.constant(features.NUM_BUCKETS, tf.int64))
        return out

    def token_id(self, name: str, token: bytes) -> int:
        """The id preprocessing_fn gives `token`: its vocabulary index, else its out-of-vocabulary bucket."""
        tokens = self.vocabularies[name]
        if token in tokens:
            return tokens.index(token)
        return len(tokens) + int(tf.strings.to_hash_bucket_fast([token], features.OOV_BUCKETS).numpy()[0])

    def _bucketize(self, values, key):
        return tf.cast(tf.raw_ops.Bucketize(input=values, boundaries=[float(b) for b in self.boundaries[key]]), tf.int64)

    def with_static_tables(self) -> "DensePreprocessing":
        """A copy that looks vocabularies up in tables a SavedModel fills once, when it loads (its
        initializer), instead of importing each vocabulary on every call as TF Lite, which keeps no
        initializers, needs. Keep the copy's `tables` on the saved object, so they are saved with it."""
        served = copy.copy(self)
        served.tables = {
            name: tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(tokens, tf.string), tf.range(len(tokens), dtype=tf.int64)),
                default_value=-1)
            for name, tokens in self.vocabularies.items()}
        return served

    def _lookup(self, name, values):
        tokens = self.vocabularies[name]
        if self.tables is not None:
            ids = self.tables[name].lookup(values)
        else:
            table = tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64,
                                           shared_name=f"vocabulary_{name}_{uuid.uuid4().hex}")
            # Inside the function: TF Lite keeps no SavedModel initializer; its import kernel fills the table once.
            with tf.control_dependencies([tf.raw_ops.LookupTableImportV2(
                    table_handle=table, keys=tf.constant(tokens, tf.string),
                    values=tf.range(len(tokens), dtype=tf.int64))]):
                ids = tf.raw_ops.LookupTableFindV2(table_handle=table, keys=values,
                                                   default_value=tf.constant(-1, tf.int64))
        oov = tf.strings.to_hash_bucket_fast(values, features.OOV_BUCKETS) + len(tokens)
        return tf.where(ids < 0, oov, ids)

    # -- reading the constants off a trained Transform --
    @classmethod
    def from_transform(cls, tf_transform_output, serving_spec) -> "DensePreprocessing":
        vocabularies = {name: [bytes(t) for t in tf_transform_output.vocabulary_by_name(name)]
                        for name in features.CATEGORICAL_FEATURES}
        probe = TransformProbe(tf_transform_output, serving_spec)
        xf = features.transformed_name
        scores = {name: probe.z_score(name, xf(name), log=name in features.LOG_NUMERIC_FEATURES)
                  for name in features.LOG_NUMERIC_FEATURES + features.NUMERIC_FEATURES}
        targets = {name + features.BUCKET_SUFFIX: (name, xf(name + features.BUCKET_SUFFIX))
                   for name in features.FINE_BUCKET_FEATURES}
        targets.update({name: (name, xf(name)) for name in features.BUCKET_FEATURES})
        return cls(serving_spec, vocabularies, scores, probe.boundaries(targets))

    def check(self, tf_transform_output, columns: Mapping[str, np.ndarray], atol: float = FLOAT_TOLERANCE) -> Dict[str, float]:
        """Largest difference of each output from TF-Transform's own on `columns`; raises when one is off."""
        probe = TransformProbe(tf_transform_output, self.raw_spec)
        expected = probe.transform({name: columns[name] for name in self.raw_spec})
        got = self({name: tf.constant(np.asarray(values), dtype=dtype_of(self.raw_spec[name]))
                    for name, values in columns.items() if name in self.raw_spec})
        return _compare(got, expected, atol)


    # -- serialized tf.Examples in (the served model's serving_default) --
    @staticmethod
    def inputs() -> Tuple[str, ...]:
        """The raw features the preprocessing reads (the model's inputs come from these alone)."""
        return (features.LOG_NUMERIC_FEATURES + features.NUMERIC_FEATURES + features.CATEGORICAL_FEATURES
                + features.BUCKET_FEATURES)

    def from_examples(self, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Transformed features of a `[batch]` string tensor of tf.Examples, as TF-Transform's layer
        gives them from `parse_example` of the same examples."""
        parsed = tf.io.parse_example(serialized, {name: self.raw_spec[name] for name in self.inputs()})
        columns, presence = {}, {}
        for name, value in parsed.items():
            if isinstance(value, tf.sparse.SparseTensor):
                columns[name], presence[name] = densify(value)
            else:
                columns[name] = tf.reshape(value, [-1])
        return self(columns, presence)

    def check_examples(self, tf_transform_output, serialized: Sequence[bytes], atol: float = FLOAT_TOLERANCE
                       ) -> Dict[str, float]:
        """Largest difference of each output from TF-Transform's own layer on serialized tf.Examples
        (the served model's path, parsing and densifying included); raises PreprocessingMismatch."""
        layer = tf_transform_output.transform_features_layer()
        batch = tf.constant(list(serialized), tf.string)
        expected = layer(tf.io.parse_example(batch, self.raw_spec))
        got = self.from_examples(batch)
        return _compare(got, expected, atol)



def _compare(got: Mapping[str, tf.Tensor], expected: Mapping[str, object], atol: float) -> Dict[str, float]:
    """Largest |got - expected| per output; PreprocessingMismatch when a float output is off by more
    than `atol` or an integer one at all."""
    worst = {}
    for key, value in got.items():
        want = np.asarray(expected[key]).reshape(-1)
        have = np.asarray(value).reshape(-1)
        if have.shape != want.shape:
            raise PreprocessingMismatch(f"the dense preprocessing gives {have.shape[0]} values of {key}, "
                                        f"TF-Transform {want.shape[0]}")
        diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64)))) if len(want) else 0.0
        worst[key] = diff
        limit = atol if have.dtype.kind == "f" else 0.0
        if not diff <= limit:
            raise PreprocessingMismatch(f"the dense preprocessing of {key} differs from TF-Transform's by "
                                        f"{diff} on the eval rows (allowed {limit})")
    return worst
