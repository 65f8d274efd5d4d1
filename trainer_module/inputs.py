"""The Trainer's input pipelines: transformed examples in batches, sharded by element across workers."""
import logging
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from tfx_bsl.public import tfxio

from trainer_module import features
from trainer_module.settings import TrainingSettings


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

