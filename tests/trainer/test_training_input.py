"""The training input held in memory (trainer_module.inputs.in_memory_input_fn) against the streamed one, on
the transformed examples of a real pipeline run: every pass is a permutation of exactly the split's rows,
passes differ, batches keep a static size, and what cannot be held is streamed."""
from pathlib import Path

import numpy as np
import pytest

from components.multiworker_trainer import replay
from trainer_module import features, inputs


@pytest.fixture(scope="module")
def split(trainer_reference_run):
    """The training files, data accessor and Transform output run_fn was given (TFX's own FnArgs of the run)."""
    import tensorflow_transform as tft
    from tfx.components.trainer import fn_args_utils

    inputs, exec_properties = replay.last_trainer_execution(Path(trainer_reference_run.metadata_path))
    fn_args = fn_args_utils.get_common_fn_args(inputs, exec_properties)
    return fn_args.train_files, fn_args.data_accessor, tft.TFTransformOutput(fn_args.transform_graph_path)


def _rows(batch) -> list:
    """Each row of a (features, label) batch as a sortable tuple of all its values."""
    columns, label = batch
    names = sorted(columns)
    values = [np.asarray(columns[n]).reshape(len(label), -1) for n in names] + [np.asarray(label).reshape(-1, 1)]
    return sorted(map(tuple, np.concatenate([v.astype(np.float64) for v in values], axis=1).tolist()))


def test_each_pass_is_a_new_permutation_of_exactly_the_split(split):
    files, accessor, transform_output = split
    from tfx_bsl.public import tfxio

    streamed = next(iter(accessor.tf_dataset_factory(  # the whole split, read once from the files
        files, tfxio.TensorFlowDatasetOptions(batch_size=1 << 20, label_key=features.LABEL_KEY, shuffle=False,
                                              num_epochs=1), transform_output.transformed_metadata.schema)))
    rows = len(streamed[1])
    held = inputs.in_memory_input_fn(files, accessor, transform_output, rows, seed=7)
    assert held is not None
    assert held.element_spec[1].shape == (rows,)  # static batch size, as the streamed batches have
    first, second = (held_batch for _, held_batch in zip(range(2), held))
    assert _rows(first) == _rows(streamed) == _rows(second)  # one pass: every row once, no other
    fare = features.transformed_name("fare")
    assert not np.array_equal(first[0][fare].numpy(), second[0][fare].numpy())  # a new order every pass


def test_the_same_seed_gives_every_worker_the_same_order(split):
    files, accessor, transform_output = split
    a, b = (next(iter(inputs.in_memory_input_fn(files, accessor, transform_output, 64, seed=3))) for _ in range(2))
    assert all(np.array_equal(a[0][name].numpy(), b[0][name].numpy()) for name in a[0])


def test_a_split_over_the_memory_budget_is_streamed(split):
    files, accessor, transform_output = split
    assert inputs.in_memory_input_fn(files, accessor, transform_output, 64, max_bytes=1_000) is None


@pytest.mark.parametrize("rows, steps, batch, expected", [
    (10_036, 500, 256, 12.75), (666_667, 2_605, 256, 1.0), (None, 500, 256, 0.0)])
def test_reads_per_row(rows, steps, batch, expected):
    assert inputs.reads_per_row(rows, steps, batch) == pytest.approx(expected, abs=0.01)
