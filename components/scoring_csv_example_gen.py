"""CsvExampleGen for scoring: every example carries its row number, and FLOAT features are written as floats.

What `score` needs from ExampleGen, done while it encodes (the Arrow executor of
`arrow_csv_example_gen`), so the input is read where it lies (on Kubeflow: the shared volume) with no
copy of it:

- `ROW_COLUMN`, an int64 feature: the row's number in input order (files sorted by path, then rows).
  ExampleGen does not keep row order (files are read in parallel and written in shards); each
  PredictionLog carries its tf.Example, so the predictions are put back in input order by it
  (`pipeline/score_output.py`). A first pass counts each file's rows (with the column types, which
  are inferred over every row anyway); each file's numbers start after the rows of the files before it.
- A FLOAT feature of the schema (`trainer_module/features.py` SCHEMA_PATH, the model's own) whose
  cells are all integers ("12") is inferred INT and would reach the model as int64, which its parsing
  refuses: such columns are encoded as FLOAT (the same numbers, as float32, as "12.0" would be).

The files are the ones directly in `input_base` matching the split pattern, sorted by path, hidden
files and folders left out (the pre-checks of `pipeline/score_steps.py` refuse files in sub-folders, so
`score_input.read` numbers the same rows in the same order).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import pyarrow as pa
from tfx.components.example_gen.csv_example_gen import component as csv_component
from tfx.dsl.components.base import executor_spec

from components import arrow_csv_example_gen as csv_gen

ROW_COLUMN = "__input_row__"


def float_features(schema_path=None) -> Tuple[str, ...]:
    """The schema's FLOAT features (the model parses them as floats)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from trainer_module.features import SCHEMA_PATH

    with open(schema_path or SCHEMA_PATH) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    return tuple(sorted(feature.name for feature in schema.feature if feature.type == schema_pb2.FLOAT))


def scoring_kinds(kinds: Dict[str, int], floats: Iterable[str]) -> Dict[str, int]:
    """The inferred column types with the schema's FLOAT features that read as INT made FLOAT, and ROW_COLUMN INT."""
    kinds = {name: csv_gen.FLOAT if name in set(floats) and kind == csv_gen.INT else kind
             for name, kind in kinds.items()}
    kinds[ROW_COLUMN] = csv_gen.INT
    return kinds


def with_row_numbers(batch: pa.RecordBatch, first: int) -> pa.RecordBatch:
    """`batch` with ROW_COLUMN: first, first + 1, ... (as text, like every cell the encoder reads)."""
    numbers = pa.array([str(n) for n in range(first, first + batch.num_rows)], pa.string())
    return pa.RecordBatch.from_arrays(list(batch.columns) + [numbers], names=batch.schema.names + [ROW_COLUMN])


class _InferTypesAndCount(beam.DoFn):
    def __init__(self, column_names: List[str]):
        self._names = column_names

    def process(self, path: str):
        kinds = {name: csv_gen.UNKNOWN for name in self._names}
        rows = 0
        for batch in csv_gen.read_batches(path, self._names):
            rows += batch.num_rows
            for name in self._names:
                if kinds[name] < csv_gen.STRING:
                    kinds[name] = max(kinds[name], csv_gen.column_type(batch.column(name)))
        yield path, kinds, rows


def _merge(found: Iterable[Tuple[str, Dict[str, int], int]]) -> Dict[str, Any]:
    """{"kinds": merged column types, "first": path -> the number of its first row}."""
    found = sorted(found, key=lambda item: item[0])
    first, total = {}, 0
    for path, _, rows in found:
        first[path] = total
        total += rows
    return {"kinds": csv_gen._merge_types(kinds for _, kinds, _ in found), "first": first}


class _EncodeNumbered(beam.DoFn):
    def __init__(self, column_names: List[str], floats: Tuple[str, ...]):
        self._names, self._floats = column_names, floats
        self._rows = beam.metrics.Metrics.counter("ArrowCsvExampleGen", "rows")

    def process(self, path: str, layout: Dict[str, Any]) -> Iterable[bytes]:
        kinds = scoring_kinds(layout["kinds"], self._floats)
        row = layout["first"][path]
        for batch in csv_gen.read_batches(path, self._names):
            records = csv_gen.encode(with_row_numbers(batch, row), kinds)
            if len(records) != batch.num_rows:
                raise RuntimeError(f"{path}: {batch.num_rows} rows read but {len(records)} examples encoded")
            row += batch.num_rows
            self._rows.inc(len(records))
            yield from records


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _NumberedCsvToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any], split_pattern: str):
    # As `score_input.read` lists them (pipeline/data_check.py): hidden files and folders are not input.
    pattern, files, column_names = csv_gen.split_files(exec_properties, split_pattern, skip_hidden=True)
    if ROW_COLUMN in column_names:
        raise RuntimeError(f"{files[0]} has a column {ROW_COLUMN!r}, which scoring adds; rename or drop it")
    paths = pipeline | "CreateFilenames" >> beam.Create(files)
    layout = beam.pvalue.AsSingleton(
        paths | "InferColumnTypesAndCountRows" >> beam.ParDo(_InferTypesAndCount(column_names))
        | "NumberFiles" >> beam.combiners.ToList() | "Merge" >> beam.Map(_merge))
    return paths | "Reshuffle" >> beam.Reshuffle() | "ToTFExample" >> beam.ParDo(
        _EncodeNumbered(column_names, float_features()), layout)


class Executor(csv_gen.Executor):
    """The Arrow CsvExampleGen executor, writing row numbers and the schema's FLOAT features as floats."""

    writes_in_process = False  # its records come from its own transform, through TFX's Beam path

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _NumberedCsvToExample


class ScoringCsvExampleGen(csv_component.CsvExampleGen):
    """TFX's CsvExampleGen (spec, outputs, driver) running the numbering executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
