"""The Tuner (`compile --tune`) and the scoring pipeline (`compile --score`), run task by task as open-source
KFP 2.17.0 runs them (kfp_local.py), each task in a container of the built image, on the default
minio:// root (moto standing in for the store), as `test_kubeflow_local_run.py`'s whole run is. The
scoring pipeline scores with the model the tuned run trained, served from the volume as version 1 (one
training run for both tests), and the local `taxi-pipeline score` with the same model on the same files.

One release: what these steps meet that the other steps do not (typeless inputs, `executor-logs`, the
launcher's uploads and downloads, its URI checks) is the same rule at every release the harness knows,
and 2.17.0 has all of them (2.2.0 differs in the emptyDirs and the output file only, which the whole run
covers there)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_kubeflow_local_run import BUCKET, compile_spec, local_kfp, s3_endpoint, volume  # noqa: F401  (fixture)
from kfp_image import pipeline_image  # noqa: F401  (fixture)
from kfp_s3 import client, keys
from tests_support import write_sample

from kubeflow import storage
from pipeline import cli

ROOT = f"minio://{BUCKET}/v2/artifacts"
VERSION = "2.17.0"


def _object(endpoint: str, uri: str) -> bytes:
    bucket, key = uri.split("://", 1)[1].split("/", 1)
    return client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def tuned(pipeline_image, s3_endpoint, tmp_path_factory):
    """The training pipeline compiled with `--tune` (2 trials of 20 steps), run up to its Trainer."""
    tmp = tmp_path_factory.mktemp("kfp-tune")
    job = compile_spec(pipeline_image, ROOT, tmp / "taxi-pipeline.json", tune=True, tune_trials=2, tune_steps=20)
    return local_kfp(job, pipeline_image, tmp, volume(tmp), VERSION).run(stop_after="Trainer")


def test_the_tuner_step_completes_and_the_trainer_trains_with_its_best_hyperparameters(tuned, s3_endpoint):
    results = tuned
    best_uri = results["Tuner"].outputs["best_hyperparameters"]["uri"]
    assert best_uri.startswith(ROOT + "/")
    best = json.loads(_object(s3_endpoint, best_uri + "/best_hyperparameters.txt"))["values"]
    trials = json.loads(_object(s3_endpoint, results["Tuner"].outputs["tuner_results"]["uri"] + "/tuner_results.json"))
    assert len(trials) == 2, trials
    # The Trainer got the Tuner's artifact as the driver sends it (no type), and trained with its values.
    (given,) = results["Trainer"].executor_input["inputs"]["artifacts"]["hyperparameters"]["artifacts"]
    assert given["uri"] == best_uri and given["type"] == {"instanceSchema": ""}
    from tf_keras.protobuf import saved_metadata_pb2

    model = results["Trainer"].outputs["model"]["uri"]
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString(_object(s3_endpoint, model + "/Format-Serving/keras_metadata.pb"))
    config = json.loads(next(n for n in metadata.nodes if n.node_path == "root").metadata)["config"]
    units = config["hidden_units"]
    units = units["items"] if isinstance(units, dict) else units
    assert "-".join(map(str, units)) == best["hidden_units"] and config["embedding_dim"] == best["embedding_dim"]


def _score_input(folder: Path) -> Path:
    """Two CSV files of taxi rows, `trip_miles` (a FLOAT feature) written as whole numbers in every row, so
    ExampleGen infers it INT unless the scoring executor says otherwise."""
    folder.mkdir(parents=True)
    for name, rows, skip in (("part-b.csv", 120, 2000), ("part-a.csv", 180, 2200)):
        sample = write_sample(folder.parent / f"sample-{name}", rows=rows, skip=skip)
        with open(sample, newline="") as src, open(folder / name, "w", newline="") as dst:
            reader, writer = csv.reader(src), csv.writer(dst)
            header = next(reader)
            miles = header.index("trip_miles")
            writer.writerow(header)
            for row in reader:
                row[miles] = str(round(float(row[miles]))) if row[miles] else row[miles]
                writer.writerow(row)
        sample.unlink()
    return folder


def _read_csv(text: str):
    rows = list(csv.reader(text.splitlines()))
    return rows[0], rows[1:]


def _serve(endpoint: str, model_uri: str, serving: Path, version: str) -> None:
    """The Trainer's model (Format-Serving/ under its URI) as `<serving>/taxi/<version>/`, as the Pusher lays it out."""
    bucket, prefix = model_uri.split("://", 1)[1].split("/", 1)
    prefix += "/Format-Serving/"
    for key in keys(endpoint, bucket, prefix):
        target = serving / "taxi" / version / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())


def test_the_compiled_scoring_pipeline_scores_as_the_local_score_does(tuned, pipeline_image, s3_endpoint, tmp_path):
    """Served (on the volume, and in a local home): the model the tuned run trained, as version 1."""
    from pipeline.kubeflow_runner import compile_score_job, kubeflow_config, write_spec

    version = "1"
    vol = volume(tmp_path)
    _serve(s3_endpoint, tuned["Trainer"].outputs["model"]["uri"], vol / "serving", version)
    data = _score_input(vol / "score")
    out = tmp_path / "taxi-pipeline-scoring.json"
    write_spec(compile_score_job(kubeflow_config(pipeline_image, beam_workers=1),
                                 f"{storage.MOUNT_PATH}/score", ROOT), out)  # what `compile --score` writes
    job = json.loads(out.read_text())
    results = local_kfp(job, pipeline_image, tmp_path, vol, VERSION).run()

    assert set(results) == {"ScoringInputCheck", "CsvExampleGen", "ServedModel", "BulkInferrer", "ScoreWriter"}
    assert results["ServedModel"].outputs["baseline_model"]["custom_properties"]["serving_version"] == \
        ("string", version)
    inference = results["BulkInferrer"].outputs["inference_result"]["uri"]
    logs = keys(s3_endpoint, BUCKET, inference.split(f"{BUCKET}/", 1)[1] + "/")
    assert any("prediction_logs-" in key for key in logs), logs  # TFX's PredictionLogs, under the pipeline root
    predictions = results["ScoreWriter"].outputs["predictions"]
    assert predictions["uri"].startswith(ROOT + "/")
    header, rows = _read_csv(_object(s3_endpoint, predictions["uri"] + "/predictions.csv").decode())

    home = tmp_path / "home"
    shutil.copytree(vol / "serving" / "taxi" / version, home / "serving" / "taxi" / version)
    assert cli.main(["score", "--data", str(data), "--home", str(home), "--out", str(tmp_path / "local")]) == 0
    local_header, local_rows = _read_csv((tmp_path / "local" / "predictions.csv").read_text())

    assert header == local_header and header[-1] == "probability" and len(rows) == 300
    assert [r[:-1] for r in rows] == [r[:-1] for r in local_rows]  # the same rows, in the same (input) order
    np.testing.assert_allclose([float(r[-1]) for r in rows], [float(r[-1]) for r in local_rows], rtol=0, atol=1e-5)
