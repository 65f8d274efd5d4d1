"""TF Lite: the Trainer writes float and quantized models beside the SavedModel, and they agree with it.

Tolerances (stated once, checked on real raw rows of the sample through the raw-feature signature):
- float TF Lite vs the SavedModel's serving_raw: |p_tflite - p_savedmodel| <= 1e-4 for every row
  (same float32 arithmetic; the fine buckets are taken on raw values so boundary values compare alike);
- dynamic-range int8: |diff| <= 0.03 for every row and the same class (p > 0.5) for >= 99% of rows;
- eval accuracy of the dynamic-range model within 0.005 of the SavedModel's (recorded by the Trainer).
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


FLOAT_TOLERANCE = 1e-4
QUANTIZED_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def model_dir(taxi_pipeline_result) -> Path:
    _, result = taxi_pipeline_result
    return Path(result.nodes["Trainer"].output_uri("model"))


@pytest.fixture(scope="module")
def raw_rows(taxi_sample_dir):
    with open(taxi_sample_dir / "data.csv", newline="") as f:
        return list(csv.DictReader(f))[:300]


def test_trainer_writes_float_and_quantized_models_with_metadata(model_dir):
    from trainer_module import tflite_export

    folder = model_dir / "tflite"
    for name in (tflite_export.FLOAT_FILE, tflite_export.DYNAMIC_FILE, tflite_export.METADATA_FILE):
        assert (folder / name).stat().st_size > 0, name
    meta = json.loads((folder / tflite_export.METADATA_FILE).read_text())
    served = tflite_export.raw_input_specs(str(model_dir / "Format-Serving"))
    assert [(i["name"], i["dtype"]) for i in meta["inputs"]] == [(n, d.name) for n, d in served.items()]
    assert {i["name"]: i["missing_value"] for i in meta["inputs"]}["payment_type"] == ""
    assert "big_tipper" in meta["outputs"][0]["meaning"] and meta["label"]["definition"] == "tips > 0.2 * fare"
    assert meta["full_integer"].startswith("not possible")
    # The interpreter sees the same raw-feature signature as the SavedModel's serving_raw.
    model = tflite_export.TFLiteModel(str(folder / tflite_export.FLOAT_FILE))
    assert sorted(model.input_dtypes) == sorted(served)


def test_tflite_predictions_agree_with_the_saved_model_on_raw_rows(model_dir, raw_rows):
    from trainer_module import tflite_export

    saved_model = str(model_dir / "Format-Serving")
    columns = tflite_export.rows_to_columns(raw_rows, tflite_export.raw_input_specs(saved_model))
    expected = tflite_export.saved_model_predict(saved_model, columns)
    assert 0.05 < expected.mean() < 0.6 and expected.std() > 0.1  # real, varied predictions
    floats = tflite_export.TFLiteModel(str(model_dir / "tflite" / tflite_export.FLOAT_FILE)).predict(columns)
    np.testing.assert_allclose(floats, expected, atol=FLOAT_TOLERANCE, rtol=0)
    quantized = tflite_export.TFLiteModel(str(model_dir / "tflite" / tflite_export.DYNAMIC_FILE)).predict(columns)
    assert np.max(np.abs(quantized - expected)) <= QUANTIZED_TOLERANCE
    assert np.mean((quantized > 0.5) == (expected > 0.5)) >= 0.99


def test_the_trainer_records_the_comparison_on_the_eval_split(taxi_pipeline_result, model_dir):
    _, view = taxi_pipeline_result
    from trainer_module import tflite_export

    evaluation = tflite_export.load_evaluation(str(model_dir))
    models = evaluation["models"]
    assert evaluation["rows"] == view.rows["eval"]
    # The SavedModel row is computed on the same raw eval rows the Evaluator scored: same accuracy.
    tfma = view.overall
    # The view reads the same comparison back for the summary, status and the report.
    assert view.tflite is not None and view.tflite.model("dynamic_int8").bytes == models["dynamic_int8"]["bytes"]
    assert models["saved_model"]["accuracy"] == pytest.approx(tfma["binary_accuracy"], abs=1e-6)
    assert models["saved_model"]["auc"] == pytest.approx(tfma["auc"], abs=2e-3)
    assert models["float"]["accuracy"] == pytest.approx(models["saved_model"]["accuracy"], abs=1e-9)
    assert abs(models["dynamic_int8"]["accuracy"] - models["saved_model"]["accuracy"]) <= 0.005
    # int8 activations, calibrated on raw eval rows (0.7712 against 0.8923 while the calibration fed the
    # string features as empty strings: see test_int8_calibration_sees_the_string_inputs).
    assert abs(models["int8"]["accuracy"] - models["saved_model"]["accuracy"]) <= 0.01
    # Quantization stores the weights in a quarter of the bytes; vocabularies, boundaries, tensors under
    # 1,024 values and the graph around them stay as they are. The model's weights outweigh those, so
    # the whole file is at most a third of the float one (issue 11; 0.31x on the default data).
    assert models["dynamic_int8"]["weight_bytes"] <= 0.3 * models["float"]["weight_bytes"]
    assert models["dynamic_int8"]["bytes"] <= models["float"]["bytes"] / 3
    # The preprocessing inside is TF-Transform's: the export compared every output on these rows.
    checked = evaluation["preprocessing_max_abs_diff_vs_transform"]
    assert set(checked) >= {"fare_xf", "fare_bucket_xf", "company_xf", "pickup_latitude_xf"}
    assert max(checked.values()) <= 1e-5
    for kind in ("saved_model", "float", "dynamic_int8"):
        assert models[kind]["latency_ms"] > 0


def test_int8_calibration_sees_the_string_inputs(tmp_path):
    """The calibration rows reach TF Lite's calibrator with their strings (tflite_export._representative).

    A vocabulary lookup into an embedding of -5 / +5 / 0 ("a", "b", anything else), converted with int8
    activations from calibration rows built as the Trainer builds them (object-dtype string columns, as
    read from tf.Examples): fed as object arrays, the calibrator saw only empty strings, recorded the
    embedding's range as [0, 0], and the int8 model answered ~0 for every string.
    """
    import tensorflow as tf

    from trainer_module import tflite_export

    keys = tf.constant([b"a", b"b"])

    class Lookup(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, tf.constant([0, 1], tf.int64)), default_value=2)
            self.embedding = tf.Variable([[-5.0], [5.0], [0.0]])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s"),
                                      tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, s, x):
            return {tflite_export.OUTPUT_KEY: tf.reshape(tf.gather(self.embedding, self.table.lookup(s))[:, 0] + 0.1 * x,
                                                         [-1, 1])}

    module = Lookup()
    tf.saved_model.save(module, str(tmp_path), signatures={tflite_export.SIGNATURE: module.serve})
    rows = 60
    columns = {"s": np.array([b"a", b"b", b"c"] * (rows // 3), dtype=object), "x": np.ones(rows, np.float32)}
    converter = tflite_export._converter(str(tmp_path))  # pylint: disable=protected-access
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tflite_export._representative(columns, rows)  # pylint: disable=protected-access
    path = tmp_path / "int8.tflite"
    path.write_bytes(converter.convert())
    answers = tflite_export.TFLiteModel(str(path)).predict({"s": columns["s"][:3], "x": columns["x"][:3]})
    np.testing.assert_allclose(answers, [-4.9, 5.1, 0.1], atol=0.1)


def test_a_model_taking_strings_is_never_full_integer_which_the_converter_confirms(tmp_path):
    """tflite_export._full_integer does not try the int8-only conversion of a model with a string input; here
    the converter itself refuses one (a string hashed to a bucket, the Transform's kind of string op)."""
    import tensorflow as tf

    from trainer_module import tflite_export

    class Hashing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s"),
                                      tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, s, x):
            bucket = tf.cast(tf.strings.to_hash_bucket_fast(s, 3), tf.float32)
            return {tflite_export.OUTPUT_KEY: tf.reshape(bucket + x, [-1, 1])}

    module = Hashing()
    tf.saved_model.save(module, str(tmp_path), signatures={tflite_export.SIGNATURE: module.serve})
    columns = {"s": np.array([b"a", b"b", b"c"] * 10, dtype=object), "x": np.ones(30, np.float32)}
    strict = tflite_export._converter(str(tmp_path))  # pylint: disable=protected-access
    strict.optimizations = [tf.lite.Optimize.DEFAULT]
    strict.representative_dataset = tflite_export._representative(columns, 20)  # pylint: disable=protected-access
    strict.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with pytest.raises(Exception):
        strict.convert()
    verdict = tflite_export._full_integer(str(tmp_path), columns)  # pylint: disable=protected-access
    assert verdict.startswith("not possible: the inputs s are strings"), verdict


def test_only_string_ops_without_a_builtin_are_select_tf_ops(model_dir):
    from trainer_module import tflite_export

    for name in (tflite_export.FLOAT_FILE, tflite_export.DYNAMIC_FILE):
        used = tflite_export.select_tf_ops(str(model_dir / "tflite" / name))
        assert used and set(used) <= set(tflite_export.SELECT_TF_OPS), used


def test_the_lite_preprocessing_is_refused_when_it_is_not_transforms(taxi_pipeline_result, model_dir, raw_rows):
    """The check the export runs can fail: one bucket boundary moved to a real fare makes fare_bucket_xf differ."""
    import tensorflow_transform as tft

    from trainer_module import dense_preprocessing, features, tflite_export

    config, view = taxi_pipeline_result
    output = tft.TFTransformOutput(view.nodes["Transform"].output_uri("transform_graph"))
    spec = features.serving_feature_spec(output.raw_feature_spec())
    columns = tflite_export.rows_to_columns(raw_rows, tflite_export.raw_input_specs(str(model_dir / "Format-Serving")))
    lite = dense_preprocessing.DensePreprocessing.from_transform(output, spec)
    assert max(lite.check(output, columns).values()) <= 1e-5
    fares = [float(r["fare"]) for r in raw_rows if r["fare"]]
    boundaries = list(lite.boundaries["fare_bucket"])
    # A boundary with a real fare between it and the next one: moved onto the next, that fare changes bucket.
    i = next(i for i in range(len(boundaries) - 1) if any(boundaries[i] <= f < boundaries[i + 1] for f in fares))
    boundaries[i] = boundaries[i + 1]
    lite.boundaries["fare_bucket"] = boundaries
    with pytest.raises(dense_preprocessing.PreprocessingMismatch, match="fare_bucket_xf"):
        lite.check(output, columns)


def test_predict_cli_runs_the_tflite_model_locally(model_dir, raw_rows, tmp_path):
    from trainer_module import tflite_export

    rows_file = tmp_path / "rows.csv"
    with open(rows_file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(raw_rows[0]))
        writer.writeheader()
        writer.writerows(raw_rows[:4])
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", "--tflite", str(model_dir / "tflite"),
                           str(rows_file)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert tflite_export.DYNAMIC_FILE in lines[0] and lines[1].split() == ["row", "label", "probabilities"]
    expected = tflite_export.TFLiteModel(str(model_dir / "tflite" / tflite_export.DYNAMIC_FILE)).predict(
        tflite_export.rows_to_columns(raw_rows[:4], tflite_export.raw_input_specs(str(model_dir / "Format-Serving"))))
    assert [float(l.split()[-1]) for l in lines[2:]] == pytest.approx(expected.tolist(), abs=6e-5)
    missing = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", "--tflite", str(tmp_path / "nope"),
                              str(rows_file)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_a_converter_process_that_dies_fails_the_export_clearly_and_leaves_nothing(tmp_path):
    """The conversion runs in tflite_export.converter_process; if that process ends, the Trainer fails with a
    TFLiteExportError saying so, and neither the model's tflite/ folder nor the local folders are left."""
    import os

    from trainer_module import tflite_export

    local, staging, out = tmp_path / "local", tmp_path / "staging", tmp_path / "tflite"
    local.mkdir()
    staging.mkdir()
    with tflite_export.converter_process() as helper:
        job = helper.submit(os._exit, 7)
        export = tflite_export.LiteExport(str(out), str(local), str(staging), {}, None, None, None, job)
        with pytest.raises(tflite_export.TFLiteExportError, match="converter's process ended"):
            export.finish(str(tmp_path / "saved_model"))
    assert not local.exists() and not staging.exists() and not out.exists()
