"""`taxi-pipeline score`: TFX's BulkInferrer with the served model, predictions in input order.

The acceptance (issue 26, 2): scoring the raw CSV rows of a real run's eval split gives one prediction
per row, in input order (or matched by `--key`), equal within 1e-5 to what the served model answers
over gRPC for the same rows; a missing column or a malformed file exits 2 with one line. The eval rows
are the sample's CSV rows whose tf.Examples are the ones in the run's eval split (encoded as the run's
ExampleGen encoded them, compared byte for byte), and the gRPC answers come from the project's model
server queried with tensorflow-serving-api's PredictionService stub, the rows encoded by the client.
"""
from __future__ import annotations

import csv
import glob
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli

MODEL = "taxi"


def _score(capfd, *args) -> tuple:
    """(exit status, stderr) of `taxi-pipeline score ARGS`, in this process."""
    status = cli.main(["score", *map(str, args)])
    return status, capfd.readouterr().err


def _read_csv(path: Path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# -- a real run's eval rows, its served model, and what the model server answers for them -------------

@pytest.fixture(scope="module")
def eval_rows(taxi_pipeline_result):
    """(header, rows) of the sample CSV rows that make the run's eval split, in the sample's order."""
    import tensorflow as tf

    from components import arrow_csv_example_gen as csv_gen

    config, result = taxi_pipeline_result
    sample = Path(config.data) / "data.csv"
    header, rows = _read_csv(sample)
    split = glob.glob(str(Path(result.nodes["CsvExampleGen"].output_uri("examples")) / "Split-eval" / "*.gz"))
    in_eval = {r.numpy() for r in tf.data.TFRecordDataset(split, compression_type="GZIP")}
    batches = list(csv_gen.read_batches(str(sample), header))
    kinds = {name: max(csv_gen.column_type(b.column(name)) for b in batches) for name in header}
    encoded = [record for batch in batches for record in csv_gen.encode(batch, kinds)]
    assert len(encoded) == len(rows)
    chosen = [row for row, record in zip(rows, encoded) if record in in_eval]
    assert 1000 < len(chosen) < len(rows) and in_eval <= set(encoded)  # every eval example is one of these rows
    return header, chosen


@pytest.fixture(scope="module")
def score_home(taxi_pipeline_result, tmp_path_factory) -> Path:
    """A home serving the run's pushed model (a copy of its version folder), so that scoring leaves the
    shared run's home as it was."""
    from components.serving_baseline import newest_version

    config, _ = taxi_pipeline_result
    version = newest_version(str(config.serving_model_dir))
    home = tmp_path_factory.mktemp("score-home")
    shutil.copytree(config.serving_model_dir / str(version), home / "serving" / MODEL / str(version))
    return home


@pytest.fixture(scope="module")
def served(score_home, eval_rows) -> np.ndarray:
    """The model server's answers (serving_default over gRPC) for the eval rows, in their order."""
    from serving.client import ServingClient, raw_input_dtypes, rows_to_inputs
    from serving.config import model_config
    from serving.model_servers.server import ModelServer, ServerOptions

    header, rows = eval_rows
    options = ServerOptions(model_config.single_model_config(MODEL, str(score_home / "serving" / MODEL)),
                            grpc_port=0, rest_port=None, poll_wait_s=0)
    answers = []
    with ModelServer(options) as server:
        assert server.wait_until_available(MODEL, 120)
        with ServingClient(f"127.0.0.1:{server.grpc_port}", timeout_s=60) as client:  # PredictionServiceStub
            defs = client.signature_defs(MODEL)
            for start in range(0, len(rows), 256):
                chunk = [dict(zip(header, row)) for row in rows[start:start + 256]]
                inputs = rows_to_inputs(chunk, defs["serving_default"], raw_input_dtypes(defs))
                outputs, _ = client.predict(MODEL, inputs, signature="serving_default")
                answers.append(outputs["probabilities"].reshape(-1))
    return np.concatenate(answers)


@pytest.fixture(scope="module")
def eval_csv(eval_rows, tmp_path_factory) -> Path:
    header, rows = eval_rows
    path = tmp_path_factory.mktemp("eval-rows") / "eval.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return path


@pytest.fixture(scope="module")
def scored_csv(score_home, eval_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scored-csv")
    assert cli.main(["score", "--data", str(eval_csv), "--home", str(score_home), "--out", str(out)]) == 0
    return out / "predictions.csv"


def test_score_gives_every_eval_row_its_served_prediction_in_input_order(scored_csv, eval_rows, served, score_home):
    header, rows = eval_rows
    out_header, out_rows = _read_csv(scored_csv)
    assert out_header == header + ["probability"]
    assert [row[:-1] for row in out_rows] == rows  # every input row once, in input order, its cells unchanged
    probabilities = np.array([float(row[-1]) for row in out_rows])
    assert len(probabilities) == len(served)
    np.testing.assert_allclose(probabilities, served, rtol=0, atol=1e-5)
    assert 0.05 < probabilities.mean() < 0.95 and probabilities.std() > 0.05  # not one constant answer
    # TFX's own records: a scoring pipeline of its own, with its own ML Metadata, beside the home's
    # (no training run's metadata.db was made in this home: scoring runs never show in `status`).
    from pipeline import run_results, score, score_output, score_pipeline

    run = run_results.load_run(score.scoring_root(score_home) / "metadata.db")
    assert set(run.nodes) == set(score_pipeline.NODES)
    assert not (score_home / "metadata.db").exists()
    logs = score_output.prediction_log_files(run.nodes["BulkInferrer"].output_uri("inference_result"))
    assert logs and all(Path(p).is_relative_to(score.scoring_root(score_home) / "pipeline_root") for p in logs)
    assert not (score.scoring_root(score_home) / "input").exists()  # ExampleGen's input copy is removed


def test_parquet_output_reads_back_as_the_csv(score_home, eval_csv, scored_csv, tmp_path):
    import pyarrow.parquet as pq

    assert cli.main(["score", "--data", str(eval_csv), "--home", str(score_home), "--out", str(tmp_path),
                     "--format", "parquet"]) == 0
    table = pq.read_table(tmp_path / "predictions.parquet")
    header, rows = _read_csv(scored_csv)
    assert table.column_names == header
    for index, name in enumerate(header):
        column = table.column(name).to_pylist()
        cells = [row[index] for row in rows]
        kind = table.schema.field(name).type
        if name == "probability":  # another run: RunInference batches rows otherwise, the last bits may differ
            np.testing.assert_allclose(column, np.array(cells, np.float32), rtol=1e-6, atol=0)
        elif str(kind) in ("int64", "double"):
            convert = int if str(kind) == "int64" else float
            assert column == [None if c == "" else convert(c) for c in cells], name
        else:
            assert column == [None if c == "" else c for c in cells], name


def test_key_matches_predictions_to_rows_without_the_label(score_home, eval_rows, served, tmp_path):
    """Rows without `tips` (scoring input has no label), with a unique trip_id in shuffled order: each row
    gets its own served prediction, matched by trip_id, and the rows stay in input order."""
    header, rows = eval_rows
    keep = [i for i, name in enumerate(header) if name != "tips"]
    ids = [f"trip-{n:05d}" for n in random.Random(7).sample(range(100000), len(rows))]
    data = tmp_path / "keyed.csv"
    with open(data, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trip_id"] + [header[i] for i in keep])
        writer.writerows([trip] + [row[i] for i in keep] for trip, row in zip(ids, rows))
    assert cli.main(["score", "--data", str(data), "--home", str(score_home), "--out", str(tmp_path / "out"),
                     "--key", "trip_id"]) == 0
    out_header, out_rows = _read_csv(tmp_path / "out" / "predictions.csv")
    assert out_header[0] == "trip_id" and "tips" not in out_header
    assert [row[0] for row in out_rows] == ids
    np.testing.assert_allclose([float(row[-1]) for row in out_rows], served, rtol=0, atol=1e-5)


# -- bad input: one line, exit 2, before anything runs (a stand-in version folder is enough) ---------

@pytest.fixture()
def stub_home(tmp_path) -> Path:
    version = tmp_path / "home" / "serving" / MODEL / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")  # never loaded: every case here fails on its input first
    return tmp_path / "home"


@pytest.fixture()
def sample_csv(tmp_path) -> Path:
    from tests_support import write_sample

    return write_sample(tmp_path / "rows.csv", rows=30)


def _rewrite(path: Path, target: Path, edit) -> Path:
    header, rows = _read_csv(path)
    header, rows = edit(header, rows)
    with open(target, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return target


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_missing_column_exits_2_naming_it(stub_home, sample_csv, tmp_path, capfd):
    data = _rewrite(sample_csv, tmp_path / "no_company.csv",
                    lambda h, rows: ([c for c in h if c != "company"],
                                     [[v for c, v in zip(h, r) if c != "company"] for r in rows]))
    status, err = _score(capfd, "--data", data, "--home", stub_home)
    assert status == 2 and "lacks column(s) company" in _one_line(err)


def test_a_malformed_file_exits_2_with_one_line(stub_home, sample_csv, tmp_path, capfd):
    ragged = tmp_path / "ragged.csv"
    lines = sample_csv.read_text().splitlines()
    ragged.write_text("\n".join(lines[:10] + ["1,2,3"] + lines[10:]) + "\n")
    status, err = _score(capfd, "--data", ragged, "--home", stub_home)
    assert status == 2 and "ragged.csv is not well-formed CSV (CSV parse error: Expected 18 columns, got 3" in _one_line(err)
    binary = tmp_path / "folder" / "trips.csv"
    binary.parent.mkdir()
    binary.write_bytes(b"\x00\x01\x02 not text")
    status, err = _score(capfd, "--data", binary.parent, "--home", stub_home)
    assert status == 2 and "trips.csv is not a CSV text file" in _one_line(err)


@pytest.mark.parametrize("edit, message", [
    (lambda h, rows: (h, [r if i != 4 else [("" if c == "fare" else v) for c, v in zip(h, r)] for i, r in enumerate(rows)]),
     "column fare: rows.csv row 5 has no value; the model needs one in every row"),
    (lambda h, rows: (h, [r if i != 2 else [("7.5" if c == "trip_start_hour" else v) for c, v in zip(h, r)]
                          for i, r in enumerate(rows)]),
     "column trip_start_hour: the model takes integers, the data has other values ('7.5' in rows.csv row 3)"),
    (lambda h, rows: (h + ["probability"], [r + ["0.5"] for r in rows]), "has a column named 'probability'"),
], ids=["empty-required-cell", "float-in-integer-feature", "probability-column-taken"])
def test_rows_the_model_cannot_take_exit_2_naming_the_cell(stub_home, sample_csv, tmp_path, capfd, edit, message):
    data = _rewrite(sample_csv, tmp_path / "rows.csv", edit)
    status, err = _score(capfd, "--data", data, "--home", stub_home)
    assert status == 2 and message in _one_line(err)


@pytest.mark.parametrize("key, message", [
    ("trip_id", "--key trip_id: no such column in rows.csv"),
    ("trip_start_month", "have the same key"),
    ("fare", "numbers with decimals"),
], ids=["no-such-column", "not-unique", "float"])
def test_a_key_that_cannot_identify_rows_exits_2(stub_home, sample_csv, capfd, key, message):
    status, err = _score(capfd, "--data", sample_csv, "--home", stub_home, "--key", key)
    assert status == 2 and message in _one_line(err)


def test_nothing_served_exits_2(sample_csv, tmp_path, capfd):
    status, err = _score(capfd, "--data", sample_csv, "--home", tmp_path / "empty")
    assert status == 2
    assert _one_line(err) == (f"error: nothing served in {tmp_path / 'empty' / 'serving' / MODEL}: "
                              "run `taxi-pipeline run` first")


def test_example_gen_reads_row_numbers_and_floats_as_floats(sample_csv, tmp_path):
    """The copy ExampleGen reads: each row's number in input order across files, and a FLOAT feature whose
    cells are all integers written as floats (else its tf.Examples would carry int64 and fail to parse)."""
    from pipeline import score_input
    from pipeline.configs import PipelineConfig

    folder = tmp_path / "in"
    folder.mkdir()
    for name, part in (("a.csv", slice(0, 10)), ("b.csv", slice(10, 30))):
        _rewrite(sample_csv, folder / name, lambda h, rows: (h, [[(str(int(float(v))) if c == "fare" else v)
                                                                   for c, v in zip(h, r)] for r in rows[part]]))
    scoring = score_input.read(folder, PipelineConfig.schema_path)
    assert scoring.rows == 30 and scoring.as_floats == ("fare",)
    written = score_input.write_for_example_gen(scoring, tmp_path / "copy")
    header, rows = [], []
    for path in written:
        header, part = _read_csv(path)
        rows += part
    assert header[-1] == score_input.ROW_COLUMN
    assert [int(r[-1]) for r in rows] == list(range(30))
    fares = [r[header.index("fare")] for r in rows]
    assert all(f.endswith(".0") for f in fares if f)
