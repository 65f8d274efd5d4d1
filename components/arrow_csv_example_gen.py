"""CsvExampleGen with a faster executor: Arrow reads the CSV, Arrow's compute kernels write the tf.Examples.

TFX's CsvExampleGen executor parses each line in Python and builds each tf.Example proto cell by
cell (about 4,500 rows/s here). This executor keeps the component (same spec, outputs, split
config, payload format, driver) and replaces the CSV-to-record step:

- column types are inferred over every row of the split with CsvExampleGen's rule (tfx_bsl's
  `ColumnTypeInferrer`: INT if every non-empty cell is an int64, else FLOAT if every one is a
  float, else STRING; a column with no value at all gets features with no kind), with Arrow's
  casts and, for a column Arrow cannot cast but Python might (" 12", "1_000", "Infinity"),
  Python's own int() and float() cell by cell, as tfx_bsl does;
- each file is read by Arrow's CSV reader in blocks, and each block is written column by column
  in tf.Example's wire format (varints and lengths in numpy, concatenation in Arrow): a missing
  cell is an empty list of the column's type, as CsvExampleGen writes it.

On Beam's DirectRunner it also splits and writes the records in its own process (TFX's partition
function, a shuffle per split, TensorFlow's TFRecord writer: see "the DirectRunner's case" below);
on any other runner TFX's base ExampleGen executor does (hash split, WriteSplit) through Beam.

Why not tfx_bsl's `RecordBatchToExamples`: it writes the feature map in hash order, and
CsvExampleGen's hash split keys on the *deterministic* serialization (map sorted by key), so its
bytes would put rows in other splits. The bytes written here are that deterministic serialization,
so every row lands in the split CsvExampleGen would put it in; the test compares both executors'
outputs byte for byte, split by split. Every block's rows read are checked against the examples
written from it, and counted (Beam counter `ArrowCsvExampleGen/rows` on the Beam path; in the log
on the DirectRunner's).
"""
from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen.csv_example_gen import component as csv_component
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import io_utils

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

log = logging.getLogger(__name__)

UNKNOWN, INT, FLOAT, STRING = 0, 1, 2, 3  # the order of tfx_bsl's type hierarchy (a column only moves up)
BLOCK_BYTES = 16 << 20
_INT64 = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)


def _read_options(column_names: List[str]):
    return (
        pa_csv.ReadOptions(column_names=column_names, skip_rows=1, block_size=BLOCK_BYTES),
        pa_csv.ParseOptions(delimiter=",", newlines_in_values=True),  # quoted multi-line cells, as TFX allows
        pa_csv.ConvertOptions(column_types={name: pa.string() for name in column_names}, strings_can_be_null=False,
                              quoted_strings_can_be_null=False),
    )


def read_batches(path: str, column_names: List[str]) -> Iterable[pa.RecordBatch]:
    """The file's rows as this executor reads them (every cell a string, "" for an empty one), in order."""
    if "://" in path:  # an object store: TFX's filesystem reads it (whole), Arrow parses it
        with fileio.open(path, "rb") as f:
            source = pa.BufferReader(f.read())
    else:
        source = path
    for batch in pa_csv.open_csv(source, *_read_options(column_names)):
        if batch.num_rows:
            yield batch


def _python_type(value: str) -> int:
    """tfx_bsl's `_InferValueType` for one cell."""
    if not value:
        return UNKNOWN
    try:
        return INT if _INT64[0] <= int(value) <= _INT64[1] else STRING
    except ValueError:
        try:
            float(value)
        except ValueError:
            return STRING
        return FLOAT


def column_type(column: pa.Array) -> int:
    """The type tfx_bsl infers for these cells (strings; "" is a missing value)."""
    present = column.filter(pc.not_equal(column, ""))
    if len(present) == 0:
        return UNKNOWN
    first = _python_type(present[0].as_py())  # the column's type is at least its first cell's
    if first == STRING:
        return STRING
    if first == INT:
        try:
            pc.cast(present, pa.int64())
            return INT
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    try:
        pc.cast(present, pa.float64())
        integral = present.filter(pc.match_substring_regex(present, r"^[+-]?[0-9]+$"))
        if len(integral):
            pc.cast(integral, pa.int64())  # an int beyond int64 makes the column STRING in tfx_bsl: Python decides
        return FLOAT  # Arrow read every cell as a float, as Python's float() does
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Cells Arrow cannot read as numbers: Python's int()/float() decide, as in CsvExampleGen.
    kind = UNKNOWN
    for value in present.to_pylist():
        kind = max(kind, _python_type(value))
        if kind == STRING:  # the top of the hierarchy: the rest cannot change it
            break
    return kind


# ---- tf.Example wire format, column at a time ------------------------------------------------------------
# Example{1: Features{1: repeated map entry{1: key, 2: Feature{1: BytesList | 2: FloatList | 3: Int64List}}}},
# each list one packed field 1. Deterministic serialization (what CsvExampleGen hashes to pick the split)
# writes the map entries sorted by key; an empty list is its Feature's tag and a zero length.

_KIND_TAG = {STRING: 0x0A, FLOAT: 0x12, INT: 0x1A}


def _varint_width(values: np.ndarray) -> np.ndarray:
    width = np.ones(len(values), np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        width += rest > 0
        rest = rest >> np.uint64(7)
    return width


def _varints(values: np.ndarray) -> Tuple[pa.Array, np.ndarray]:
    """Each (uint64) value as a protobuf varint: a binary array, and the byte widths."""
    values = values.astype(np.uint64)
    width = _varint_width(values)
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum(width, out=offsets[1:])
    data = np.zeros(int(offsets[-1]), np.uint8)
    pos, rest, left = offsets[:-1].astype(np.int64), values.copy(), width.copy()
    while True:
        active = np.nonzero(left)[0]
        if not len(active):
            break
        byte = (rest[active] & np.uint64(0x7F)).astype(np.uint8)
        byte[left[active] > 1] |= 0x80
        data[pos[active]] = byte
        rest[active] >>= np.uint64(7)
        pos[active] += 1
        left[active] -= 1
    return pa.Array.from_buffers(pa.binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data)]), width


def _fixed(data: np.ndarray, size: int) -> pa.Array:
    n = len(data) // size
    offsets = np.arange(0, n * size + 1, size, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _join(*parts) -> pa.Array:
    parts = [pa.scalar(p, pa.binary()) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))


def _varint_of(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _entry_head(name: str) -> bytes:
    key = name.encode()
    return b"\x0a" + _varint_of(len(key)) + key + b"\x12"


def _constant_entry(name: str, feature: bytes) -> bytes:
    body = _entry_head(name) + _varint_of(len(feature)) + feature
    return b"\x0a" + _varint_of(len(body)) + body


def _value_bytes(column: pa.Array, mask: pa.Array, kind: int) -> Tuple[pa.Array, np.ndarray]:
    """Per row, the list's packed payload (missing rows: a placeholder, replaced later) and its length."""
    present = pc.if_else(mask, column, pa.scalar(None, pa.string()))
    if kind == INT:
        try:
            ints = pc.cast(present, pa.int64())
        except pa.ArrowInvalid:  # cells only Python's int() reads (" 12")
            ints = pa.array([None if v is None else int(v) for v in present.to_pylist()], pa.int64())
        values = pc.fill_null(ints, 0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        return _varints(values)
    if kind == FLOAT:  # Python's float() then float32, as FloatList stores it
        try:
            doubles = pc.cast(present, pa.float64())
        except pa.ArrowInvalid:
            doubles = pa.array([None if v is None else float(v) for v in present.to_pylist()], pa.float64())
        floats = pc.fill_null(pc.cast(doubles, pa.float32(), safe=False), 0.0).to_numpy(zero_copy_only=False)
        data = np.ascontiguousarray(floats.astype("<f4")).view(np.uint8)
        return _fixed(data, 4), np.full(len(floats), 4, np.int64)
    values = pc.cast(column, pa.binary())
    return values, pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)


def column_entries(name: str, column: pa.Array, kind: int) -> pa.Array:
    """Each row's serialized map entry (key, Feature) for this column, as deterministic serialization writes it."""
    if kind == UNKNOWN:  # no value anywhere in the column: a Feature with no kind (tfx_bsl's handler None)
        return pa.array([_constant_entry(name, b"")] * len(column), pa.binary())
    tag = bytes([_KIND_TAG[kind]])
    mask = pc.not_equal(column, "")
    values, vlen = _value_bytes(column, mask, kind)
    vlen_bytes, vlen_width = _varints(vlen.astype(np.uint64))
    llen = 1 + vlen_width + vlen  # the list: field 1 (packed), its length, the payload
    llen_bytes, llen_width = _varints(llen.astype(np.uint64))
    flen = 1 + llen_width + llen  # the Feature: the list's tag, its length, the list
    flen_bytes, flen_width = _varints(flen.astype(np.uint64))
    head = _entry_head(name)
    blen_bytes, _ = _varints((len(head) + flen_width + flen).astype(np.uint64))
    entries = _join(b"\x0a", blen_bytes, head, flen_bytes, tag, llen_bytes, b"\x0a", vlen_bytes, values)
    missing = pa.scalar(_constant_entry(name, tag + b"\x00"), pa.binary())
    return pc.if_else(mask, entries, missing)


def encode(batch: pa.RecordBatch, kinds: Dict[str, int]) -> List[bytes]:
    """Serialized tf.Examples of the batch's rows, byte for byte CsvExampleGen's deterministic serialization."""
    names = sorted(batch.schema.names, key=lambda n: n.encode())
    features = _join(*[column_entries(name, batch.column(name), kinds[name]) for name in names])
    lengths = pc.binary_length(features).to_numpy(zero_copy_only=False).astype(np.uint64)
    length_bytes, _ = _varints(lengths)
    return _join(b"\x0a", length_bytes, features).to_pylist()


class _InferTypes(beam.DoFn):
    def __init__(self, column_names: List[str]):
        self._names = column_names

    def process(self, path: str) -> Iterable[Dict[str, int]]:
        kinds = {name: UNKNOWN for name in self._names}
        for batch in read_batches(path, self._names):
            for name in self._names:
                if kinds[name] < STRING:
                    kinds[name] = max(kinds[name], column_type(batch.column(name)))
        yield kinds


def _merge_types(all_kinds: Iterable[Dict[str, int]]) -> Dict[str, int]:
    merged: Dict[str, int] = {}
    for kinds in all_kinds:
        for name, kind in kinds.items():
            merged[name] = max(merged.get(name, UNKNOWN), kind)
    return merged


class _Encode(beam.DoFn):
    def __init__(self, column_names: List[str]):
        self._names = column_names
        self._rows = beam.metrics.Metrics.counter("ArrowCsvExampleGen", "rows")

    def process(self, path: str, kinds: Dict[str, int]) -> Iterable[bytes]:
        for batch in read_batches(path, self._names):
            records = encode(batch, kinds)
            if len(records) != batch.num_rows:  # every row counted: no row may be dropped on the way
                raise RuntimeError(f"{path}: {batch.num_rows} rows read but {len(records)} examples encoded")
            self._rows.inc(len(records))
            yield from records


def split_files(exec_properties: Dict[str, Any], split_pattern: str, skip_hidden: bool = False):
    """(pattern, its files sorted, their header's column names), as CsvExampleGen checks them: some file
    matches, and every file has the same header. `skip_hidden`: leave out dot-files and folders."""
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    files = sorted(fileio.glob(pattern))
    if skip_hidden:
        files = [f for f in files if not os.path.basename(f.rstrip("/")).startswith(".") and not fileio.isdir(f)]
    if not files:
        raise RuntimeError(f"Split pattern {pattern} does not match any files.")
    column_names = io_utils.load_csv_column_names(files[0])
    for path in files[1:]:
        if io_utils.load_csv_column_names(path) != column_names:
            raise RuntimeError(f"Files in same split {pattern} have different header.")
    return pattern, files, column_names


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _ArrowCsvToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any], split_pattern: str):
    """CSV files matching the split pattern -> serialized tf.Examples, as CsvExampleGen's `_CsvToExample`."""
    pattern, files, column_names = split_files(exec_properties, split_pattern)
    log.info("Processing input csv data %s to TFExample with Arrow.", pattern)
    paths = pipeline | "CreateFilenames" >> beam.Create(files)
    kinds = beam.pvalue.AsSingleton(
        paths | "InferColumnTypes" >> beam.ParDo(_InferTypes(column_names))
        | "MergeColumnTypes" >> beam.CombineGlobally(_merge_types))
    return paths | "Reshuffle" >> beam.Reshuffle() | "ToTFExample" >> beam.ParDo(_Encode(column_names), kinds)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """CsvExampleGen's executor with Arrow reading and encoding (same records, same splits).

    On Beam's DirectRunner, a hash split of one input split into gzipped TFRecords (the pipeline's case) is
    written here in this process (`_write_in_process`); anything else goes through TFX's Beam path
    (`GenerateExamplesByBeam`, then `WriteSplit`), on any runner.
    """

    # A subclass with its own record transform (GetInputSourceToExamplePTransform) sets this False.
    writes_in_process = True

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ArrowCsvToExample

    def Do(self, input_dict, output_dict, exec_properties):
        plan = _in_process_plan(exec_properties, self._beam_pipeline_args) if self.writes_in_process else None
        if plan is None:
            return super().Do(input_dict, output_dict, exec_properties)
        self._log_startup(input_dict, output_dict, exec_properties)
        _write_in_process(output_dict[standard_component_specs.EXAMPLES_KEY], exec_properties, *plan)


# ---- the DirectRunner's case, written in this process --------------------------------------------------
# TFX's Beam path on the DirectRunner passes every record through the runner between stages (the hash
# partition, WriteSplit's Reshuffle, the TFRecord sink): at 1M rows (`python -m bench.scale`, 2026-12-07) most of
# CsvExampleGen's 44 s went to Beam's per-record work (py-spy: element decoding 15%, the runner's buffers 13%,
# the sink's per-record writes and CRCs 18%), and the runner held every record at once (3.1 GB peak).
# Here each record goes to the split TFX's own partition function gives it (tfx_internals.example_gen_splitter),
# each split's records are shuffled (as WriteSplit's Reshuffle scrambles them: a model reading a split in order
# would otherwise see a sorted CSV's order) with a fixed seed, and written by TensorFlow's TFRecord writer
# (local files, gs://, s3:// through tensorflow-io) into the file WriteSplit would name.

SHUFFLE_SEED = 20261207


def _in_process_plan(exec_properties: Dict[str, Any], beam_pipeline_args: List[str]):
    """(input config, output config) when this executor writes the splits itself, else None (TFX's Beam path)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    runner = PipelineOptions(beam_pipeline_args or []).view_as(StandardOptions).runner
    if runner not in (None, "DirectRunner", "direct"):  # the user's Beam runner writes, as TFX has it
        return None
    input_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
    output_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], example_gen_pb2.Output())
    tfrecords = (example_gen_pb2.FILE_FORMAT_UNSPECIFIED, example_gen_pb2.FORMAT_TFRECORDS_GZIP)
    examples = (None, example_gen_pb2.FORMAT_TF_EXAMPLE)
    if (len(input_config.splits) != 1 or not output_config.split_config.splits
            or output_config.split_config.partition_feature_name
            or exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY, 0) not in tfrecords
            or exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY) not in examples):
        return None
    return input_config, output_config


def _write_in_process(examples_artifacts, exec_properties: Dict[str, Any], input_config, output_config) -> None:
    """What TFX's ExampleGen `Do` writes and records, for a hash split of one input split into TFRecords."""
    import random

    import tensorflow as tf
    from tfx.components.example_gen import utils as example_gen_utils
    from tfx.components.example_gen import write_split
    from tfx.components.util import examples_utils
    from tfx.types import artifact_utils

    from kubeflow import tfx_internals

    split_config = output_config.split_config
    names = example_gen_utils.generate_output_split_names(input_config, output_config)
    for artifact in examples_artifacts:
        artifact.split_names = artifact_utils.encode_split_names(names)
    buckets = list(itertools.accumulate(split.hash_buckets for split in split_config.splits))  # as TFX's
    pattern, files, column_names = split_files(exec_properties, input_config.splits[0].pattern)
    log.info("Processing input csv data %s to TFExample with Arrow, in this process.", pattern)
    kinds = _merge_types(kinds for path in files for kinds in _InferTypes(column_names).process(path))
    split_of = tfx_internals.example_gen_splitter(buckets, split_config)
    splits: List[List[bytes]] = [[] for _ in names]
    encoder = _Encode(column_names)  # the Beam path's encoding, with its check that every row read is encoded
    for path in files:
        for record in encoder.process(path, kinds):
            splits[split_of(record)].append(record)
    shuffle = random.Random(SHUFFLE_SEED).shuffle
    for name, records in zip(names, splits):
        shuffle(records)
        folder = artifact_utils.get_split_uri(examples_artifacts, name)
        fileio.makedirs(folder)
        path = os.path.join(folder, f"{write_split.DEFAULT_TF_RECORD_FILE_NAME}-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
            for record in records:
                writer.write(record)
        log.info("Split %s: %d examples written to %s", name, len(records), path)
    payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY, 0)
    for artifact in examples_artifacts:  # as TFX's Do records them
        if payload_format:
            examples_utils.set_payload_format(artifact, payload_format)
        if file_format:
            examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))


class ArrowCsvExampleGen(csv_component.CsvExampleGen):
    """TFX's CsvExampleGen (spec, outputs, driver) running the Arrow executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
