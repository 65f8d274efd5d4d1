"""Fast unit checks of the multi-worker trainer's pieces (no worker processes)."""
import json

import pytest

from trainer_helpers import TrainerExecution
from components.multiworker_trainer import job_spec, local_launcher
from components.multiworker_trainer.executor import TrainerConfigError, TrainerSettings, check_worker_reports


@pytest.mark.parametrize("config, message", [
    ({"workers": 0}, "at least 1, not 0"),
    ({"workers": "2"}, "whole number of at least 1, not '2'"),
    ({"workers": True}, "whole number"),
    ({"workers": 2, "worker_timeout_s": 0}, "positive number of seconds, not 0"),
])
def test_bad_worker_settings_are_one_line_errors(config, message):
    with pytest.raises(TrainerConfigError, match=message):
        TrainerSettings.from_custom_config(config)


def test_settings_choose_the_launcher(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("TRAINER_KUBE_API_URL", raising=False)
    assert not TrainerSettings.from_custom_config(None).uses_tfjob
    assert not TrainerSettings.from_custom_config({"workers": 2, "image": None}).uses_tfjob
    assert TrainerSettings.from_custom_config({"workers": 2, "image": "reg/taxi:1"}).uses_tfjob
    assert not TrainerSettings.from_custom_config({"workers": 1, "image": "reg/taxi:1"}).uses_tfjob  # in process
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert TrainerSettings.from_custom_config({"workers": 2}).uses_tfjob


def test_execution_spec_round_trips_artifacts_and_properties(tmp_path):
    execution = TrainerExecution(tmp_path, workers=2)
    path = job_spec.write_spec(str(tmp_path / "run" / "spec.json"), execution.inputs, execution.outputs,
                               execution.exec_properties)
    inputs, outputs, properties = job_spec.read_spec(path)
    assert properties == execution.exec_properties
    assert [a.uri for a in outputs["model"]] == [execution.outputs["model"][0].uri]
    assert inputs["examples"][0].split_names == json.dumps(["train", "eval"])
    assert type(inputs["examples"][0]).__name__ == "Examples"


def test_missing_spec_says_the_workers_need_the_shared_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="must see the same pipeline root"):
        job_spec.read_spec(str(tmp_path / "nope.json"))


def test_each_local_worker_gets_its_own_tf_config_on_distinct_loopback_ports():
    ports = local_launcher.free_ports(3)
    assert len(set(ports)) == 3
    configs = [local_launcher.worker_env(local_launcher.tf_config(ports, i), base={}) for i in range(3)]
    for index, env in enumerate(configs):
        tf_config = json.loads(env["TF_CONFIG"])
        assert tf_config == {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                             "task": {"type": "worker", "index": index}}
        assert env["TF_USE_LEGACY_KERAS"] == "1"


def test_unsynchronized_worker_reports_fail_the_trainer(tmp_path):
    workers = tmp_path / "workers"
    workers.mkdir()
    for index in (0, 1):
        (workers / f"worker-{index}.json").write_text(json.dumps({"task_index": index, "num_replicas_in_sync": 1}))
    with pytest.raises(RuntimeError, match="did not train in sync: expected num_replicas_in_sync == 2"):
        check_worker_reports(str(tmp_path), 2)
    (workers / "worker-1.json").write_text(json.dumps({"task_index": 1, "num_replicas_in_sync": 2}))
    (workers / "worker-0.json").write_text(json.dumps({"task_index": 0, "num_replicas_in_sync": 2}))
    assert len(check_worker_reports(str(tmp_path), 2)) == 2


def test_pipeline_trainer_runs_this_executor_with_the_configured_workers(tmp_path):
    """`taxi-pipeline run --workers 2` reaches the executor: the pipeline's Trainer uses
    MultiWorkerExecutor and passes workers/loop/timeout/log dir in its custom_config."""
    from pipeline import configs
    from pipeline.pipeline import create_pipeline
    from components.multiworker_trainer.executor import MultiWorkerExecutor

    config = configs.PipelineConfig(home=tmp_path, workers=2, training_loop="custom", worker_timeout_s=321)
    [trainer] = [c for c in create_pipeline(config).components if c.id == "Trainer"]
    assert trainer.executor_spec.executor_class is MultiWorkerExecutor
    settings = TrainerSettings.from_custom_config(json.loads(trainer.exec_properties["custom_config"]))
    assert (settings.workers, settings.worker_timeout_s, settings.log_dir) == (2, 321, str(tmp_path / "logs"))
    assert json.loads(trainer.exec_properties["custom_config"])["training_loop"] == "custom"


def test_a_missing_worker_report_fails_the_trainer_in_one_line_naming_the_worker(tmp_path):
    workers = tmp_path / "workers"
    workers.mkdir()
    (workers / "worker-0.json").write_text(json.dumps({"task_index": 0, "num_replicas_in_sync": 3}))
    with pytest.raises(RuntimeError) as failure:
        check_worker_reports(str(tmp_path), 3)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"trainer workers 1, 2 of 3 wrote no report under {workers}: "), message
    with pytest.raises(RuntimeError, match="^trainer workers 0, 1 of 2 wrote no report"):
        check_worker_reports(str(tmp_path / "elsewhere"), 2)


@pytest.mark.parametrize("value, expected", [
    (None, None),  # unset: the TFJob workers get the Trainer step pod's own
    ([], ()),
    (["regcred"], ("regcred",)),
    ("regcred, mirror", ("regcred", "mirror")),
])
def test_image_pull_secrets_setting(value, expected):
    assert TrainerSettings.from_custom_config({"image_pull_secrets": value}).image_pull_secrets == expected


@pytest.mark.parametrize("value", [[1], ["Not A Name"], {"name": "x"}])
def test_bad_image_pull_secrets_are_one_line_errors(value):
    with pytest.raises(TrainerConfigError, match="image_pull_secrets must be Kubernetes Secret names"):
        TrainerSettings.from_custom_config({"image_pull_secrets": value})


@pytest.mark.parametrize("secrets", [None, ("regcred",)])
def test_pipeline_config_passes_the_image_pull_secrets_to_the_trainer(tmp_path, secrets):
    from pipeline import configs

    config = configs.PipelineConfig(home=tmp_path, kubeflow_image_pull_secrets=secrets)
    custom_config = json.loads(json.dumps(config.trainer_custom_config()))  # as the exec property carries it
    assert TrainerSettings.from_custom_config(custom_config).image_pull_secrets == secrets


def test_the_step_pod_is_named_by_kfp_before_the_hostname(monkeypatch):
    from components.multiworker_trainer import step_pod

    monkeypatch.setenv("HOSTNAME", "custom-hostname")
    monkeypatch.setenv("KFP_POD_NAME", "taxi-pipeline-abc-system-container-impl-123")
    assert step_pod.pod_name() == "taxi-pipeline-abc-system-container-impl-123"
    monkeypatch.delenv("KFP_POD_NAME")
    assert step_pod.pod_name() == "custom-hostname"


def test_a_misspelt_trainer_setting_fails_the_run_before_any_component_starts(monkeypatch, tmp_path, capsys):
    from pipeline import cli, configs

    real = configs.PipelineConfig.trainer_custom_config
    monkeypatch.setattr(configs.PipelineConfig, "trainer_custom_config",
                        lambda self: {**real(self), "learning_rat": 0.01})
    assert cli.main(["run", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "unknown trainer setting(s) 'learning_rat'" in err and "learning_rate" in err
    assert not (tmp_path / "home" / "metadata.db").exists()  # nothing ran
