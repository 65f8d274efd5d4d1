"""`run_fn`: the TFX Trainer's entry point (one call per worker process).

The same function trains in one process or as one of N workers: the strategy comes from `TF_CONFIG`
(`MultiWorkerMirroredStrategy` when it names several workers, trainer_module/distribution.py), the data
is sharded per worker (inputs.py), the global batch is the per-replica batch times the replicas in sync,
and every worker saves (saving runs collective ops), the chief to the serving model directory and the
others to a temporary directory (export.py). With a base model the weights start from it
(warm_start.py); with the Tuner's hyperparameters the model takes them (tuning.py).
"""
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft

from trainer_module import export, inputs, records, tflite_export, training, warm_start
from trainer_module.distribution import make_strategy, task_of
from trainer_module.model import TaxiModel, cardinalities_from, compile_model
from trainer_module.settings import TrainingSettings, with_hyperparameters


def run_fn(fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """Train and export. `fn_args.custom_config`: trainer_module/settings.py's TrainingSettings."""
    # The Tuner's best hyperparameters, when the Trainer was given them, over the configured settings.
    settings = with_hyperparameters(TrainingSettings.from_custom_config(fn_args.custom_config), fn_args.hyperparameters)
    strategy = strategy or make_strategy()
    tf.keras.utils.set_random_seed(int(settings.seed))  # same data, same settings: (nearly) the same model
    task = task_of(strategy)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    global_batch = int(settings.batch_size) * strategy.num_replicas_in_sync
    # The chief converts its TF Lite models in a second process while it saves the SavedModel; started now,
    # that process imports TensorFlow while this one reads the data and trains.
    with tflite_export.converter_process(task["is_chief"] and settings.tflite) as lite_helper:
        train_ds = inputs.training_input(fn_args, tf_transform_output, settings, global_batch)
        eval_ds = inputs.validation_input(fn_args, tf_transform_output, global_batch)
        model, warm, steps = build_model(strategy, settings, tf_transform_output, fn_args.base_model,
                                         fn_args.train_steps)
        started = time.time()
        history = training.train(settings.training_loop, strategy, model, train_ds, eval_ds, steps,
                                 fn_args.eval_steps, global_batch)
        seconds = time.time() - started
        serving_graph = save(model, tf_transform_output, settings, task["is_chief"], fn_args.serving_model_dir,
                             lite_helper)

    steps_run = training.steps_trained(steps)
    report = {
        **{k: task[k] for k in ("task_type", "task_index")},
        "num_replicas_in_sync": strategy.num_replicas_in_sync,
        "steps": steps_run,
        "global_batch_size": global_batch,
        "examples_per_second": steps_run * global_batch / max(seconds, 1e-9),
        "training_loop": settings.training_loop,
        "warm_start": warm,
        "hyperparameters": {"hidden_units": list(settings.hidden_units), "embedding_dim": settings.embedding_dim,
                            "learning_rate": settings.learning_rate, "tuned": bool(fn_args.hyperparameters)},
        "saved_to": fn_args.serving_model_dir if task["is_chief"] else None,
    }
    write_records(fn_args.model_run_dir, task, report, history, serving_graph)


def build_model(strategy, settings: TrainingSettings, tf_transform_output, base_model: Optional[str],
                train_steps: int) -> Tuple[TaxiModel, Dict[str, object], int]:
    """The compiled model under `strategy`, warm-started from `base_model` when it can be; and the steps to train."""
    cardinalities = cardinalities_from(tf_transform_output)
    with strategy.scope():
        model = TaxiModel(cardinalities, hidden_units=settings.hidden_units, embedding_dim=settings.embedding_dim)
        warm_start.build(model)
        warm = warm_start.warm_start(model, tf_transform_output, base_model)
        steps = warm_start.warm_steps(train_steps, warm)
        compile_model(model, float(settings.learning_rate), decay_steps=steps)
    logging.info("warm start: %s", warm)
    return model, warm, steps


def save(model, tf_transform_output, settings: TrainingSettings, is_chief: bool, serving_model_dir: str,
         lite_helper=None) -> dict:
    """Exports the model (every worker: saving runs collective ops; only the chief's copy is kept) and, on the
    chief, its TF Lite models (converted in `lite_helper`, tflite_export.converter_process, while the SavedModel
    is saved); returns the record of what serving_default runs."""
    # Every worker decides alike (same Transform, same rows), so every worker saves the same signatures.
    dense, serving_graph = export.serving_preprocessing(tf_transform_output, settings.raw_eval_files)
    lite = None
    if is_chief and settings.tflite:
        # The raw eval split (raw_eval_files, set by the trainer executor) calibrates the int8 model and
        # evaluates every TF Lite model beside the SavedModel.
        lite = tflite_export.start_export(tflite_export.undistributed_copy(model, tf_transform_output),
                                          tf_transform_output, export.tflite_dir(serving_model_dir),
                                          settings.raw_eval_files, preprocessing=dense, helper=lite_helper)
    save_dir = serving_model_dir if is_chief else tempfile.mkdtemp(prefix="worker-model-")
    try:
        export.export(model, tf_transform_output, save_dir, dense)
    except BaseException:
        if lite is not None:
            lite.discard()
        raise
    finally:
        if not is_chief:
            shutil.rmtree(save_dir, ignore_errors=True)
    if lite is not None:
        lite.finish(save_dir)
    return serving_graph


def write_records(model_run_dir: str, task: dict, report: dict, history: dict, serving_graph: dict) -> None:
    """Each worker's report; on the chief the training curves and the serving graph's record too."""
    _write_json(records.worker_report(model_run_dir, task["task_index"]), report)
    if task["is_chief"]:
        _write_json(os.path.join(model_run_dir, records.HISTORY_FILE), history)
        _write_json(os.path.join(model_run_dir, records.SERVING_GRAPH_FILE), serving_graph)


def _write_json(path: str, payload: dict) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(payload, indent=1))
