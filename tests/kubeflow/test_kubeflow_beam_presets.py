"""The Beam runner presets reach every Beam-using step of the compiled Kubeflow spec (and nothing of the DirectRunner)."""
import json

import pytest

from kfp_testdata import IMAGE  # noqa: F401
from pipeline.cli import main

BEAM_STEPS = ["CsvExampleGen", "StatisticsGen", "Transform", "Evaluator"]  # the components that run Beam


def _compile(tmp_path, *flags):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), *flags]) == 0
    return json.loads(out.read_text())


def _args(job, task):
    spec = job["pipelineSpec"]
    component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["args"]


def test_dataflow_preset_reaches_every_beam_step(tmp_path):
    job = _compile(tmp_path, "--beam-runner", "DataflowRunner", "--beam-option", "project=taxi-project",
                   "--beam-option", "region=europe-west4", "--beam-option", "temp_location=gs://taxi-bucket/tmp",
                   "--beam-option", "max_num_workers=8")
    expected = ["--runner=DataflowRunner", "--project=taxi-project", "--region=europe-west4",
                "--temp_location=gs://taxi-bucket/tmp",
                f"--sdk_container_image={IMAGE}",  # the workers run the pipeline image: our modules import there
                "--max_num_workers=8"]
    for task in BEAM_STEPS:
        args = _args(job, task)
        beam_args = [a for a in args if a.startswith("--") and "=" in a]
        for arg in expected:
            assert arg in args, (task, arg)
        assert not [a for a in args if a.startswith("--direct_")], (task, beam_args)


@pytest.mark.parametrize("runner, flags, expected", [
    ("FlinkRunner", ["--beam-option", "flink_master=flink-jobmanager:8081"],
     ["--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081", "--environment_type=DOCKER",
      f"--environment_config={IMAGE}"]),
    ("SparkRunner", ["--beam-option", "spark_master_url=spark://spark-master:7077", "--beam-environment", "external",
                     "--beam-environment-config", "localhost:50000"],
     ["--runner=SparkRunner", "--spark_master_url=spark://spark-master:7077", "--environment_type=EXTERNAL",
      "--environment_config=localhost:50000"]),
    ("portable", ["--beam-job-endpoint", "beam-job-server:8099"],
     ["--runner=PortableRunner", "--job_endpoint=beam-job-server:8099", "--environment_type=DOCKER",
      f"--environment_config={IMAGE}"]),
])
def test_flink_spark_and_portable_presets_reach_every_beam_step(tmp_path, runner, flags, expected):
    job = _compile(tmp_path, "--beam-runner", runner, *flags)
    for task in BEAM_STEPS:
        for arg in expected:
            assert arg in _args(job, task), (task, arg)


def test_incomplete_preset_is_bad_input_naming_the_missing_option(tmp_path, capsys):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), "--beam-runner", "DataflowRunner",
                 "--beam-option", "project=p"]) == 2
    err = capsys.readouterr().err
    assert "--beam-option region=..." in err and "--beam-option temp_location=..." in err
    assert not out.exists()
