"""The model the pipeline pushed: its signatures, and that both serving paths agree on real rows."""
from __future__ import annotations

import csv
from pathlib import Path

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
    assert {"serving_default", "serving_tf_transform", "serving_raw", "transform_features"} <= set(pushed.signatures)
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


# -- serving_default runs the dense preprocessing: TF-Transform's outputs, fewer ops ----------------------

def _feature(values):
    if not values:
        return tf.train.Feature()  # the key with an empty list: how CsvExampleGen writes a missing value
    if isinstance(values[0], bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if isinstance(values[0], int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _edited(row_example: bytes, **features) -> bytes:
    """A real row's tf.Example with some features replaced (None: the key removed)."""
    example = tf.train.Example.FromString(row_example)
    for name, values in features.items():
        if values is None:
            if name in example.features.feature:
                del example.features.feature[name]
        else:
            example.features.feature[name].CopyFrom(_feature(values))
    return example.SerializeToString()


def test_the_pushed_model_serves_the_dense_preprocessing_checked_on_the_eval_rows(taxi_pipeline_result):
    import json

    from trainer_module import records

    _, view = taxi_pipeline_result
    record = json.loads((Path(view.nodes["Trainer"].output_uri("model_run")) / records.SERVING_GRAPH_FILE).read_text())
    assert record["serving_default"] == "dense_preprocessing"
    assert record["rows_checked"] == view.rows["eval"]  # every raw eval row of the run
    assert max(record["max_abs_diff"].values()) <= 1e-5 and "company_xf" in record["max_abs_diff"]
    # The run's summary says so.
    from pipeline import summary

    config, _ = taxi_pipeline_result
    assert (f"serving_default runs: dense preprocessing (TF-Transform's outputs on {view.rows['eval']:,} eval rows"
            in summary.render(config, view))


def test_serving_default_answers_as_tf_transforms_graph_on_real_rows_and_odd_values(pushed, rows):
    """Every way a value can be missing or odd, on a real row: the dense path must give the
    probabilities TF-Transform's own graph (serving_tf_transform) gives."""
    spec = pushed.signatures["serving_raw"].structured_input_signature[1]
    real = [_example(r, spec) for r in rows]
    base = real[0]
    odd = [
        _edited(base, company=[]),  # an empty list: missing
        _edited(base, company=None, trip_seconds=None, pickup_latitude=None),  # the key absent: missing
        _edited(base, company=[b""]),  # a present empty string is a value, not a missing one
        _edited(base, company=[b"  Taxi Affiliation Services  "]),  # stripped as preprocessing_fn strips
        _edited(base, company=[b"a company never seen"]),  # out of vocabulary: a hash bucket
        _edited(base, company=[b"Taxi Affiliation Services", b"Flash Cab"]),  # two values: the first counts
        _edited(base, pickup_community_area=[-1]),  # a present -1 is a value (the raw columns' missing mark)
        _edited(base, dropoff_community_area=[8, 32]),
        _edited(base, pickup_latitude=[float("nan")]),  # a present NaN
        _edited(base, trip_seconds=[0], trip_miles=[-3.0]),  # at and below the log1p clip
        _edited(base, fare=[1e9], pickup_longitude=[1e9]),  # beyond every bucket
    ]
    examples = tf.constant(real + odd)
    dense = pushed.signatures["serving_default"](examples=examples)["probabilities"].numpy()
    reference = pushed.signatures["serving_tf_transform"](examples=examples)["probabilities"].numpy()
    np.testing.assert_allclose(dense, reference, atol=1e-6, equal_nan=True)
    # The odd rows are not all the base row's answer: the edits reach the model.
    assert len({round(float(p), 5) for p in dense[len(real):, 0]}) > 3


def test_a_required_feature_with_no_value_fails_both_graphs_alike(pushed, rows):
    spec = pushed.signatures["serving_raw"].structured_input_signature[1]
    bad = tf.constant([_edited(_example(rows[0], spec), fare=[])])  # fare is required (FixedLen)
    for name in ("serving_default", "serving_tf_transform"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="fare"):
            pushed.signatures[name](examples=bad)


def test_serving_default_falls_back_to_tf_transforms_graph_when_the_check_fails(taxi_pipeline_result, monkeypatch):
    """The export's check can fail: with one fare bucket boundary moved onto the next, the eval rows
    between them change bucket, and serving_default must keep TF-Transform's own graph."""
    import tensorflow_transform as tft

    from trainer_module import export
    from trainer_module.dense_preprocessing import DensePreprocessing

    _, view = taxi_pipeline_result
    output = tft.TFTransformOutput(view.nodes["Transform"].output_uri("transform_graph"))
    raw_eval = str(Path(view.nodes["CsvExampleGen"].output_uri("examples")) / "Split-eval" / "*")

    dense, record = export.serving_preprocessing(output, raw_eval, limit=500)
    assert dense is not None and record["serving_default"] == "dense_preprocessing" and record["rows_checked"] == 500

    original = DensePreprocessing.from_transform.__func__

    def with_a_moved_boundary(cls, *args):
        made = original(cls, *args)
        boundaries = list(made.boundaries["fare_bucket"])
        middle = len(boundaries) // 2
        boundaries[middle] = boundaries[middle + 1]
        made.boundaries["fare_bucket"] = boundaries
        return made

    monkeypatch.setattr(DensePreprocessing, "from_transform", classmethod(with_a_moved_boundary))
    dense, record = export.serving_preprocessing(output, raw_eval, limit=500)
    assert dense is None and record["serving_default"] == "tf_transform" and "fare_bucket_xf" in record["why"]
    dense, record = export.serving_preprocessing(output, None)
    assert dense is None and "no raw eval examples" in record["why"]

    def unbuildable(cls, *args):
        raise KeyError("fare_xf")  # e.g. a preprocessing_fn edited for other data

    monkeypatch.setattr(DensePreprocessing, "from_transform", classmethod(unbuildable))
    dense, record = export.serving_preprocessing(output, raw_eval, limit=500)
    assert dense is None and record["why"] == "the dense preprocessing could not be built: KeyError: 'fare_xf'"
