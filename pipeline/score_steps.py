"""The scoring pipeline's own steps for Kubeflow, around ExampleGen and BulkInferrer.

- `ScoringInputCheck`, the first step: `score_input.read`'s checks (a file that is not CSV, different
  headers, a column the model needs missing or empty, text where it takes numbers), so bad input ends
  the run in one line before ExampleGen starts; and only CSV files directly in the folder (ExampleGen
  reads `<folder>/*`, so rows in sub-folders would be scored by neither).
- `ScoreWriter`, after BulkInferrer: the input rows in input order with `probability` appended, as CSV or
  Parquet (`score_output`), in its `predictions` artifact (TFX's Dataset type, one the Kubeflow compiler
  knows) under the pipeline root, where a user reads it (`predictions.csv` / `.parquet`). The
  PredictionLogs and the output are on the object store: they are copied through TFX's filesystem
  (`fileio`) to and from a local folder of the pod, and `score_output`'s functions run on the local copies.

The local `score` command does both in its own process (`pipeline/score.py`); these are the same
functions as pipeline steps, because on Kubeflow nothing runs between the steps. (No `from __future__
import annotations` here: TFX's `@component` reads the annotations as types.)
"""

import os
import tempfile
from pathlib import Path

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.experimental.simple_artifacts import Dataset

from pipeline.errors import UserError


def check_input(data: str, schema_path: str):
    """`score_input.read` on `data`, with every file directly in it; UserError in one line otherwise."""
    from pipeline import score_input

    folder = Path(data)
    if folder.is_dir():
        nested = sorted(p for p in folder.rglob("*") if p.is_file() and p.parent != folder
                        and not p.name.startswith("."))
        if nested:
            raise UserError(f"--data {data}: {nested[0].relative_to(folder)} is in a sub-folder; on Kubeflow the "
                            "CSV files to score must lie directly in the folder")
    elif folder.exists():
        raise UserError(f"--data {data}: is a file; on Kubeflow give the folder that holds the CSV files")
    return score_input.read(folder, Path(schema_path))


@component
def ScoringInputCheck(data: Parameter[str], schema_path: Parameter[str]):
    """Fails the run in one line on input `score` would refuse."""
    from pipeline import score_input

    scoring = check_input(data, schema_path)
    print(f"ScoringInputCheck: {data}: {score_input.describe(scoring)}, columns {', '.join(scoring.columns)}")


@component
def ScoreWriter(inference_result: InputArtifact[standard_artifacts.InferenceResult],
                predictions: OutputArtifact[Dataset], data: Parameter[str], schema_path: Parameter[str],
                output_format: Parameter[str]):
    """`predictions.<output_format>` in `predictions`: the rows of `data` in input order, `probability` appended."""
    from pipeline import score_output

    scoring = check_input(data, schema_path)
    with tempfile.TemporaryDirectory() as local:
        logs = os.path.join(local, "inference_result")
        os.makedirs(logs)
        found = fileio.glob(os.path.join(inference_result.uri, score_output.PREDICTION_LOGS))
        for path in found:
            fileio.copy(path, os.path.join(logs, os.path.basename(path)))
        probabilities = score_output.probabilities(logs, scoring)
        name = f"predictions.{output_format}"
        written = score_output.write(scoring, probabilities, Path(local) / name, output_format)
        fileio.makedirs(predictions.uri)
        fileio.copy(str(written), os.path.join(predictions.uri, name), overwrite=True)
    predictions.set_int_custom_property("rows", scoring.rows)
    predictions.set_string_custom_property("file", name)
    print(f"ScoreWriter: {scoring.rows:,} rows scored ({len(found)} PredictionLog files) -> "
          f"{predictions.uri}/{name}")
