"""`preprocessing_fn` on a handful of rows through real TensorFlow Transform (analyze + transform on Beam)."""
from __future__ import annotations

import math

import pytest

import trainer_module  # noqa: F401  (TF_USE_LEGACY_KERAS first)

ROWS = [
    # fare, tips, payment_type, company, trip_start_hour, trip_miles, trip_seconds, pickup_latitude
    dict(fare=10.0, tips=3.0, payment_type="Credit Card", company="Flash Cab", trip_start_hour=9, trip_miles=2.0, trip_seconds=600, pickup_latitude=41.9),
    dict(fare=20.0, tips=0.0, payment_type="Cash", company=None, trip_start_hour=17, trip_miles=5.0, trip_seconds=None, pickup_latitude=None),
    dict(fare=8.0, tips=2.0, payment_type="Credit Card", company="Flash Cab", trip_start_hour=9, trip_miles=1.0, trip_seconds=300, pickup_latitude=41.8),
    dict(fare=30.0, tips=6.5, payment_type="Credit Card", company="Taxi Affiliation Services", trip_start_hour=23, trip_miles=9.0, trip_seconds=1800, pickup_latitude=42.0),
]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from trainer_module.features import SCHEMA_PATH
    from trainer_module.preprocessing import FORCE_TF_COMPAT_V1, preprocessing_fn

    schema = text_format.Parse(SCHEMA_PATH.read_text(), schema_pb2.Schema())
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    instances = []
    for row in ROWS:
        instance = {}
        for name, feature in spec.items():
            value = row.get(name, _default(feature.dtype))
            if hasattr(feature, "shape"):  # FixedLenFeature ([1])
                instance[name] = [value]
            else:  # VarLenFeature: an empty list is a missing value, as CsvExampleGen writes it
                instance[name] = [] if value is None else [value]
        instances.append(instance)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft")), force_tf_compat_v1=FORCE_TF_COMPAT_V1):
        (result, _), transform_fn = (instances, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=False
        )
    return result, transform_fn


def _default(dtype):
    import tensorflow as tf

    return {tf.string: b"x", tf.int64: 1, tf.float32: 1.0}[dtype]


def test_label_is_tip_over_twenty_percent(transformed):
    rows, _ = transformed
    assert [r["big_tipper"] for r in rows] == [1, 0, 1, 1]


def test_numbers_are_log_scaled_then_z_scored(transformed):
    rows, _ = transformed
    fares = [r["fare_xf"] for r in rows]
    assert abs(sum(fares) / len(fares)) < 1e-5  # mean 0 over the analysed rows
    logs = [math.log1p(r["fare"]) for r in ROWS]
    mean = sum(logs) / len(logs)
    std = (sum((x - mean) ** 2 for x in logs) / len(logs)) ** 0.5
    assert fares[0] == pytest.approx((logs[0] - mean) / std, rel=1e-4)


def test_missing_number_is_imputed_and_flagged(transformed):
    rows, _ = transformed
    assert [r["trip_seconds_missing_xf"] for r in rows] == [0.0, 1.0, 0.0, 0.0]
    # Imputed with the mean of the present (log) values, so the overall mean is unchanged and the
    # imputed row's z-score is exactly 0, while present rows are not.
    assert rows[1]["trip_seconds_xf"] == pytest.approx(0.0, abs=1e-5)
    assert all(abs(r["trip_seconds_xf"]) > 0.1 for i, r in enumerate(rows) if i != 1)


def test_categories_share_indices_and_missing_is_its_own_token(transformed):
    rows, _ = transformed
    companies = [r["company_xf"] for r in rows]
    assert companies[0] == companies[2]  # same company, same index
    assert len(set(companies)) == 3  # Flash Cab, <missing>, Taxi Affiliation Services
    assert rows[0]["trip_start_hour_xf"] == rows[2]["trip_start_hour_xf"] != rows[1]["trip_start_hour_xf"]


def test_missing_coordinate_gets_its_own_bucket(transformed):
    from trainer_module import features

    rows, _ = transformed
    buckets = [r["pickup_latitude_xf"] for r in rows]
    assert buckets[1] == features.NUM_BUCKETS
    assert all(0 <= b < features.NUM_BUCKETS for i, b in enumerate(buckets) if i != 1)


def test_label_source_and_serving_agree():
    """The pure-Python label used by clients matches the TFT label's rule."""
    from trainer_module.features import label_from_row

    assert [label_from_row({"fare": str(r["fare"]), "tips": str(r["tips"])}) for r in ROWS] == [1, 0, 1, 1]
    assert label_from_row({"fare": "10"}) is None
