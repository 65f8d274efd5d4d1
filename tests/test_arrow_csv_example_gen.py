"""The Arrow CSV executor writes what TFX's own CsvExampleGen executor writes: same examples, same splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline.beam_runners import workers_have_this_install
from tests_support import write_sample


def _run(executor_class, data: Path, out: Path) -> dict:
    """Runs an ExampleGen executor as the component would (2:1 hash split); split -> sorted serialized examples."""
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
    with workers_have_this_install():  # as the pipeline runs it: no sdist of TFX left in /tmp per call
        executor_class(executor_class.Context(beam_pipeline_args=["--direct_num_workers=1"])).Do(
            {}, {"examples": [examples]}, props)
    assert json.loads(examples.split_names) == ["train", "eval"]
    splits = {}
    for split in ("train", "eval"):
        files = sorted(str(p) for p in (out / f"Split-{split}").glob("*.gz"))
        records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, "GZIP")]
        splits[split] = sorted(r.SerializeToString(deterministic=True) for r in records)
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

    from components import arrow_csv_example_gen

    data = tmp_path / "data"
    if kind == "taxi sample":
        write_sample(data / "part-1.csv", rows=1500)
        write_sample(data / "part-2.csv", rows=1000, skip=1500)  # two files: types inferred over both
        rows = 2500
    else:
        data.mkdir()
        (data / "edge.csv").write_text(EDGE_CSV)
        rows = 4
    ours = _run(arrow_csv_example_gen.Executor, data, tmp_path / "ours")
    theirs = _run(tfx_csv.Executor, data, tmp_path / "tfx")
    assert sum(len(v) for v in ours.values()) == rows  # every row, once
    assert ours == theirs  # byte for byte (deterministic serialization), split by split


def test_column_types_follow_tfx_bsl_inference():
    import pyarrow as pa

    from components.arrow_csv_example_gen import FLOAT, INT, STRING, UNKNOWN, column_type

    assert column_type(pa.array(["1", "", "-3"])) == INT
    assert column_type(pa.array(["1", "2.5"])) == FLOAT
    assert column_type(pa.array(["", ""])) == UNKNOWN
    assert column_type(pa.array(["1", "abc"])) == STRING
    assert column_type(pa.array([" 12", "3"])) == INT  # Python's int() takes spaces; Arrow does not
    assert column_type(pa.array(["99999999999999999999"])) == STRING  # beyond int64: tfx_bsl says STRING
