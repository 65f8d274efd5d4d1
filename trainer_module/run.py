"""`run_fn`: the TFX Trainer's entry point (one call per worker process).

The same function trains in one process or as one of N workers: the strategy comes from `TF_CONFIG`
(`MultiWorkerMirroredStrategy` when it names several workers), the data is sharded per worker, the
global batch is the per-replica batch times the replicas in sync, and every worker saves (saving runs
collective ops), the chief to the serving model directory and the others to a temporary directory.
"""
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from trainer_module import features, tflite_export, warm_start
from trainer_module.dense_preprocessing import DensePreprocessing, PreprocessingMismatch, as_parsed
from trainer_module.model import TaxiModel, cardinalities_from, compile_model
from trainer_module.settings import TRAINING_LOOPS, TrainingSettings, with_hyperparameters  # noqa: F401

OUTPUT_KEY = "probabilities"
# serving_default through TF-Transform's own layer (serving_default itself runs the dense preprocessing).
TF_TRANSFORM_SIGNATURE = "serving_tf_transform"
# Raw eval examples the dense preprocessing is checked on before serving_default runs it (all of the
# default data's 4,966; the check takes ~0.1 s per 1,000).
CHECK_ROWS = 10_000
SERVING_GRAPH_FILE = "serving_graph.json"  # in the model run: what serving_default runs, and why


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names more than one worker, else the default strategy."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(cluster.get(role, [])) for role in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def task_of(strategy) -> Dict[str, object]:
    """Which worker this process is, and whether it is the one that writes the real outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) or "worker"
    task_index = int(getattr(resolver, "task_id", None) or 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_index == 0 and not _has_chief(resolver))
    return {"task_type": task_type, "task_index": task_index, "is_chief": is_chief}


def _has_chief(resolver) -> bool:
    if resolver is None:
        return False
    return bool(resolver.cluster_spec().as_dict().get("chief"))


def input_fn(file_pattern, data_accessor, tf_transform_output, batch_size: int, seed=None, shuffle=True) -> tf.data.Dataset:
    """Batches of (transformed features, label), repeated, sharded by element across workers.

    Evaluation data is not shuffled: validation restarts its iterator every epoch, and refilling a
    10,000-example shuffle buffer each time cost more than the training steps themselves.
    """
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=features.LABEL_KEY, shuffle=shuffle, shuffle_seed=seed
        ),
        tf_transform_output.transformed_metadata.schema,
    )
    return _sharded(dataset)


def _sharded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# A training split read more than once is parsed once and held in memory, up to this size. Parsing the
# transformed tf.Examples (~46k rows/s alone) competes with the training steps for the same two cores:
# model.fit of 500 steps of 256 on the default data's 10,036 rows (12.75 passes), same process, same
# model, three alternated pairs: 10.3 / 12.3 / 9.6 s streamed, 6.8 / 7.2 / 6.8 s from memory (CPU 12.4 -> 8.3 s).
IN_MEMORY_MAX_BYTES = 1 << 30
_READ_BATCH = 4096


def reads_per_row(train_rows: Optional[int], steps: int, global_batch: int) -> float:
    """How many times training reads each row of the split (0 when the rows are unknown)."""
    return steps * global_batch / train_rows if train_rows else 0.0


def in_memory_input_fn(file_pattern, data_accessor, tf_transform_output, batch_size: int, seed=None,
                       max_bytes: int = IN_MEMORY_MAX_BYTES) -> Optional[tf.data.Dataset]:
    """As `input_fn` (shuffled, repeated batches), from the split parsed once into memory.

    Each pass over the rows is a fresh permutation of row indices (seeded: every worker draws the same,
    so DATA sharding still hands each worker different batches), and a batch is a gather from the columns.
    None when the split holds more than `max_bytes` or a feature is not dense: stream it (`input_fn`).
    """
    once = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH, label_key=features.LABEL_KEY, shuffle=False,
                                       num_epochs=1),
        tf_transform_output.transformed_metadata.schema,
    )
    parts: Dict[str, list] = {}
    labels, size = [], 0
    for batch, label in once:
        for name, value in batch.items():
            if not isinstance(value, tf.Tensor):  # sparse or ragged: no plain gather along the rows
                return None
            parts.setdefault(name, []).append(value.numpy())
            size += parts[name][-1].nbytes
        labels.append(label.numpy())
        if size > max_bytes:
            logging.info("training split over %d bytes: streamed, not held in memory", max_bytes)
            return None
    if not labels:
        return None
    # Column by column, each batch list dropped once joined: at its peak the split is held about once,
    # not twice (batches and columns).
    columns = {}
    for name in list(parts):
        columns[name] = tf.constant(np.concatenate(parts.pop(name)))
    label = tf.constant(np.concatenate(labels))
    rows = int(label.shape[0])

    def gather(indices):
        return {name: tf.gather(column, indices) for name, column in columns.items()}, tf.gather(label, indices)

    order = tf.data.Dataset.range(rows).shuffle(rows, seed=seed, reshuffle_each_iteration=True).repeat()
    batches = order.batch(batch_size, drop_remainder=True)  # an endless stream: no row is dropped
    return _sharded(batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def training_input(fn_args, tf_transform_output, settings: TrainingSettings, global_batch: int) -> tf.data.Dataset:
    """The training batches: from memory when the split is read more than once and fits, else streamed."""
    seed = int(settings.seed)
    if reads_per_row(settings.train_rows, fn_args.train_steps, global_batch) > 1:
        dataset = in_memory_input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, global_batch,
                                     seed)
        if dataset is not None:
            logging.info("training split held in memory (%s rows)", settings.train_rows)
            return dataset
    return input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, global_batch, seed)


def validation_input(fn_args, tf_transform_output, global_batch: int) -> tf.data.Dataset:
    """The first `eval_steps` batches of the eval split, parsed once and replayed at every validation.

    Validation always read just these (Keras restarts the validation iterator every epoch); the custom
    loop now validates on the same batches each time too, so its curve points compare alike.
    """
    dataset = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, global_batch, shuffle=False)
    if not fn_args.eval_steps:  # no count given: nothing bounds what would be cached
        return dataset
    return dataset.take(fn_args.eval_steps).cache().repeat()


def curve_points(steps: int):
    """(points, steps per point): training is cut into a few validated stretches to give curves.

    Whole steps per stretch, so `points * steps per point` (what is trained) can be a few steps under `steps`.
    """
    points = max(1, min(10, steps // 50))
    return points, steps // points


def train_with_fit(model, train_ds, eval_ds, steps: int, eval_steps: int) -> Dict[str, list]:
    epochs, per_epoch = curve_points(steps)  # a few "epochs" give training curves; the total stays ~`steps`
    history = model.fit(
        train_ds,
        steps_per_epoch=per_epoch,
        epochs=epochs,
        validation_data=eval_ds,
        validation_steps=eval_steps,
        verbose=0,
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train_with_custom_loop(strategy, model, train_ds, eval_ds, steps: int, eval_steps: int, global_batch: int):
    """A GradientTape loop under `strategy.run`: the template for users who need a custom loss."""
    with strategy.scope():
        loss_fn = tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.NONE)
        metrics = {
            "loss": tf.keras.metrics.Mean(name="loss"),
            "accuracy": tf.keras.metrics.BinaryAccuracy(name="accuracy"),
            "auc": tf.keras.metrics.AUC(name="auc"),
        }
        val_metrics = {"val_" + k: m.__class__(name="val_" + k) for k, m in metrics.items()}
    optimizer = model.optimizer

    def _labels(y):
        return tf.reshape(tf.cast(y, tf.float32), [-1, 1])

    # Plain tracing for the steps (no tensor-dependent branches in them): AutoGraph would convert all
    # of Keras beneath them, which costs far more than the training. The loops below keep AutoGraph.
    @tf.autograph.experimental.do_not_convert
    def train_step(inputs):
        x, y = inputs
        y = _labels(y)
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(y, p), global_batch_size=global_batch)
            if model.losses:  # the L2 penalties, as model.fit would add them
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        metrics["loss"].update_state(loss * strategy.num_replicas_in_sync)
        metrics["accuracy"].update_state(y, p)
        metrics["auc"].update_state(y, p)

    @tf.autograph.experimental.do_not_convert
    def eval_step(inputs):
        x, y = inputs
        y = _labels(y)
        p = model(x, training=False)
        val_metrics["val_loss"].update_state(tf.reduce_mean(loss_fn(y, p)))
        val_metrics["val_accuracy"].update_state(y, p)
        val_metrics["val_auc"].update_state(y, p)

    @tf.function
    def run_train(iterator, n):
        for _ in tf.range(n):
            strategy.run(train_step, args=(next(iterator),))

    @tf.function
    def run_eval(iterator, n):
        for _ in tf.range(n):
            strategy.run(eval_step, args=(next(iterator),))

    train_it = iter(strategy.experimental_distribute_dataset(train_ds))
    eval_it = iter(strategy.experimental_distribute_dataset(eval_ds))
    epochs, per_epoch = curve_points(steps)
    history: Dict[str, list] = {}
    for _ in range(epochs):
        for m in list(metrics.values()) + list(val_metrics.values()):
            m.reset_state()
        run_train(train_it, tf.constant(per_epoch))
        run_eval(eval_it, tf.constant(eval_steps))
        for name, m in list(metrics.items()) + list(val_metrics.items()):
            history.setdefault(name, []).append(float(m.result()))
    return history


def _serving_signatures(model, tf_transform_output, dense: Optional[DensePreprocessing] = None) -> Dict[str, object]:
    """serving_default (serialized tf.Example), serving_tf_transform (the same through TF-Transform's
    own layer), serving_raw (one tensor per raw feature), transform_features.

    serving_default runs `dense` when given (checked against TF-Transform's layer by
    `serving_preprocessing`), else TF-Transform's layer, as serving_tf_transform always does.
    Traced without AutoGraph: nothing in them branches on tensor values, and converting the Keras
    and TFT code beneath them costs several seconds per export.
    """
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = features.serving_feature_spec(raw_spec)
    examples = tf.TensorSpec([None], tf.string, name="examples")

    @tf.function(input_signature=[examples], autograph=False)
    def serve_examples_tf_transform(serialized):
        parsed = tf.io.parse_example(serialized, serving_spec)
        return {OUTPUT_KEY: model(model.tft_layer(parsed))}

    serve_examples = serve_examples_tf_transform
    if dense is not None:
        served = dense.with_static_tables()
        model.dense_vocabulary_tables = served.tables  # saved with the model, filled when it loads

        @tf.function(input_signature=[examples], autograph=False)
        def serve_examples_dense(serialized):
            return {OUTPUT_KEY: model(served.from_examples(serialized))}

        serve_examples = serve_examples_dense

    raw_inputs = [tf.TensorSpec([None], spec.dtype, name=name) for name, spec in sorted(serving_spec.items())]

    @tf.function(input_signature=raw_inputs, autograph=False)
    def serve_raw(*columns):
        parsed = {}
        for (name, spec), column in zip(sorted(serving_spec.items()), columns):
            parsed[name] = as_parsed(column, spec)
        return {OUTPUT_KEY: model(model.tft_layer(parsed))}

    @tf.function(input_signature=[examples], autograph=False)
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_spec))

    return {
        "serving_default": serve_examples.get_concrete_function(),
        TF_TRANSFORM_SIGNATURE: serve_examples_tf_transform.get_concrete_function(),
        "serving_raw": serve_raw.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
    }


def serving_preprocessing(tf_transform_output, raw_eval_files: Optional[str], limit: int = CHECK_ROWS
                          ) -> Tuple[Optional[DensePreprocessing], Dict[str, object]]:
    """The preprocessing serving_default runs, and the record of why.

    The dense preprocessing (`trainer_module.dense_preprocessing`) when it gives TF-Transform's outputs
    on up to `limit` raw eval tf.Examples, parsed as a client's are; otherwise None (serving_default then
    runs TF-Transform's own layer: slower, and right by construction) with the reason, logged as a
    warning. Without raw eval examples nothing can be checked, so TF-Transform's layer is used.
    """
    if not raw_eval_files:
        return None, {"serving_default": "tf_transform",
                      "why": "no raw eval examples to check the dense preprocessing on"}
    files = sorted(tf.io.gfile.glob(raw_eval_files))
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)] if files else []
    if not serialized:
        return None, {"serving_default": "tf_transform", "why": f"no raw eval examples in {raw_eval_files}"}
    serving_spec = features.serving_feature_spec(tf_transform_output.raw_feature_spec())
    try:
        # Built from trainer_module.features' groups: a preprocessing_fn edited for other data without
        # them may not be probe-able at all, and TF-Transform's layer then serves, as on a mismatch.
        dense = DensePreprocessing.from_transform(tf_transform_output, serving_spec)
    except Exception as err:  # noqa: BLE001 - the fallback is always right; the reason is recorded
        logging.warning("serving_default runs TF-Transform's own layer: the dense preprocessing could not be "
                        "built", exc_info=True)
        return None, {"serving_default": "tf_transform",
                      "why": f"the dense preprocessing could not be built: {type(err).__name__}: {err}"}
    try:
        worst = dense.check_examples(tf_transform_output, serialized)
    except PreprocessingMismatch as err:
        logging.warning("serving_default runs TF-Transform's own layer: %s", err)
        return None, {"serving_default": "tf_transform", "why": str(err), "rows_checked": len(serialized)}
    return dense, {"serving_default": "dense_preprocessing", "rows_checked": len(serialized), "max_abs_diff": worst}


def export(model, tf_transform_output, serving_dir: str, dense: Optional[DensePreprocessing] = None) -> None:
    # save_traces=False: clients use the signatures; tracing every Keras call function only costs time.
    model.save(serving_dir, save_format="tf", signatures=_serving_signatures(model, tf_transform_output, dense),
               save_traces=False)


def tflite_dir(serving_model_dir: str) -> str:
    """`<model>/tflite/` for the Trainer's `<model>/Format-Serving/`."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), tflite_export.TFLITE_DIR)


def _write_json(path: str, payload: dict) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(payload, indent=1))


def run_fn(fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """Train and export. `fn_args.custom_config`: batch_size (per replica), learning_rate, training_loop."""
    # The Tuner's best hyperparameters, when the Trainer was given them, over the configured settings.
    settings = with_hyperparameters(TrainingSettings.from_custom_config(fn_args.custom_config), fn_args.hyperparameters)
    strategy = strategy or make_strategy()
    tf.keras.utils.set_random_seed(int(settings.seed))  # same data, same settings: (nearly) the same model
    task = task_of(strategy)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    global_batch = int(settings.batch_size) * strategy.num_replicas_in_sync

    train_ds = training_input(fn_args, tf_transform_output, settings, global_batch)
    eval_ds = validation_input(fn_args, tf_transform_output, global_batch)
    cardinalities = cardinalities_from(tf_transform_output)
    with strategy.scope():
        model = TaxiModel(cardinalities, hidden_units=settings.hidden_units, embedding_dim=settings.embedding_dim)
        warm_start.build(model, cardinalities)
        warm = warm_start.warm_start(model, cardinalities, tf_transform_output, fn_args.base_model)
        steps = warm_start.warm_steps(fn_args.train_steps, warm)
        compile_model(model, float(settings.learning_rate), decay_steps=steps)
    logging.info("warm start: %s", warm)

    started = time.time()
    if settings.training_loop == "custom":
        history = train_with_custom_loop(strategy, model, train_ds, eval_ds, steps, fn_args.eval_steps, global_batch)
    else:
        history = train_with_fit(model, train_ds, eval_ds, steps, fn_args.eval_steps)
    seconds = time.time() - started
    points, per_point = curve_points(steps)
    steps_run = points * per_point

    # Every worker saves (collective ops); only the chief's copy is the model.
    # Every worker decides alike (same Transform, same rows), so every worker saves the same signatures.
    dense, serving_graph = serving_preprocessing(tf_transform_output, settings.raw_eval_files)
    save_dir = fn_args.serving_model_dir if task["is_chief"] else tempfile.mkdtemp(prefix="worker-model-")
    try:
        export(model, tf_transform_output, save_dir, dense)
    finally:
        if not task["is_chief"]:
            shutil.rmtree(save_dir, ignore_errors=True)
    if task["is_chief"] and settings.tflite:
        # The raw eval split (raw_eval_files, set by the trainer executor) calibrates the int8 model and
        # evaluates every TF Lite model beside the SavedModel.
        tflite_export.export_tflite(tflite_export.undistributed_copy(model, tf_transform_output), tf_transform_output,
                                    save_dir, tflite_dir(fn_args.serving_model_dir),
                                    settings.raw_eval_files, preprocessing=dense)

    record = {
        **{k: task[k] for k in ("task_type", "task_index")},
        "num_replicas_in_sync": strategy.num_replicas_in_sync,
        "steps": steps_run,
        "global_batch_size": global_batch,
        "examples_per_second": steps_run * global_batch / max(seconds, 1e-9),
        "training_loop": settings.training_loop,
        "warm_start": warm,
        "hyperparameters": {"hidden_units": list(settings.hidden_units), "embedding_dim": settings.embedding_dim,
                            "learning_rate": settings.learning_rate, "tuned": bool(fn_args.hyperparameters)},
        "saved_to": save_dir if task["is_chief"] else None,
    }
    _write_json(os.path.join(fn_args.model_run_dir, "workers", f"worker-{task['task_index']}.json"), record)
    if task["is_chief"]:
        _write_json(os.path.join(fn_args.model_run_dir, "history.json"), history)
        _write_json(os.path.join(fn_args.model_run_dir, SERVING_GRAPH_FILE), serving_graph)
