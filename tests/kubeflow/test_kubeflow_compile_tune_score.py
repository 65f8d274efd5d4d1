"""`compile --tune` and `compile --score`: the Tuner and the scoring pipeline in the compiled spec, checked
on the JSON; and the scoring ExampleGen's numbering, on Beam's DirectRunner."""
import csv
import json

import pytest
from kfp_testdata import IMAGE, PIPELINE_ROOT

from components import arrow_csv_example_gen as csv_gen
from components import scoring_csv_example_gen as scoring_gen
from kubeflow import spec_compat, storage
from pipeline.cli import main
from pipeline.score_pipeline import KUBEFLOW_NODES

DATA = f"{storage.MOUNT_PATH}/score/2026-12-06"


def _compile(tmp_path, *flags):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), "--pipeline-root", PIPELINE_ROOT, *flags]) == 0
    return json.loads(out.read_text())["pipelineSpec"]


def _executor(spec, task):
    label = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def _param(spec, task, name):
    return spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_compile_tune_puts_the_tuner_before_the_trainer_and_the_trainer_takes_its_best(tmp_path):
    spec = _compile(tmp_path, "--tune", "--tune-trials", "2", "--tune-steps", "40")
    tasks = spec["root"]["dag"]["tasks"]
    tuner = _executor(spec, "Tuner")
    assert tuner["image"] == IMAGE and tuner["command"][:3] == spec_compat.ENTRYPOINT
    assert tuner["args"][tuner["args"].index("--executor_class_path") + 1] == "tfx.components.tuner.executor.Executor"
    assert _param(spec, "Tuner", "tuner_fn") == "trainer_module.tuning.tuner_fn"
    assert json.loads(_param(spec, "Tuner", "train_args")) == {"num_steps": 40}  # per trial
    assert json.loads(_param(spec, "Tuner", "custom_config"))["tune_trials"] == 2
    for key, producer in (("examples", "CsvExampleGen"), ("transform_graph", "Transform"), ("schema", "ImportSchemaGen")):
        assert tasks["Tuner"]["inputs"]["artifacts"][key]["taskOutputArtifact"]["producerTask"] == producer
    assert tasks["Trainer"]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"] == {
        "outputArtifactKey": "best_hyperparameters", "producerTask": "Tuner"}
    assert spec_compat.resolver_tasks(spec) == []


def test_compile_without_tune_has_no_tuner_and_the_trainer_its_defaults(tmp_path):
    spec = _compile(tmp_path)
    assert "Tuner" not in spec["root"]["dag"]["tasks"]
    assert "hyperparameters" not in spec["root"]["dag"]["tasks"]["Trainer"]["inputs"].get("artifacts", {})


def test_compile_score_writes_the_scoring_pipeline_as_its_own_spec(tmp_path):
    spec = _compile(tmp_path, "--score", "--data", DATA, "--format", "parquet")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(KUBEFLOW_NODES)  # no InputFingerprint: nothing of it is cached
    assert spec["pipelineInfo"]["name"] == "taxi-pipeline-scoring"
    assert tasks["CsvExampleGen"]["dependentTasks"] == ["ScoringInputCheck"]  # bad input stops it first
    assert _param(spec, "CsvExampleGen", "input_base") == DATA
    assert _executor(spec, "CsvExampleGen")["args"][1] == "components.scoring_csv_example_gen.Executor"
    assert _param(spec, "ServedModel", "serving_model_dir") == f"{storage.SERVING_BASE}/taxi"
    assert tasks["BulkInferrer"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "baseline_model", "producerTask": "ServedModel"}
    assert tasks["ScoreWriter"]["inputs"]["artifacts"]["inference_result"]["taskOutputArtifact"]["producerTask"] == \
        "BulkInferrer"
    assert _param(spec, "ScoreWriter", "output_format") == "parquet"
    assert _param(spec, "ScoreWriter", "schema_path") == str(storage.IMAGE_SCHEMA_PATH)
    # Never from KFP's cache: ServedModel reads the volume (as ServingBaseline), and the pipeline is compiled
    # with caching off: the driver reuses a task only when `GetCachingOptions().GetEnableCache()`, false for an
    # absent or empty cachingOptions (kubeflow/pipelines 2.17.0 backend/src/v2/driver/cache.go:120, k8s.go:974).
    assert tasks["ServedModel"]["cachingOptions"] == {}
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert {_executor(spec, t)["image"] for t in tasks} == {IMAGE}


@pytest.mark.parametrize("flags, fragment", [
    (["--score"], "--score needs --data"),
    (["--score", "--data", "score/rows"], "must be an absolute path"),
    (["--score", "--data", DATA, "--workers", "2"], "--workers is for the training pipeline"),
    (["--score", "--data", DATA, "--tune"], "--tune is for the training pipeline"),
    (["--format", "parquet"], "--format is for --score"),
])
def test_compile_score_refuses_what_does_not_apply_in_one_line(tmp_path, capsys, flags, fragment):
    status = main(["compile", "--image", IMAGE, "--output", str(tmp_path / "s.json"), *flags])
    err = capsys.readouterr().err
    assert status == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)


def test_the_scoring_example_gen_numbers_rows_in_input_order_and_writes_float_features_as_floats(tmp_path):
    import apache_beam as beam
    import tensorflow as tf
    from apache_beam.testing.util import assert_that

    header = ["fare", "trip_miles", "company"]
    _write(tmp_path / "b.csv", header, [["7", "1", "x"], ["8", "", "y"]])
    _write(tmp_path / "a.csv", header, [["5", "2", "z"]] * 3)  # sorted first: rows 0-2
    (tmp_path / ".a.csv.swp").write_text("not input")  # hidden: not input, as score_input.read lists files
    (tmp_path / "empty").mkdir()
    assert set(scoring_gen.float_features()) >= {"fare", "trip_miles"}

    def check(records):
        examples = [tf.train.Example.FromString(r).features.feature for r in records]
        by_row = {e[scoring_gen.ROW_COLUMN].int64_list.value[0]: e for e in examples}
        assert sorted(by_row) == [0, 1, 2, 3, 4]
        assert list(by_row[3]["fare"].float_list.value) == [7.0]  # "7": a float, as the model parses fare
        assert list(by_row[4]["trip_miles"].float_list.value) == []  # empty stays missing
        assert list(by_row[0]["trip_miles"].float_list.value) == [2.0]
        assert by_row[4]["company"].bytes_list.value == [b"y"]

    with beam.Pipeline() as p:
        records = p | scoring_gen._NumberedCsvToExample({"input_base": str(tmp_path)}, "*")
        assert_that(records | beam.combiners.ToList(), lambda lists: check(lists[0]))


def test_scoring_kinds_leave_non_schema_columns_and_floats_as_inferred():
    kinds = scoring_gen.scoring_kinds({"fare": csv_gen.INT, "trip_seconds": csv_gen.INT, "tips": csv_gen.FLOAT},
                                      ["fare", "tips"])
    assert kinds == {"fare": csv_gen.FLOAT, "trip_seconds": csv_gen.INT, "tips": csv_gen.FLOAT,
                     scoring_gen.ROW_COLUMN: csv_gen.INT}


def test_the_scoring_input_check_refuses_files_in_sub_folders_and_bad_input_in_one_line(tmp_path):
    from pipeline.errors import UserError
    from pipeline.score_steps import check_input
    from tests_support import write_sample

    from trainer_module.features import SCHEMA_PATH

    write_sample(tmp_path / "score" / "a.csv", rows=5)
    assert check_input(str(tmp_path / "score"), str(SCHEMA_PATH)).rows == 5
    write_sample(tmp_path / "score" / "later" / "b.csv", rows=5)
    with pytest.raises(UserError, match="later/b.csv is in a sub-folder"):
        check_input(str(tmp_path / "score"), str(SCHEMA_PATH))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.csv").write_text("fare,company\n1.0,x\n")
    with pytest.raises(UserError, match="lacks column"):
        check_input(str(tmp_path / "bad"), str(SCHEMA_PATH))
