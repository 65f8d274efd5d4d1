"""TF Lite versions of the exported model, for phones and boards, and how they compare with the SavedModel.

`start_export(model, tf_transform_output, out_dir, raw_eval_pattern, helper=converter_process())`, then
`.finish(saved_model_dir)` once the SavedModel is saved, converts the
`serving_raw` computation (one `[batch]` tensor per raw feature in, the probability out) into the files
below. The preprocessing inside is TF-Transform's, rebuilt from TF Lite builtins on dense columns
(`dense_preprocessing.DensePreprocessing`: 147 ops instead of TF-Transform's sparse-tensor graph of 451,
3 kinds of select TF op instead of 9, a 38% smaller float file and a third of the latency), and checked
against TF-Transform's own outputs on the raw eval rows before anything is written:

- `model_float.tflite`: float32 weights and activations;
- `model_dynamic_int8.tflite`: dynamic-range quantization (weights stored as int8, dequantized or run
  with int8 kernels at inference; no calibration data needed);
- `model_int8.tflite`: integer quantization calibrated on raw eval rows: weights *and* activations of
  the model's own layers in int8. Strict full-integer (int8 only, int8 input/output) is impossible for
  this graph: its inputs are strings and raw numbers, and the preprocessing runs string ops
  (vocabulary lookup, `AsString`, `StringStrip`, hash buckets) that have no integer kernels. Those stay
  float/string (TF ops where TF Lite has no builtin), which `metadata.json` records with the reason.

Ops TF Lite lacks as builtins run as select TF ops (`SELECT_TF_OPS`); TensorFlow's Python interpreter
(`tf.lite.Interpreter`) links the Flex delegate, so the files run here as they would on a device built
with it. `metadata.json` (tflite_support's metadata writer has no release for this TensorFlow) tells a
mobile developer the input names, dtypes, how to mark a missing value, and what the output means.
`evaluation.json` holds accuracy, AUC, size and single-example latency of each model and of the
SavedModel on the same raw eval rows.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Dict, Iterable, Iterator, List, Mapping, Optional

import numpy as np
import tensorflow as tf

from trainer_module import features
from trainer_module.dense_preprocessing import DensePreprocessing, PreprocessingMismatch, densify
from trainer_module.raw_columns import missing_value

SIGNATURE = "serving_raw"
from trainer_module.records import OUTPUT_KEY  # noqa: E402
FLOAT_FILE = "model_float.tflite"
DYNAMIC_FILE = "model_dynamic_int8.tflite"
INT8_FILE = "model_int8.tflite"
METADATA_FILE = "metadata.json"
EVALUATION_FILE = "evaluation.json"
TFLITE_DIR = "tflite"  # <model>/tflite/ beside <model>/Format-Serving/
MODEL_FILES = {"float": FLOAT_FILE, "dynamic_int8": DYNAMIC_FILE, "int8": INT8_FILE}
# Calibration rows for the int8 model. Default data, 2026-12-02 (the model of bench/RESULTS.md 2026-12-02 (d); SavedModel 0.8923): 200 rows
# gave accuracy 0.8901, 1,000 0.8951, all 4,966 0.8905 (each a 0.4-2.2 s conversion).
CALIBRATION_ROWS = 1000
# Raw eval rows the TF Lite models are checked and evaluated on (the first of the eval split): all of the
# default data's 4,966. On a million rows (333k eval rows) evaluating the SavedModel and three TF Lite models
# on every row took 147 s of the Trainer's 203 (bench/scale, 2026-12-03); the accuracy *difference* between
# a TF Lite model and the SavedModel, the figure this evaluation is for, is a paired one and settles long
# before (the Evaluator still scores the SavedModel on every eval row).
EVAL_ROWS = 20_000
LATENCY_RUNS = 200
# A TF Lite model is fit for use when its eval accuracy is this close to the SavedModel's.
ACCURACY_TOLERANCE = 0.005
# The only TF ops left in the models (no TF Lite builtin does them); everything else is builtin.
SELECT_TF_OPS = ("AsString", "StringStrip", "StringToHashBucketFast")
# Raw columns a model never takes (only needed to make the label).
LABEL_ONLY = ("tips",)


class TFLiteExportError(RuntimeError):
    """A TF Lite model could not be converted or run; the message says which and why."""


# ---- raw rows as the serving_raw signature takes them ----------------------------------------------

def raw_input_specs(saved_model_dir: str) -> Dict[str, tf.dtypes.DType]:
    """Input name -> dtype of the SavedModel's serving_raw signature, read off saved_model.pb (loading
    the model for it took ~1 s of the Trainer's TF Lite export)."""
    from tensorflow.python.saved_model import loader_impl

    signature = loader_impl.parse_saved_model(saved_model_dir).meta_graphs[0].signature_def[SIGNATURE]
    return {name: tf.as_dtype(tensor.dtype) for name, tensor in sorted(signature.inputs.items())}


def read_raw_examples(file_pattern: str, dtypes: Mapping[str, tf.dtypes.DType], limit: Optional[int] = None):
    """(columns, labels) from ExampleGen's gzipped tf.Examples: one numpy column per input, missing
    values marked as serving_raw expects; labels made as `preprocessing.make_label` makes them."""
    files = sorted(tf.io.gfile.glob(file_pattern))  # TF's filesystems: local, gs://, s3:// pipeline roots
    if not files:
        raise TFLiteExportError(f"no raw examples match {file_pattern}")
    spec = {name: tf.io.VarLenFeature(dtype) for name, dtype in dtypes.items()}
    for key in features.LABEL_SOURCE_KEYS:
        spec.setdefault(key, tf.io.VarLenFeature(tf.float32))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit:
        dataset = dataset.take(limit)
    columns: Dict[str, List[np.ndarray]] = {name: [] for name in spec}
    for batch in dataset.batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        for name, sparse in parsed.items():
            columns[name].append(densify(sparse)[0].numpy())  # first value, or the missing-value marker
    merged = {name: np.concatenate(parts) for name, parts in columns.items()}
    labels = labels_from_columns(merged)
    return {name: merged[name] for name in dtypes}, labels


def labels_from_columns(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """big_tipper from raw tips and fare columns (NaN tips: no tip recorded, not a big tipper), in
    float32 as `preprocessing.make_label` computes it (float64 decides ~0.4% of rows, tips of exactly
    20%, the other way)."""
    tips = np.asarray(columns["tips"], np.float32)
    fare = np.nan_to_num(np.asarray(columns["fare"], np.float32))
    with np.errstate(invalid="ignore"):
        return ((~np.isnan(tips)) & (tips > np.float32(features.BIG_TIP_FRACTION) * fare)).astype(np.int64)


def rows_to_columns(rows: Iterable[Mapping[str, object]], dtypes: Mapping[str, tf.dtypes.DType]) -> Dict[str, np.ndarray]:
    """CSV/JSON rows (strings or numbers; "" or absent = missing) -> serving_raw's columns."""
    rows = list(rows)
    columns = {}
    for name, dtype in dtypes.items():
        dtype = tf.as_dtype(dtype)
        values = []
        for i, row in enumerate(rows):
            value = row.get(name)
            if value is None or (isinstance(value, str) and value.strip() == ""):
                values.append(missing_value(dtype))
            elif dtype == tf.string:
                values.append(value if isinstance(value, bytes) else str(value).encode("utf-8"))
            else:
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"row {i + 1}, column {name!r}: {value!r} is not a number") from None
                values.append(number if dtype.is_floating else int(number))
        columns[name] = np.array(values, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    return columns


# ---- conversion -----------------------------------------------------------------------------------

def undistributed_copy(model, tf_transform_output):
    """The trained model's weights in a model of the default strategy, for the chief to convert alone.

    Saving variables of MultiWorkerMirroredStrategy runs collective ops that every worker must join
    (run.export saves on every worker for that reason); the TF Lite export runs on the chief only,
    after the other workers may have exited, so it works on a plain copy. Call outside any strategy scope."""
    from trainer_module.model import TaxiModel

    copy = TaxiModel(**model.get_config())
    spec = tf_transform_output.transformed_feature_spec()
    copy({name: tf.zeros([1], f.dtype) for name, f in spec.items() if name != features.LABEL_KEY})
    copy.set_weights(model.get_weights())
    return copy


def lite_function(model, tf_transform_output, preprocessing: Optional[DensePreprocessing] = None):
    """serving_raw for TF Lite: the same inputs and output, the preprocessing in TF Lite's own ops."""
    serving_spec = features.serving_feature_spec(tf_transform_output.raw_feature_spec())
    preprocessing = preprocessing or DensePreprocessing.from_transform(tf_transform_output, serving_spec)
    inputs = [tf.TensorSpec([None], spec.dtype, name=name) for name, spec in serving_spec.items()]
    used = set(DensePreprocessing.inputs())

    @tf.function(input_signature=inputs, autograph=False)
    def serve_raw(*columns):
        by_name = dict(zip(serving_spec, columns))
        return {OUTPUT_KEY: model(preprocessing({k: v for k, v in by_name.items() if k in used}))}

    module = tf.Module()
    # Only the variables: with the Keras model itself attached, saving also traces its own call and
    # train functions, which the converter never reads (the save took 7.25 s instead of 0.69 s here).
    module.model_variables = list(model.variables)
    return module, serve_raw.get_concrete_function()


def save_lite_saved_model(model, tf_transform_output, path: str, preprocessing=None) -> str:
    """A SavedModel holding only the TF Lite flavour of serving_raw (the converter's input)."""
    module, function = lite_function(model, tf_transform_output, preprocessing)
    tf.saved_model.save(module, path, signatures={SIGNATURE: function})
    return path


def _converter(saved_model_dir: str) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return converter


def _representative(columns: Mapping[str, np.ndarray], rows: int):
    """Calibration data for integer quantization: one raw eval row at a time.

    String columns go in as `np.bytes_` arrays: TF Lite's calibrator (tensorflow/lite/python/optimize/
    calibrator.py) silently feeds an object-dtype string array as empty strings, so every string feature
    was calibrated as one out-of-vocabulary value and the int8 model's logit range as if no rider paid
    by card: its probabilities topped out at 0.5 (accuracy 0.7712 against 0.8923 on the default eval
    split, the share of negatives). A four-op model with one vocabulary lookup shows the same.
    """
    count = min(rows, len(next(iter(columns.values()))))
    columns = {name: np.asarray(values, dtype=np.bytes_) if values.dtype == object else values
               for name, values in columns.items()}

    def generate():
        for i in range(count):
            yield {name: values[i:i + 1] for name, values in columns.items()}

    return generate


def convert(lite_saved_model: str, calibration: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, object]:
    """{"float": bytes, "dynamic_int8": bytes, "int8": bytes (with calibration rows), "full_integer": why not}."""
    results: Dict[str, object] = {"float": _converter(lite_saved_model).convert()}
    dynamic = _converter(lite_saved_model)
    dynamic.optimizations = [tf.lite.Optimize.DEFAULT]
    results["dynamic_int8"] = dynamic.convert()
    if calibration is not None:
        integer = _converter(lite_saved_model)
        integer.optimizations = [tf.lite.Optimize.DEFAULT]
        integer.representative_dataset = _representative(calibration, CALIBRATION_ROWS)
        try:
            results["int8"] = integer.convert()
        except Exception as err:  # noqa: BLE001  (recorded; the other two models stand)
            results["int8_error"] = f"{type(err).__name__}: {_first_line(err)}"
        results["full_integer"] = _full_integer(lite_saved_model, calibration)
    return results


def _full_integer(lite_saved_model: str, calibration: Mapping[str, np.ndarray]) -> str:
    """Whether the model converts with TFLITE_BUILTINS_INT8 alone: tried only when no input is a string (an
    int8-only model has no string tensors, so the converter refuses any graph that takes one: 0.8 s a run)."""
    strings = sorted(name for name, values in calibration.items() if np.asarray(values).dtype.kind in "OSU")
    if not strings:
        strict = _converter(lite_saved_model)
        strict.optimizations = [tf.lite.Optimize.DEFAULT]
        strict.representative_dataset = _representative(calibration, 20)
        strict.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            strict.convert()
            return "possible"
        except Exception as err:  # noqa: BLE001
            return f"not possible: the converter refuses TFLITE_BUILTINS_INT8 alone ({_first_line(err)})"
    return (f"not possible: the inputs {', '.join(strings)} are strings, and the preprocessing runs string ops "
            "(vocabulary lookup, AsString, StringStrip, hash buckets) that have no int8 kernels. model_int8.tflite "
            "quantizes what can be (the model's layers, weights and activations) and keeps the rest float")


def _first_line(err: Exception) -> str:
    lines = [l for l in str(err).strip().splitlines() if l.strip()]
    return lines[0] if lines else type(err).__name__


# ---- running -------------------------------------------------------------------------------------

class TFLiteModel:
    """One .tflite file run with TensorFlow's own interpreter, through its serving_raw signature."""

    def __init__(self, path: str, num_threads: int = 1):
        self.path = path
        try:
            self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise TFLiteExportError(f"cannot load {path} as a TF Lite model with a {SIGNATURE!r} signature: "
                                    f"{_first_line(err)}") from None
        self.input_dtypes = {name: detail["dtype"] for name, detail in self.runner.get_input_details().items()}

    def predict(self, columns: Mapping[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Probabilities, shape [rows]."""
        missing = sorted(set(self.input_dtypes) - set(columns))
        if missing:
            raise ValueError(f"the TF Lite model needs inputs {', '.join(missing)}")
        rows = len(next(iter(columns.values())))
        out = []
        for start in range(0, rows, batch_size):
            feed = {}
            for name, dtype in self.input_dtypes.items():
                values = columns[name][start:start + batch_size]
                feed[name] = np.asarray(values, dtype=np.bytes_ if dtype == np.bytes_ else dtype)
            out.append(np.asarray(self.runner(**feed)[OUTPUT_KEY]).reshape(-1))
        return np.concatenate(out) if out else np.zeros([0], np.float32)


def saved_model_predict(saved_model_dir: str, columns: Mapping[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
    """The SavedModel's own serving_raw probabilities, for comparison."""
    fn = tf.saved_model.load(saved_model_dir).signatures[SIGNATURE]
    return _batched(lambda feed: fn(**feed)[OUTPUT_KEY].numpy(), fn, columns, batch_size)


def _batched(call, fn, columns, batch_size):
    _, kwargs = fn.structured_input_signature
    rows = len(next(iter(columns.values())))
    out = []
    for start in range(0, rows, batch_size):
        feed = {name: tf.constant(np.asarray(columns[name][start:start + batch_size]), spec.dtype)
                for name, spec in kwargs.items()}
        out.append(np.asarray(call(feed)).reshape(-1))
    return np.concatenate(out)


def accuracy_and_auc(probabilities: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Accuracy at 0.5, and the exact ROC AUC (ties counted half: scikit-learn's, which TFX requires)."""
    from sklearn.metrics import roc_auc_score

    probabilities = np.asarray(probabilities, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    accuracy = float(np.mean((probabilities > 0.5).astype(np.int64) == labels))
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        return {"accuracy": accuracy, "auc": float("nan")}
    return {"accuracy": accuracy, "auc": float(roc_auc_score(labels, probabilities))}


def single_example_latency_ms(predict_one, columns: Mapping[str, np.ndarray], runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one call on one row (after a warm-up call), cycling through rows."""
    rows = len(next(iter(columns.values())))
    one = lambda i: {name: values[i % rows:i % rows + 1] for name, values in columns.items()}  # noqa: E731
    predict_one(one(0))
    times = []
    for i in range(runs):
        row = one(i)
        started = time.perf_counter()
        predict_one(row)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000.0)


# ---- metadata and evaluation --------------------------------------------------------------------------

def metadata(dtypes: Mapping[str, tf.dtypes.DType], conversion: Mapping[str, object]) -> Dict[str, object]:
    inputs = []
    for name, dtype in dtypes.items():
        dtype = tf.as_dtype(dtype)
        marker = missing_value(dtype)
        inputs.append({
            "name": name, "dtype": dtype.name, "shape": [-1],
            "missing_value": marker.decode() if isinstance(marker, bytes) else ("NaN" if marker != marker else marker),
        })
    return {
        "signature": SIGNATURE,
        "inputs": inputs,
        "input_notes": ("one [batch] tensor per raw feature, as in the CSV; TF-Transform's preprocessing "
                        "(vocabularies, z-scores, quantile buckets) runs inside the model"),
        "outputs": [{"name": OUTPUT_KEY, "dtype": "float32", "shape": [-1, 1],
                     "meaning": (f"probability that {features.LABEL_KEY} = 1: the rider tips more than "
                                 f"{features.BIG_TIP_FRACTION:.0%} of the fare")}],
        "label": {"name": features.LABEL_KEY, "positive": 1,
                  "definition": f"tips > {features.BIG_TIP_FRACTION} * fare", "threshold": 0.5},
        "select_tf_ops": list(SELECT_TF_OPS),
        "runtime": ("a TF Lite interpreter with the Flex delegate for the select TF ops listed (string ops TF Lite "
                    "has no builtin for), e.g. tf.lite.Interpreter; every other op is a TF Lite builtin"),
        "models": {kind: {"file": MODEL_FILES[kind],
                          "quantization": {"float": "none (float32)",
                                           "dynamic_int8": "dynamic range: int8 weights, float activations",
                                           "int8": "int8 weights and activations of the model's layers "
                                                   "(calibrated on raw eval rows); preprocessing in float/string"
                                           }[kind]}
                   for kind in MODEL_FILES if kind in conversion},
        "full_integer": conversion.get("full_integer", "not attempted (no calibration rows)"),
        **({"int8_error": conversion["int8_error"]} if "int8_error" in conversion else {}),
    }


def evaluate_saved_model(saved_model_dir: str, columns: Mapping[str, np.ndarray], labels: np.ndarray,
                         latency_runs: int = LATENCY_RUNS) -> Dict[str, object]:
    """The SavedModel's serving_raw on the raw eval rows: accuracy, AUC, size, latency and its probabilities."""
    loaded = tf.saved_model.load(saved_model_dir)
    fn = loaded.signatures[SIGNATURE]
    probs = _batched(lambda feed: fn(**feed)[OUTPUT_KEY].numpy(), fn, columns, 1024)
    return {**accuracy_and_auc(probs, labels), "bytes": _dir_bytes(saved_model_dir),
            "latency_ms": single_example_latency_ms(
                lambda feed: _batched(lambda f: fn(**f)[OUTPUT_KEY].numpy(), fn, feed, 1), columns, latency_runs),
            "probabilities": probs}


def evaluate_lite(out_dir: str, columns: Mapping[str, np.ndarray], labels: np.ndarray,
                  latency_runs: int = LATENCY_RUNS) -> Dict[str, Dict[str, object]]:
    """Each TF Lite model in `out_dir` on the raw eval rows: accuracy, AUC, sizes, latency and its probabilities."""
    models: Dict[str, Dict[str, object]] = {}
    for kind, filename in MODEL_FILES.items():
        path = os.path.join(out_dir, filename)
        if not os.path.exists(path):
            continue
        model = TFLiteModel(path)
        probs = model.predict(columns)
        models[kind] = {**accuracy_and_auc(probs, labels), "bytes": os.path.getsize(path),
                        "weight_bytes": weight_bytes(path),
                        "latency_ms": single_example_latency_ms(lambda feed: model.predict(feed, 1), columns,
                                                                latency_runs),
                        "probabilities": probs}
    return models


def compare(saved_model: Dict[str, object], lite: Mapping[str, Dict[str, object]], rows: int) -> Dict[str, object]:
    """evaluation.json: the SavedModel and each TF Lite model, each TF Lite model's predictions against the
    SavedModel's (largest difference, agreement at 0.5) and whether its accuracy is within the tolerance."""
    sm_probs = saved_model["probabilities"]
    models: Dict[str, Dict[str, object]] = {"saved_model": {k: v for k, v in saved_model.items() if k != "probabilities"}}
    for kind, entry in lite.items():
        probs = entry["probabilities"]
        models[kind] = {**{k: v for k, v in entry.items() if k != "probabilities"},
                        "max_abs_diff_vs_saved_model": float(np.max(np.abs(probs - sm_probs))),
                        "agreement_vs_saved_model": float(np.mean((probs > 0.5) == (sm_probs > 0.5)))}
        models[kind]["accuracy_within_tolerance"] = bool(
            abs(models[kind]["accuracy"] - saved_model["accuracy"]) <= ACCURACY_TOLERANCE)
    return {"rows": int(rows), "signature": SIGNATURE, "accuracy_tolerance": ACCURACY_TOLERANCE, "models": models}


def weight_bytes(path: str) -> int:
    """Bytes of constant data (weights, vocabularies, boundaries) in a .tflite file; the rest is graph."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        buf = f.read()
    model = schema.Model.GetRootAsModel(buf, 0)
    return int(sum(model.Buffers(i).DataLength() or model.Buffers(i).Size() for i in range(model.BuffersLength())))


def select_tf_ops(path: str) -> List[str]:
    """The select TF ops (Flex custom ops) a .tflite file uses, without the "Flex" prefix."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAsModel(f.read(), 0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    return sorted(c.decode()[len("Flex"):] for c in codes if c and c.startswith(b"Flex"))


def _dir_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)


# ---- the export, its conversion beside the SavedModel's ----------------------------------------------

@contextlib.contextmanager
def converter_process(wanted: bool = True) -> Iterator[Optional[concurrent.futures.Executor]]:
    """Within: a process that imports TensorFlow and TF Lite's converter now, to convert and evaluate the TF Lite
    models later while this process saves the SavedModel (`start_export(..., helper=)`); None if not `wanted`.
    Entered at the Trainer's start, its imports overlap the reading of the data and the training. It ends on
    leaving, and with this process."""
    if not wanted:
        yield None
        return
    helper = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"),  # TensorFlow's threads here: no fork
        initializer=_converter_process_start, initargs=(os.getpid(),))
    helper.submit(int)  # the executor starts its process at the first task
    try:
        yield helper
    finally:
        helper.shutdown(cancel_futures=True)


def _converter_process_start(parent_pid: int) -> None:
    from trainer_module.child_processes import die_with_parent

    die_with_parent(parent_pid)
    importlib.import_module("sklearn.metrics")  # accuracy_and_auc's
    importlib.import_module("tensorflow.lite.python.lite")  # the converter


def convert_and_evaluate(lite_saved_model: str, out_dir: str, columns: Optional[Mapping[str, np.ndarray]],
                         labels: Optional[np.ndarray]) -> Dict[str, object]:
    """Convert the lite SavedModel, write the .tflite files into the local `out_dir`, and evaluate each on the
    raw eval rows (when there are any): {"conversion": what `convert` returns, each model's bytes as True,
    "lite": evaluate_lite's}. Runs in the converter process, or here without one."""
    conversion = convert(lite_saved_model, columns)
    for kind, filename in MODEL_FILES.items():
        if isinstance(conversion.get(kind), bytes):
            with open(os.path.join(out_dir, filename), "wb") as f:
                f.write(conversion[kind])
    return {"conversion": {k: True if isinstance(v, bytes) else v for k, v in conversion.items()},
            "lite": evaluate_lite(out_dir, columns, labels) if columns is not None else None}


@dataclasses.dataclass
class LiteExport:
    """A TF Lite export under way (`start_export`); `finish` ends it."""

    out_dir: str  # the model artifact's tflite/ (any of TF's filesystems)
    local: str  # the files, written here first: the interpreter reads local files
    staging: str  # the lite SavedModel, the converter's input
    dtypes: Dict[str, tf.dtypes.DType]
    columns: Optional[Dict[str, np.ndarray]]
    labels: Optional[np.ndarray]
    preprocessing_check: Optional[float]
    job: Optional[concurrent.futures.Future]  # the conversion in the converter process; None: in `finish`

    def finish(self, saved_model_dir: str) -> Dict[str, object]:
        """Wait for the conversion, evaluate the SavedModel beside the TF Lite models, write metadata.json and
        evaluation.json, and copy everything to `out_dir` (TF's filesystems: an object-store pipeline root too)."""
        try:
            if self.job is None:
                done = convert_and_evaluate(self.staging, self.local, self.columns, self.labels)
            else:
                try:
                    done = self.job.result()
                except concurrent.futures.BrokenExecutor as err:
                    raise TFLiteExportError(f"the TF Lite converter's process ended: {err}") from None
            meta = metadata(self.dtypes, done["conversion"])
            _write_json(os.path.join(self.local, METADATA_FILE), meta)
            result: Dict[str, object] = {"metadata": meta}
            if self.columns is not None:
                evaluation = compare(evaluate_saved_model(saved_model_dir, self.columns, self.labels), done["lite"],
                                     len(self.labels))
                evaluation["full_integer"] = meta["full_integer"]
                evaluation["preprocessing_max_abs_diff_vs_transform"] = self.preprocessing_check
                _write_json(os.path.join(self.local, EVALUATION_FILE), evaluation)
                result["evaluation"] = evaluation
            tf.io.gfile.makedirs(self.out_dir)
            for name in sorted(os.listdir(self.local)):
                tf.io.gfile.copy(os.path.join(self.local, name), os.path.join(self.out_dir, name), overwrite=True)
            return result
        finally:
            self.discard()

    def discard(self) -> None:
        if self.job is not None:
            self.job.cancel()
        for folder in (self.local, self.staging):
            shutil.rmtree(folder, ignore_errors=True)


def start_export(model, tf_transform_output, out_dir: str, raw_eval_pattern: Optional[str] = None,
                 eval_limit: Optional[int] = EVAL_ROWS, preprocessing: Optional[DensePreprocessing] = None,
                 helper: Optional[concurrent.futures.Executor] = None) -> LiteExport:
    """Start writing the TF Lite models and metadata.json into `out_dir`; with raw eval rows, also the int8
    model (calibrated on them) and evaluation.json (each TF Lite model beside the SavedModel).

    Here: the raw eval rows read, the lite preprocessing checked against TF-Transform's on them (a mismatch
    is refused before anything is written), the lite SavedModel saved. With a `helper` (converter_process)
    the conversions and the TF Lite models' evaluation start there, while this process goes on (the Trainer:
    saving the SavedModel). `finish(saved_model_dir)` waits for them and writes the files.

    On the default data (`taxi-pipeline run`, 2026-12-07) the conversions and their evaluation took 2.8 s
    after the SavedModel was saved in 2.9 s."""
    serving_spec = features.serving_feature_spec(tf_transform_output.raw_feature_spec())
    dtypes = {name: spec.dtype for name, spec in sorted(serving_spec.items())}  # serving_raw's inputs
    columns = labels = None
    if raw_eval_pattern:
        columns, labels = read_raw_examples(raw_eval_pattern, dtypes, eval_limit)
    # The Trainer hands over the preprocessing it built for serving_default (probing the Transform once).
    preprocessing = preprocessing or DensePreprocessing.from_transform(tf_transform_output, serving_spec)
    # Refuse a TF Lite model whose preprocessing is not TF-Transform's (checked on the raw eval rows).
    try:
        preprocessing_check = preprocessing.check(tf_transform_output, columns) if columns is not None else None
    except PreprocessingMismatch as err:
        raise TFLiteExportError(f"the TF Lite model is not written: {err}") from None
    export = LiteExport(out_dir, tempfile.mkdtemp(prefix="tflite-"), tempfile.mkdtemp(prefix="tflite-src-"), dtypes,
                        columns, labels, preprocessing_check, None)
    try:
        save_lite_saved_model(model, tf_transform_output, export.staging, preprocessing)
        if helper is not None:
            export.job = helper.submit(convert_and_evaluate, export.staging, export.local, columns, labels)
    except BaseException:
        export.discard()
        raise
    return export


def _write_json(path: str, payload) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=float)


def load_evaluation(model_dir: str) -> Optional[Dict[str, object]]:
    """evaluation.json of a Trainer model artifact (`<model>/tflite/`), None when absent."""
    path = os.path.join(model_dir, TFLITE_DIR, EVALUATION_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
