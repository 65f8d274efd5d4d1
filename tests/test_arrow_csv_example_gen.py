"""The Arrow CSV executor writes what TFX's own CsvExampleGen executor writes: same examples, same splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from components import arrow_csv_example_gen
from pipeline.beam_runners import beam_steps
from tests_support import write_sample


def _run(executor_class, data: Path, out: Path, artifact_out: dict = None, order_out: dict = None) -> dict:
    """Runs an ExampleGen executor as the component would (2:1 hash split); split -> sorted serialized examples.
    `artifact_out` gets the output artifact's custom properties and each split's file names; `order_out` each
    split's records in the order written."""
    import tensorflow as tf
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)]))
    input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="single_split", pattern="*")])
    props = {
        "input_base": str(data), "input_config": proto_utils.proto_to_json(input_config),
        "output_config": proto_utils.proto_to_json(output_config),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    with beam_steps():  # as the pipeline runs it: no sdist of TFX left in /tmp per call
        executor_class(executor_class.Context(beam_pipeline_args=["--direct_num_workers=1"])).Do(
            {}, {"examples": [examples]}, props)
    assert json.loads(examples.split_names) == ["train", "eval"]
    splits = {}
    for split in ("train", "eval"):
        files = sorted(str(p) for p in (out / f"Split-{split}").glob("*.gz"))
        records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, "GZIP")]
        splits[split] = sorted(r.SerializeToString(deterministic=True) for r in records)
        if order_out is not None:
            order_out[split] = [r.SerializeToString(deterministic=True) for r in records]
        if artifact_out is not None:
            artifact_out[split] = sorted(Path(f).name for f in files)
    if artifact_out is not None:
        artifact_out["properties"] = {key: examples.get_custom_property(key)
                                      for key in examples.mlmd_artifact.custom_properties}
    return splits


EDGE_CSV = '''a_int,b_float,c_str,d_empty,e_mixed,f_quoted,g_spaces,h_big
1,1.5,x,,1,"one, two",  7 ,1
2,,y,,2.25,"multi
line",8,99999999999999999999
,3,,,,"",9,
-4,4e-3,007,,x,"quote ""inside""", 10,3
'''


@pytest.mark.parametrize("kind", ["taxi sample", "edge cases"])
def test_same_examples_in_the_same_splits_as_tfx_csv_example_gen(tmp_path, kind):
    from tfx.components.example_gen.csv_example_gen import executor as tfx_csv

    data = tmp_path / "data"
    if kind == "taxi sample":
        write_sample(data / "part-1.csv", rows=1500)
        write_sample(data / "part-2.csv", rows=1000, skip=1500)  # two files: types inferred over both
        rows = 2500
    else:
        data.mkdir()
        (data / "edge.csv").write_text(EDGE_CSV)
        rows = 4
    ours_written, theirs_written = {}, {}
    ours = _run(arrow_csv_example_gen.Executor, data, tmp_path / "ours", ours_written)
    theirs = _run(tfx_csv.Executor, data, tmp_path / "tfx", theirs_written)
    assert sum(len(v) for v in ours.values()) == rows  # every row, once
    assert ours == theirs  # byte for byte (deterministic serialization), split by split
    # The same artifact properties (payload and file format) and file names as TFX's Beam path writes.
    assert ours_written == theirs_written, (ours_written, theirs_written)


class BeamPathExecutor(arrow_csv_example_gen.Executor):
    """The Arrow executor through TFX's Beam path (GenerateExamplesByBeam, WriteSplit), as on other runners."""

    writes_in_process = False


def test_the_beam_path_writes_the_same_splits_as_the_in_process_path(tmp_path):
    data = tmp_path / "data"
    write_sample(data / "part-1.csv", rows=1200)
    assert _run(BeamPathExecutor, data, tmp_path / "beam") == _run(arrow_csv_example_gen.Executor, data, tmp_path / "ours")


def test_the_in_process_path_only_on_the_direct_runner():
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    hashed = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)]))
    props = {"input_config": proto_utils.proto_to_json(example_gen_pb2.Input(
                 splits=[example_gen_pb2.Input.Split(name="single_split", pattern="*")])),
             "output_config": proto_utils.proto_to_json(hashed)}
    plan = arrow_csv_example_gen._in_process_plan
    assert plan(props, ["--direct_num_workers=1"]) is not None
    assert plan(props, ["--runner=PortableRunner", "--job_endpoint=localhost:8099"]) is None
    by_feature = example_gen_pb2.Output()
    by_feature.CopyFrom(hashed)
    by_feature.split_config.partition_feature_name = "company"
    assert plan({**props, "output_config": proto_utils.proto_to_json(by_feature)}, []) is None


def test_each_split_is_shuffled_not_in_the_csvs_order(tmp_path):
    """TFX's WriteSplit reshuffles every record before writing; a split written in the CSV's order would feed a
    sorted CSV to the Trainer (and to the validation batches) in that order."""
    import tensorflow as tf

    data = tmp_path / "data"
    data.mkdir()
    (data / "sorted.csv").write_text("row,value\n" + "".join(f"{i},{i % 7}\n" for i in range(1500)))
    order = {}
    splits = _run(arrow_csv_example_gen.Executor, data, tmp_path / "ours", order_out=order)
    for split, records in order.items():
        rows = [tf.train.Example.FromString(r).features.feature["row"].int64_list.value[0] for r in records]
        assert len(rows) == len(splits[split]) > 100
        assert rows != sorted(rows), split  # not the input's order
