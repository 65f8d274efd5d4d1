"""The Beam runner presets: the pipeline options each writes, and the settings each refuses to guess."""
import tempfile

import pytest
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

from pipeline import configs
from pipeline.beam_runners import BeamConfigError, pipeline_args, beam_steps


def test_direct_runner_is_the_default_in_process_or_multi_process():
    assert configs.PipelineConfig().beam_pipeline_args() == [
        "--direct_running_mode=in_memory", "--direct_num_workers=1", "--pickle_library=cloudpickle"]
    assert configs.PipelineConfig(beam_mode="multi_processing", beam_workers=3).beam_pipeline_args() == [
        "--direct_running_mode=multi_processing", "--direct_num_workers=3", "--pickle_library=cloudpickle"]


def test_portable_runner_against_a_job_service_and_a_worker_pool():
    config = configs.PipelineConfig(beam_runner="portable", beam_job_endpoint="localhost:8099",
                                    beam_environment="EXTERNAL", beam_environment_config="localhost:50000",
                                    beam_options=("sdk_worker_parallelism=1",))
    assert config.beam_pipeline_args() == [
        "--runner=PortableRunner", "--pickle_library=cloudpickle", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL",
        "--environment_config=localhost:50000", "--job_server_timeout=86400", "--sdk_worker_parallelism=1"]
    # No image and no environment: LOOPBACK (workers in this process, which has our modules).
    assert pipeline_args("portable", job_endpoint="localhost:8099") == [
        "--runner=PortableRunner", "--pickle_library=cloudpickle", "--job_endpoint=localhost:8099", "--environment_type=LOOPBACK",
        "--job_server_timeout=86400"]


def test_presets_refuse_workers_that_cannot_import_our_modules():
    with pytest.raises(BeamConfigError, match="tfx#4948"):
        pipeline_args("DataflowRunner", options=["project=p", "region=r", "temp_location=gs://b/t"])
    with pytest.raises(BeamConfigError, match="tfx#4948"):
        pipeline_args("FlinkRunner", options=["flink_master=host:8081"])
    with pytest.raises(BeamConfigError, match="needs --beam-environment-config"):
        pipeline_args("portable", job_endpoint="h:1", environment="EXTERNAL")


def test_bad_settings_are_config_errors_with_the_flag_to_give():
    with pytest.raises(ValueError, match="--beam-job-endpoint HOST:PORT"):
        configs.PipelineConfig(beam_runner="portable", beam_environment="LOOPBACK")
    with pytest.raises(ValueError, match="gs://"):
        pipeline_args("DataflowRunner", image="img", options=["project=p", "region=r", "temp_location=/tmp"])
    with pytest.raises(ValueError, match="need --beam-runner portable"):
        configs.PipelineConfig(beam_job_endpoint="localhost:8099")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        configs.PipelineConfig(beam_runner="SparkRunner", beam_options=("spark_master_url",))
    # A given option replaces the preset's value, and the Spark preset takes a worker image.
    assert pipeline_args("SparkRunner", image="img", options=["spark_master_url=spark://m:7077", "environment_type=PROCESS",
                                                              'environment_config={"command": "/opt/apache/beam/boot"}']) == [
        "--runner=SparkRunner", "--pickle_library=cloudpickle", "--environment_type=PROCESS", '--environment_config={"command": "/opt/apache/beam/boot"}',
        "--job_server_timeout=86400", "--spark_master_url=spark://m:7077"]


def test_every_preset_pickles_with_cloudpickle_unless_told_otherwise():
    """Beam reads `pickle_library` from the options it is given (apache_beam/options/pipeline_options.py) and sets
    its pickler from them at submission and in every SDK worker (apache_beam/runners/worker/sdk_worker_main.py)."""
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    presets = [configs.PipelineConfig().beam_pipeline_args(), pipeline_args("portable", job_endpoint="h:1"),
               pipeline_args("FlinkRunner", image="img", options=["flink_master=h:8081"])]
    for args in presets:
        assert PipelineOptions(args).view_as(SetupOptions).pickle_library == "cloudpickle", args
    dill = configs.PipelineConfig(beam_options=("pickle_library=dill",)).beam_pipeline_args()
    assert PipelineOptions(dill).view_as(SetupOptions).pickle_library == "dill"


class BeamExecutor(BaseBeamExecutor):
    """The base of StatisticsGen's, Transform's and the Evaluator's executors, with a Do that does nothing."""

    def Do(self, input_dict, output_dict, exec_properties):
        pass


def test_beam_components_do_not_package_tfx_for_workers_that_have_it(tmp_path, monkeypatch):
    """TFX's Beam executors build an sdist of TFX itself in a /tmp folder they never delete, unless told not to."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TFX's mkdtemp() puts its copy of TFX
    args = configs.PipelineConfig().beam_pipeline_args()

    def executor_args():
        context = BaseBeamExecutor.Context(beam_pipeline_args=args, tmp_dir=str(tmp_path / "executor"), unique_id="1")
        return BeamExecutor(context)._beam_pipeline_args

    with beam_steps():
        given = executor_args()
    assert given[:len(args)] == args and not [a for a in given if a.startswith("--extra_package")]
    assert list(tmp_path.glob("*/build/tfx")) == []
    # Without it (TFX as it comes): an --extra_package sdist, and a copy of TFX left behind.
    unpatched = executor_args()
    assert [a for a in unpatched if a.startswith("--extra_package=")] and list(tmp_path.glob("*/build/tfx"))
