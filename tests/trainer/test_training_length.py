"""Training length follows the data: the executor counts the training rows and turns epochs into steps."""
from __future__ import annotations

import json
import math

import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from trainer_module import training_length


def test_default_policy_keeps_the_old_length_on_small_data_and_one_full_pass_on_big_data():
    # The default taxi sample's train split (~10k rows): the 500 steps x 256 it always trained.
    assert training_length.steps_for(10_000, 256) == 500
    # 1M rows (667k training rows): every row once, not the fifth of them 500 steps reached.
    assert training_length.epochs_for(667_000) == 1.0
    assert training_length.steps_for(667_000, 256) == math.ceil(667_000 / 256)
    # Explicit epochs win; a step is never cut short of the rows.
    assert training_length.steps_for(1_000, 256, epochs=3) == math.ceil(3_000 / 256)
    with pytest.raises(ValueError):
        training_length.steps_for(0, 256)
    with pytest.raises(ValueError):
        training_length.epochs_for(100, epochs=0)


def _examples(root, rows_by_split):
    """A real Examples artifact: gzipped TFRecord files of tf.Examples per split."""
    import tensorflow as tf
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = json.dumps(sorted(rows_by_split))
    for split, rows in rows_by_split.items():
        folder = root / "examples" / f"Split-{split}"
        folder.mkdir(parents=True)
        for shard in range(2):  # two files: every file is counted
            with tf.io.TFRecordWriter(str(folder / f"data-{shard}.gz"), options="GZIP") as writer:
                for i in range(shard, rows, 2):
                    example = tf.train.Example(features=tf.train.Features(feature={
                        "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}))
                    writer.write(example.SerializeToString())
    return examples


def _props(num_steps=None):
    args = {"splits": ["train"]}
    if num_steps:
        args["num_steps"] = num_steps
    return {"train_args": json.dumps(args)}


def test_executor_derives_steps_from_the_counted_rows(tmp_path):
    from components.multiworker_trainer import training_length as executor_length

    inputs = {"examples": [_examples(tmp_path, {"train": 1_001, "eval": 77})]}
    props = _props()
    plan = executor_length.resolve(inputs, props, {"epochs": 2, "batch_size": 100}, workers=2)
    # 2 passes over 1,001 rows in global batches of 100 x 2 workers.
    assert plan["train_rows"] == 1_001 and plan["global_batch_size"] == 200
    assert plan["steps"] == math.ceil(2 * 1_001 / 200) == json.loads(props["train_args"])["num_steps"]
    assert plan["steps_from"] == "epochs"

    record_dir = tmp_path / "model_run"
    (record_dir / "workers").mkdir(parents=True)
    (record_dir / "workers" / "worker-0.json").write_text(json.dumps({"steps": 10, "global_batch_size": 200}))
    record = executor_length.write_record(str(record_dir), plan)
    assert record["examples"] == 2_000 and record["epochs"] == round(2_000 / 1_001, 3)
    assert json.loads((record_dir / "training.json").read_text()) == record


def test_explicit_train_steps_are_kept(tmp_path):
    from components.multiworker_trainer import training_length as executor_length

    inputs = {"examples": [_examples(tmp_path, {"train": 300})]}
    props = _props(num_steps=7)
    plan = executor_length.resolve(inputs, props, {"epochs": 50}, workers=1)
    assert plan["steps"] == 7 and plan["steps_from"] == "train_steps" and plan["train_rows"] == 300
    assert json.loads(props["train_args"])["num_steps"] == 7


def test_no_data_and_no_steps_is_an_error_that_names_the_way_out(tmp_path):
    from tfx.types import standard_artifacts

    from components.multiworker_trainer import training_length as executor_length

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "nothing")
    examples.split_names = json.dumps(["train"])
    with pytest.raises(ValueError, match="--train-steps"):
        executor_length.resolve({"examples": [examples]}, _props(), {}, workers=1)
    # With explicit steps the count is informative only (the toy trainer tests have no data files).
    assert executor_length.resolve({"examples": [examples]}, _props(5), {}, workers=1)["train_rows"] is None


def test_rows_are_counted_in_plain_and_gzipped_files_and_a_cut_file_is_named(tmp_path):
    import tensorflow as tf

    from components.multiworker_trainer.training_length import count_rows

    examples = _examples(tmp_path, {"train": 1_001})
    folder = tmp_path / "examples" / "Split-train"
    with tf.io.TFRecordWriter(str(folder / "plain-0")) as writer:  # uncompressed, as a runner may write
        for _ in range(5):
            writer.write(b"x" * 100)
    assert count_rows([examples], ["train"]) == 1_006
    cut = folder / "data-0.gz"
    cut.write_bytes(cut.read_bytes()[:-40])
    with pytest.raises(ValueError, match="data-0.gz"):
        count_rows([examples], ["train"])
