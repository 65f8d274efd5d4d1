"""The model the pipeline pushed: its signatures, and that both serving paths agree on real rows."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(scope="module")
def pushed(taxi_serving_base):
    version_dir = sorted((taxi_serving_base / "taxi").iterdir())[-1]
    return tf.saved_model.load(str(version_dir))


@pytest.fixture(scope="module")
def rows(taxi_sample_dir):
    with open(taxi_sample_dir / "data.csv", newline="") as f:
        return [r for _, r in zip(range(64), csv.DictReader(f))]


def _example(row, spec):
    feature = {}
    for name, value in row.items():
        if name not in spec or value == "":
            continue  # CSV's empty field: the feature is missing
        dtype = spec[name].dtype
        if dtype == tf.string:
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif dtype == tf.int64:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(value))]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_signatures(pushed):
    assert {"serving_default", "serving_raw", "transform_features"} <= set(pushed.signatures)
    default = pushed.signatures["serving_default"]
    (spec,) = default.structured_input_signature[1].values()
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    assert list(default.structured_outputs) == ["probabilities"]
    raw_inputs = pushed.signatures["serving_raw"].structured_input_signature[1]
    assert "tips" not in raw_inputs and {"fare", "payment_type", "company", "trip_start_hour"} <= set(raw_inputs)
    assert "big_tipper" in pushed.signatures["transform_features"].structured_outputs


def test_serialized_examples_and_raw_columns_give_the_same_predictions(pushed, rows):
    raw_sig = pushed.signatures["serving_raw"]
    spec = raw_sig.structured_input_signature[1]
    examples = tf.constant([_example(r, spec) for r in rows])
    from_examples = pushed.signatures["serving_default"](examples=examples)["probabilities"].numpy()

    columns = {}
    for name, s in spec.items():
        missing = {tf.string: "", tf.int64: -1}.get(s.dtype, float("nan"))
        values = [r[name] if r[name] != "" else missing for r in rows]
        if s.dtype == tf.string:
            columns[name] = tf.constant([str(v) for v in values])
        elif s.dtype == tf.int64:
            columns[name] = tf.constant([int(float(v)) for v in values], tf.int64)
        else:
            columns[name] = tf.constant([float(v) for v in values], tf.float32)
    from_columns = raw_sig(**columns)["probabilities"].numpy()
    assert from_examples.shape == (64, 1)
    np.testing.assert_allclose(from_examples, from_columns, atol=1e-6)
    assert 0.05 < from_examples.mean() < 0.6 and from_examples.std() > 0.05  # not a constant


def test_credit_card_riders_score_higher(pushed, rows):
    """The strongest signal in the data must show: card payers are the ones whose tips are recorded."""
    spec = pushed.signatures["serving_raw"].structured_input_signature[1]
    examples = tf.constant([_example(r, spec) for r in rows])
    p = pushed.signatures["serving_default"](examples=examples)["probabilities"].numpy()[:, 0]
    card = np.array([r["payment_type"] == "Credit Card" for r in rows])
    assert card.any() and (~card).any()
    assert p[card].mean() > p[~card].mean() + 0.3
