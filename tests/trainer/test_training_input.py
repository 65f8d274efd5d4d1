"""The training input on the raw examples of a real pipeline run: what Transform's graph gives the Trainer equals
what TF-Transform's own Beam transform writes when it materialises; and the input held in memory
(trainer_module.inputs.in_memory_input_fn) against the streamed one: every pass is a permutation of exactly
the split's rows, passes differ, batches keep a static size, and what cannot be held is streamed."""
import os
from pathlib import Path

import numpy as np
import pytest

from components.multiworker_trainer import replay
from trainer_module import features, inputs, preprocessing


@pytest.fixture(scope="module")
def run_args(trainer_reference_run):
    """TFX's own FnArgs of the run's Trainer, and its Transform output."""
    import tensorflow_transform as tft
    from tfx.components.trainer import fn_args_utils

    inputs, exec_properties = replay.last_trainer_execution(Path(trainer_reference_run.metadata_path))
    fn_args = fn_args_utils.get_common_fn_args(inputs, exec_properties)
    return fn_args, tft.TFTransformOutput(fn_args.transform_graph_path)


@pytest.fixture(scope="module")
def split(run_args):
    """The training files, data accessor and Transform output run_fn was given."""
    fn_args, transform_output = run_args
    return fn_args.train_files, fn_args.data_accessor, transform_output


def _rows(batch) -> list:
    """Each row of a (features, label) batch as a sortable tuple of all its values."""
    columns, label = batch
    names = sorted(columns)
    values = [np.asarray(columns[n]).reshape(len(label), -1) for n in names] + [np.asarray(label).reshape(-1, 1)]
    return sorted(map(tuple, np.concatenate([v.astype(np.float64) for v in values], axis=1).tolist()))


def _whole_split(files, accessor, transform_output):
    """The whole split in one (features, label) batch, streamed through Transform's graph once."""
    from tfx_bsl.public import tfxio

    options = tfxio.TensorFlowDatasetOptions(batch_size=1 << 20, shuffle=False, num_epochs=1)
    return next(iter(inputs.transformed(inputs.raw_batches(files, accessor, transform_output, options), transform_output)))


def _tft_materialised(files, transform_output, temp_dir) -> dict:
    """The split as TF-Transform's Beam transform (`tft_beam.TransformDataset`, what TFX's Transform runs when it
    materialises) writes it with the transform graph the pipeline made, read back with the transformed schema."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    raw = tfxio.TFExampleRecord(file_pattern=files, schema=transform_output.raw_metadata.schema)
    coder = tft.coders.ExampleProtoCoder(transform_output.transformed_metadata.schema)
    written = os.path.join(str(temp_dir), "transformed")
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(temp_dir),
                                                       force_tf_compat_v1=preprocessing.FORCE_TF_COMPAT_V1):
        transform_fn = pipeline | tft_beam.ReadTransformFn(os.path.dirname(transform_output.transform_savedmodel_dir))
        transformed, _ = ((pipeline | raw.BeamSource(), raw.TensorAdapterConfig()), transform_fn) | tft_beam.TransformDataset()
        _ = transformed | beam.Map(coder.encode) | beam.io.WriteToTFRecord(written)
    back = tfxio.TFExampleRecord(file_pattern=written + "*", schema=transform_output.transformed_metadata.schema)
    options = tfxio.TensorFlowDatasetOptions(batch_size=1 << 20, shuffle=False, num_epochs=1)
    return {name: value.numpy() for name, value in next(iter(back.TensorFlowDataset(options))).items()}


def test_the_trainer_sees_what_tf_transform_would_have_materialised(split, tmp_path):
    files, accessor, transform_output = split
    columns, label = _whole_split(files, accessor, transform_output)
    expected = _tft_materialised(files, transform_output, tmp_path)
    names = sorted(columns)
    assert sorted(expected) == sorted([*names, features.LABEL_KEY])  # the same features, and the label
    assert len(expected[features.LABEL_KEY]) == len(label) > 1000

    def table(values) -> np.ndarray:  # rows in one order (float noise aside), every column as float64
        t = np.column_stack([np.asarray(v, np.float64).reshape(len(label)) for v in values])
        return t[np.lexsort(np.round(t, 4).T[::-1])]

    ours = table([columns[n] for n in names] + [label])
    theirs = table([expected[n] for n in [*names, features.LABEL_KEY]])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    assert all(columns[n].dtype == expected[n].dtype for n in names)


def test_each_pass_is_a_new_permutation_of_exactly_the_split(split):
    files, accessor, transform_output = split
    streamed = _whole_split(files, accessor, transform_output)  # the whole split, read once from the files
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


def test_validation_replays_the_first_batches_of_the_eval_split_every_time(run_args):
    import copy

    from tfx_bsl.public import tfxio

    fn_args, transform_output = run_args
    fn_args = copy.copy(fn_args)
    fn_args.eval_steps = 3
    held = inputs.validation_input(fn_args, transform_output, 64)
    streamed = inputs.transformed(inputs.raw_batches(fn_args.eval_files, fn_args.data_accessor, transform_output,
                                                     tfxio.TensorFlowDatasetOptions(batch_size=64, shuffle=False)),
                                  transform_output)
    passes = list(held.take(6))
    for expected, first, second in zip(streamed.take(3), passes[:3], passes[3:]):
        assert first[1].shape == (64,)
        for got in (first, second):
            np.testing.assert_array_equal(got[1], expected[1])
            for name, column in expected[0].items():
                np.testing.assert_allclose(got[0][name], column, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows, steps, batch, expected", [
    (10_036, 500, 256, 12.75), (666_667, 2_605, 256, 1.0), (None, 500, 256, 0.0)])
def test_reads_per_row(rows, steps, batch, expected):
    assert inputs.reads_per_row(rows, steps, batch) == pytest.approx(expected, abs=0.01)
