"""The Trainer's input pipelines: raw examples through Transform's graph, in batches, sharded by element across workers.

Transform does not write transformed examples (`materialize=False`, pipeline/pipeline.py): the training
split was read once by training (held in memory) or once in all (one epoch on large data), so writing
it cost more than applying the graph here. `transformed` applies the same graph TF-Transform would have
materialised with: tests/trainer/test_training_input.py checks its outputs against TFT's own.
"""
import logging
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from tfx_bsl.public import tfxio

from trainer_module import features
from trainer_module.settings import TrainingSettings


def raw_batches(file_pattern, data_accessor, tf_transform_output, options: tfxio.TensorFlowDatasetOptions) -> tf.data.Dataset:
    """Batches of the raw features (the label's sources included), parsed with the schema Transform read."""
    return data_accessor.tf_dataset_factory(file_pattern, options, tf_transform_output.raw_metadata.schema)


def _features_and_label(tf_transform_output):
    """raw batch -> (transformed features, label), through Transform's graph (TF-Transform's Keras layer)."""
    layer = tf_transform_output.transform_features_layer()

    def apply(raw):
        outputs = dict(layer(raw))
        return outputs, outputs.pop(features.LABEL_KEY)

    return apply


def transformed(dataset: tf.data.Dataset, tf_transform_output) -> tf.data.Dataset:
    """(transformed features, label) batches from raw batches, through Transform's graph."""
    return dataset.map(_features_and_label(tf_transform_output), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def input_fn(file_pattern, data_accessor, tf_transform_output, batch_size: int, seed=None, shuffle=True) -> tf.data.Dataset:
    """Batches of (transformed features, label), repeated, sharded by element across workers.

    Evaluation data is not shuffled: validation restarts its iterator every epoch, and refilling a
    10,000-example shuffle buffer each time cost more than the training steps themselves.
    """
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed)
    return _sharded(transformed(raw_batches(file_pattern, data_accessor, tf_transform_output, options), tf_transform_output))


def _sharded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# A training split read more than once is parsed and transformed once and held in memory, up to this size.
# Parsing tf.Examples (~46k rows/s alone, measured on the transformed ones) competes with the training steps
# for the same two cores: model.fit of 500 steps of 256 on the default data's 10,036 rows (12.75 passes), same
# process, same model, three alternated pairs: 10.3 / 12.3 / 9.6 s streamed, 6.8 / 7.2 / 6.8 s from memory
# (CPU 12.4 -> 8.3 s).
IN_MEMORY_MAX_BYTES = 1 << 30
_READ_BATCH = 65_536  # rows per eager call of Transform's graph (each call costs ~0.5 s, whatever its size)


def reads_per_row(train_rows: Optional[int], steps: int, global_batch: int) -> float:
    """How many times training reads each row of the split (0 when the rows are unknown)."""
    return steps * global_batch / train_rows if train_rows else 0.0


def in_memory_input_fn(file_pattern, data_accessor, tf_transform_output, batch_size: int, seed=None,
                       max_bytes: int = IN_MEMORY_MAX_BYTES) -> Optional[tf.data.Dataset]:
    """As `input_fn` (shuffled, repeated batches), from the split parsed and transformed once into memory.

    Each pass over the rows is a fresh permutation of row indices (seeded: every worker draws the same,
    so DATA sharding still hands each worker different batches), and a batch is a gather from the columns.
    None when the split holds more than `max_bytes` or a feature is not dense: stream it (`input_fn`).
    """
    options = tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH, shuffle=False, num_epochs=1)
    # The graph is applied eagerly, to _READ_BATCH rows a call: the default data's 10,036 training rows read and
    # transformed in 1.2 s (one call; three calls of 4,096: 2.0 s), against 5.7 s through a tf.data map, most of
    # which is building the map's function once (the ways on one finished run's files, one process, 2026-12-07).
    apply = _features_and_label(tf_transform_output)
    parts: Dict[str, list] = {}
    labels, size = [], 0
    for raw in raw_batches(file_pattern, data_accessor, tf_transform_output, options):
        batch, label = apply(raw)
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
    """The first `eval_steps` batches of the eval split, parsed and transformed once and replayed at every validation.

    Validation always read just these (Keras restarts the validation iterator every epoch); the custom
    loop now validates on the same batches each time too, so its curve points compare alike.
    """
    if not fn_args.eval_steps:  # no count given: nothing bounds what would be held
        return input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, global_batch, shuffle=False)
    # The rows of those batches read (repeated: every batch is full) and transformed at once, eagerly, as the
    # training split held in memory is: one call of the graph, not one per batch (each eager call costs ~0.5 s:
    # the default data's 20 batches of 256 took 12.6 s a batch at a time).
    rows = fn_args.eval_steps * global_batch
    options = tfxio.TensorFlowDatasetOptions(batch_size=rows, shuffle=False)
    raw = next(iter(raw_batches(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, options)))
    held = tf.data.Dataset.from_tensor_slices(_features_and_label(tf_transform_output)(raw))
    return _sharded(held.batch(global_batch, drop_remainder=True).repeat())

