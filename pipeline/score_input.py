"""What `score` reads: the input checked row by row, then written for ExampleGen with a row number.

Before any component starts, every row is read once, as ExampleGen's Arrow executor reads it
(`arrow_csv_example_gen.read_batches`), so bad input costs one line and exit 2 instead of a failed
Beam job: a file that is not well-formed CSV, files with different headers, a column the schema
requires in SERVING missing, an empty cell in a feature the model needs in every row (a fixed-shape
feature of the schema), text where the model takes numbers, a `--key` that is missing, empty or not
unique.

Order: TFX's ExampleGen does not keep row order (it reads files in parallel and writes shards), so
ExampleGen reads a copy of the input with one more column, `ROW_COLUMN`, the row's number in input
order (files sorted by path, then rows). Each PredictionLog carries its tf.Example, hence the number,
and the predictions are put back in input order by it. With `--key COLUMN` the user's column is that
identifier instead (it must be unique; an integer or text column, as ExampleGen stores floats as float32).

Types: ExampleGen gives a column the narrowest type every cell fits (`arrow_csv_example_gen.column_type`).
A FLOAT feature whose cells are all integers ("12") would reach the model as int64 and fail to parse,
so the copy writes them as "12.0": the same number, read as a float. The output is written from the
user's own cells, not from the copy.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

from tensorflow_metadata.proto.v0 import schema_pb2

from components import arrow_csv_example_gen as csv_gen
from components.scoring_csv_example_gen import ROW_COLUMN  # what the Kubeflow scoring's ExampleGen adds too
from pipeline.data_check import check_data_dir
from pipeline.errors import UserError

PROBABILITY_COLUMN = "probability"

# A numeric feature of the schema -> the widest ExampleGen type (arrow_csv_example_gen) the model can parse as it
_WIDEST = {schema_pb2.INT: csv_gen.INT, schema_pb2.FLOAT: csv_gen.FLOAT}


@dataclasses.dataclass(frozen=True)
class ScoringInput:
    data: Path  # what --data named: a CSV file or a folder
    files: Tuple[Path, ...]  # the CSV files, in input order
    columns: Tuple[str, ...]  # their header
    rows: int
    kinds: Dict[str, int]  # column -> the type ExampleGen gives it (csv_gen.UNKNOWN/INT/FLOAT/STRING)
    key: Optional[str] = None  # --key COLUMN: rows are matched by it instead of by ROW_COLUMN
    keys: Tuple = ()  # with a key: each row's key, in input order, as ExampleGen stores it (int or str)
    as_floats: Tuple[str, ...] = ()  # FLOAT features whose cells are all integers: written "N.0" for ExampleGen

    @property
    def identifier(self) -> str:
        return self.key or ROW_COLUMN


def _serving_features(schema_path: Path) -> Dict[str, Tuple[int, bool]]:
    """Feature -> (schema type, fixed shape: a value needed in every row), for the SERVING environment."""
    from google.protobuf import text_format

    schema = text_format.Parse(Path(schema_path).read_text(), schema_pb2.Schema())
    return {f.name: (f.type, f.HasField("shape")) for f in schema.feature if "SERVING" not in f.not_in_environment}


def _where(path: Path, row: int) -> str:
    return f"{path.name} row {row + 1}"  # rows counted from 1, after the header


def _first(values: Iterable[str], bad) -> Tuple[int, Optional[str]]:
    for i, value in enumerate(values):
        if bad(value):
            return i, value
    return -1, None


def _unreadable_as(convert):
    """Whether a cell is one `convert` (int or float: ExampleGen's own fallback) cannot read; "" is missing, not bad."""
    def bad(value: str) -> bool:
        if not value:
            return False
        try:
            convert(value)
        except ValueError:
            return True
        return False

    return bad


def read(data: Path, schema_path: Path, key: Optional[str] = None) -> ScoringInput:
    """Every row of `data` checked (see the module docstring); UserError with one line when one is wrong."""
    from tfx.utils import io_utils  # ExampleGen's reading of a header

    data = Path(data)
    files = check_data_dir(data, schema_path, environment="SERVING", file_ok=True)
    columns = io_utils.load_csv_column_names(str(files[0]))
    for path in files[1:]:
        if io_utils.load_csv_column_names(str(path)) != columns:
            raise UserError(f"--data {data}: {path.name} has another header than {files[0].name}; "
                            "every file of one input must have the same columns in the same order")
    for taken in (ROW_COLUMN, PROBABILITY_COLUMN):
        if taken in columns:
            raise UserError(f"--data {data}: has a column named {taken!r}, which score adds; rename or drop it")
    if key is not None and key not in columns:
        raise UserError(f"--key {key}: no such column in {files[0].name} (columns: {', '.join(columns)})")
    features = {name: spec for name, spec in _serving_features(schema_path).items() if name in columns}
    kinds = {name: csv_gen.UNKNOWN for name in columns}
    key_cells: List[Tuple[Path, int, str]] = []
    rows = 0
    for path in files:
        offset = 0
        try:
            for batch in csv_gen.read_batches(str(path), columns):
                for name in columns:
                    column = batch.column(name)
                    if kinds[name] < csv_gen.STRING:
                        kinds[name] = max(kinds[name], csv_gen.column_type(column))
                    if name in features:
                        _check_feature(name, features[name], column, kinds[name], path, offset)
                if key is not None:
                    key_cells.extend((path, offset + i, v) for i, v in enumerate(batch.column(key).to_pylist()))
                offset += batch.num_rows
        except pa.ArrowInvalid as err:
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise UserError(f"--data {data}: {path.name} is not well-formed CSV ({first}); fix the file") from None
        rows += offset
    if rows == 0:
        raise UserError(f"--data {data}: no rows to score (only a header)")
    for name, (schema_type, _) in features.items():
        if schema_type == schema_pb2.BYTES and kinds[name] in (csv_gen.INT, csv_gen.FLOAT):
            raise UserError(f"--data {data}: column {name}: every value is a number, so ExampleGen would store "
                            "numbers where the model takes text")
    as_floats = tuple(name for name, (schema_type, _) in features.items()
                      if schema_type == schema_pb2.FLOAT and kinds[name] == csv_gen.INT)
    keys = _keys(key, kinds.get(key), key_cells) if key is not None else ()
    return ScoringInput(data, tuple(files), tuple(columns), rows, kinds, key, keys, as_floats)


def _check_feature(name: str, spec: Tuple[int, bool], column: pa.Array, kind: int, path: Path, offset: int) -> None:
    schema_type, fixed = spec
    if fixed and pc.any(pc.equal(column, "")).as_py():
        at, _ = _first(column.to_pylist(), lambda v: v == "")
        raise UserError(f"column {name}: {_where(path, offset + at)} has no value; the model needs one in every row")
    widest = _WIDEST.get(schema_type)
    if widest is not None and kind > widest:
        at, value = _first(column.to_pylist(), _unreadable_as(int if schema_type == schema_pb2.INT else float))
        what = "integers" if schema_type == schema_pb2.INT else "numbers"
        where = f" ({value!r} in {_where(path, offset + at)})" if value is not None else ""
        raise UserError(f"column {name}: the model takes {what}, the data has other values{where}")


def _keys(key: str, kind: int, cells: List[Tuple[Path, int, str]]) -> Tuple:
    """Each row's key as ExampleGen stores it; UserError when one is empty, a float, or seen twice."""
    if kind == csv_gen.FLOAT:
        raise UserError(f"--key {key}: its values are numbers with decimals, which ExampleGen stores as float32 "
                        "(not exact); name an integer or text column")
    seen: Dict[object, Tuple[Path, int]] = {}
    keys = []
    for path, row, cell in cells:
        if cell == "":
            raise UserError(f"--key {key}: {_where(path, row)} has no value; every row needs a unique key")
        value = int(cell) if kind == csv_gen.INT else cell
        if value in seen:
            raise UserError(f"--key {key}: {_where(*seen[value])} and {_where(path, row)} have the same key "
                            f"{cell!r}; the key must be unique")
        seen[value] = (path, row)
        keys.append(value)
    return tuple(keys)


def write_for_example_gen(scoring: ScoringInput, folder: Path) -> List[Path]:
    """The input as ExampleGen reads it: one CSV per input file in `folder`, with ROW_COLUMN (without a
    key) and the FLOAT features written as floats. Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written, row = [], 0
    for index, path in enumerate(scoring.files):
        target = folder / f"part-{index:05d}.csv"  # .csv: the terminal's progress counts its rows
        names = list(scoring.columns) + ([ROW_COLUMN] if scoring.key is None else [])
        sink = pa.OSFile(str(target), "wb")
        # The header unquoted, as ExampleGen splits it on commas (tfx.utils.io_utils.load_csv_column_names);
        # the cells as Arrow writes them (quoted text, which ExampleGen's CSV reader unquotes).
        sink.write((",".join(names) + "\n").encode())
        writer = None
        try:
            for batch in csv_gen.read_batches(str(path), list(scoring.columns)):
                table = pa.Table.from_batches([batch])
                for name in scoring.as_floats:
                    column = table.column(name)
                    as_float = pc.if_else(pc.equal(column, ""), column, pc.binary_join_element_wise(column, ".0", ""))
                    table = table.set_column(table.schema.get_field_index(name), name, as_float)
                if scoring.key is None:
                    table = table.append_column(ROW_COLUMN, pa.array(range(row, row + batch.num_rows), pa.int64()))
                row += batch.num_rows
                if writer is None:
                    writer = pa_csv.CSVWriter(sink, table.schema, write_options=pa_csv.WriteOptions(include_header=False))
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
            sink.close()
        written.append(target)
    return written


def input_batches(scoring: ScoringInput) -> Iterable[pa.RecordBatch]:
    """The user's rows in input order, each cell as the file has it."""
    for path in scoring.files:
        yield from csv_gen.read_batches(str(path), list(scoring.columns))


def describe(scoring: ScoringInput) -> str:
    files = len(scoring.files)
    return f"{scoring.rows:,} rows" + (f" in {files} files" if files > 1 else "")
