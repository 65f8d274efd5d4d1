"""`taxi-pipeline compile`: the real pipeline compiled with KubeflowV2DagRunner, checked as KFP sees it."""
import importlib
import importlib.util
import json
from pathlib import Path

import pytest
from kfp_testdata import IMAGE, PIPELINE_ROOT, TRAIN_STEPS, WORKERS, compiled_job, compiled_spec_path  # noqa: F401
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from kubeflow import package, spec_compat, storage
from pipeline import configs
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
PIPELINE_STEPS = ["CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "Transform",
                  "Trainer", "Evaluator", "Pusher"]


def tasks(job):
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def param(job, task, name):
    """A task's constant parameter as the launcher hands it to the executor."""
    return tasks(job)[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]  # schema 2.1


def upstream(job, task):
    """Every task `task` transitively waits for."""
    seen, todo = set(), list(tasks(job)[task].get("dependentTasks", []))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(tasks(job)[name].get("dependentTasks", []))
    return seen


def container(job, task):
    label = job["pipelineSpec"]["components"][tasks(job)[task]["componentRef"]["name"]]["executorLabel"]
    return job["pipelineSpec"]["deploymentSpec"]["executors"][label]["container"]


def test_all_steps_present_and_wired_in_order(compiled_job):
    assert set(PIPELINE_STEPS) <= set(tasks(compiled_job))
    assert upstream(compiled_job, "CsvExampleGen") == {"InputFingerprint"}  # KFP's cache sees the data
    assert "CsvExampleGen" in upstream(compiled_job, "StatisticsGen")
    assert {"StatisticsGen", "ImportSchemaGen"} <= upstream(compiled_job, "ExampleValidator")
    assert {"CsvExampleGen", "ImportSchemaGen"} <= upstream(compiled_job, "Transform")
    assert {"Transform", "ImportSchemaGen"} <= upstream(compiled_job, "Trainer")
    evaluator_inputs = upstream(compiled_job, "Evaluator")
    assert "Trainer" in evaluator_inputs
    # Resolver executors are Vertex-only (the open-source argo compiler rejects them): the baseline of the
    # Evaluator and the DriftCheck is the model serving now (components/serving_baseline.py).
    assert not any("resolver" in name for name in tasks(compiled_job))
    for step in ("Evaluator", "DriftCheck"):
        assert tasks(compiled_job)[step]["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"] == {
            "outputArtifactKey": "baseline_model", "producerTask": "ServingBaseline"}
    assert tasks(compiled_job)["ServingBaseline"]["inputs"]["parameters"]["serving_model_dir"]["runtimeValue"][
        "constant"] == str(storage.SERVING_BASE / "taxi")
    assert {"Evaluator", "Trainer"} <= upstream(compiled_job, "Pusher")
    # The main chain is a strict order: each step runs after the one before it.
    chain = ["CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"]
    for before, after in zip(chain, chain[1:]):
        assert before in upstream(compiled_job, after) and after not in upstream(compiled_job, before)


def test_every_step_runs_the_image_through_tfx_v2_entrypoint(compiled_job):
    executors = compiled_job["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {label: e["container"] for label, e in executors.items()
                  if "container" in e and label != "InputFingerprint_executor"}  # ours: its own test below
    assert len(containers) >= len(PIPELINE_STEPS)
    for label, spec in containers.items():
        assert spec["image"] == IMAGE, label
        # TFX's entry point, behind ours (minio:// roots, S3 settings, exit status: kubeflow/entrypoint.py)
        assert spec["command"] == ["python", "-m", "kubeflow.entrypoint", kubeflow_v2_dag_runner.KUBEFLOW_TFX_CMD[2]], label
        # The executor class must be importable from what the image installs.
        class_path = spec["args"][spec["args"].index("--executor_class_path") + 1]
        module, _, cls = class_path.rpartition(".")
        assert module.split(".")[0] in {"tfx", "components", "trainer_module", "pipeline"}, class_path
        assert hasattr(importlib.import_module(module), cls), class_path
    # The entry-point modules the image must provide.
    for module in ("tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
                   "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"):
        assert importlib.util.find_spec(module) is not None, module


def test_code_is_reached_by_module_path(compiled_job):
    assert param(compiled_job, "Trainer", "run_fn") == "trainer_module.run.run_fn"
    assert param(compiled_job, "Transform", "preprocessing_fn") == "trainer_module.preprocessing.preprocessing_fn"
    for task in ("Trainer", "Transform"):
        assert "module_file" not in tasks(compiled_job)[task]["inputs"]["parameters"]
        assert "module_path" not in tasks(compiled_job)[task]["inputs"]["parameters"]


def test_trainer_custom_config_selects_the_tfjob_launcher(compiled_job):
    custom = json.loads(param(compiled_job, "Trainer", "custom_config"))
    assert custom["workers"] == WORKERS
    assert custom["image"] == IMAGE
    assert custom["namespace"] == configs.PipelineConfig.kubeflow_namespace
    assert custom["training_loop"] == "custom"
    assert custom["log_dir"].startswith(str(storage.MOUNT_PATH) + "/")
    assert json.loads(param(compiled_job, "Trainer", "train_args"))["num_steps"] == TRAIN_STEPS


def test_the_evaluator_runs_on_two_beam_processes_and_the_other_steps_on_one(compiled_job):
    """Where more processes pay (pipeline/beam_parallelism.py): the Evaluator, its records dealt out among them."""
    def mode(task):
        args = container(compiled_job, task)["args"]
        modes = [a.split("=", 1)[1] for a in args if a.startswith("--direct_running_mode=")]
        workers = [a.split("=", 1)[1] for a in args if a.startswith("--direct_num_workers=")]
        return modes[-1], workers[-1]  # TFX puts a step's own options after the pipeline's: the last wins

    assert mode("Evaluator") == ("multi_processing", "2")
    for task in ["CsvExampleGen", "StatisticsGen", "Transform"]:
        assert mode(task) == ("in_memory", "1"), task
    assert "module_path" not in tasks(compiled_job)["Evaluator"]["inputs"]["parameters"]


def test_paths_are_in_cluster_not_this_checkout(compiled_job):
    assert param(compiled_job, "CsvExampleGen", "input_base") == str(storage.DATA_DIR)
    assert param(compiled_job, "ImportSchemaGen", "schema_file") == str(storage.IMAGE_SCHEMA_PATH)
    push = json.loads(param(compiled_job, "Pusher", "push_destination"))
    assert push["filesystem"]["base_directory"] == f"{storage.SERVING_BASE}/{configs.MODEL_NAME}"
    text = json.dumps(compiled_job)
    assert str(REPO) not in text, "the spec names a path of the compiling machine"
    assert str(configs.default_home()) not in text


def test_pipeline_root_is_the_object_store_given(compiled_job):
    assert compiled_job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT
    assert compiled_job["pipelineSpec"]["defaultPipelineRoot"] == PIPELINE_ROOT


def test_without_pipeline_root_the_cluster_default_applies(compiled_job):
    from pipeline.kubeflow_runner import compile_job, kubeflow_config

    job = compile_job(kubeflow_config(IMAGE))  # TFX already imported by the fixture: fast
    assert "gcsOutputDirectory" not in job["runtimeConfig"]
    assert "defaultPipelineRoot" not in job["pipelineSpec"]
    assert set(tasks(job)) == set(tasks(compiled_job))


def test_yaml_output_is_a_kfp_package_with_the_volume(compiled_job, tmp_path):
    from kfp.client import client as kfp_client

    from pipeline.kubeflow_runner import write_spec

    out = tmp_path / "taxi.yaml"
    write_spec(compiled_job, out)
    doc = kfp_client._extract_pipeline_yaml(str(out))  # what kfp.Client itself will read
    assert set(doc.pipeline_spec.root.dag.tasks) == set(tasks(compiled_job))
    mounts = json.loads(json.dumps(doc.to_dict()["platform_spec"]))["platforms"]["kubernetes"]
    executors = mounts["deploymentSpec"]["executors"]
    assert set(executors) == set(package.container_executors(compiled_job["pipelineSpec"]))
    for label, config in executors.items():
        assert config["pvcMount"] == [{"constant": storage.PVC_NAME, "mountPath": str(storage.MOUNT_PATH)}]


@pytest.mark.parametrize("argv, fragment", [
    (["--image", "Not An Image"], "--image"),
    (["--image", IMAGE, "--pipeline-root", "/mnt/taxi/pipeline_root"], "--pipeline-root"),
    (["--image", IMAGE, "--pipeline-root", "file:///tmp/root"], "--pipeline-root"),
    (["--image", IMAGE, "--pipeline-root", "s3://"], "--pipeline-root"),
    (["--image", IMAGE, "--data", "data/simple"], "--data"),
    (["--image", IMAGE, "--serving-base", "gs://bucket/serving"], "--serving-base"),
    (["--image", IMAGE, "--workers", "0"], "workers"),
    (["--image", IMAGE, "--output", "spec.txt"], "--output"),
])
def test_bad_input_is_one_readable_line(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compile"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err
    assert not list(tmp_path.iterdir()), "nothing is written on bad input"


def test_compile_takes_home_as_make_compile_passes_it(tmp_path, capsys):
    """`make compile ARGS="--image example.org/taxi:1"` runs `compile --home $(OUT) --image ...`."""
    assert main(["compile", "--home", str(tmp_path), "--image", "example.org/taxi:1"]) == 0
    spec = tmp_path / "kubeflow" / "taxi-pipeline.json"
    assert spec.is_file() and f"wrote {spec}" in capsys.readouterr().out


def test_spec_is_what_the_open_source_kfp_driver_reads(compiled_job):
    from kubeflow import spec_compat

    assert compiled_job["pipelineSpec"]["schemaVersion"] == "2.1.0"
    spec_compat.check(compiled_job["pipelineSpec"])  # raises on constantValue, missing parameterType, resolvers


@pytest.mark.parametrize("root", ["s3://mlpipeline/taxi", "minio://mlpipeline/v2/artifacts"])
def test_s3_and_minio_pipeline_roots(root, tmp_path):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), "--pipeline-root", root + "/"]) == 0
    job = json.loads(out.read_text())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == root


def test_no_cache_compiles_every_step_with_caching_off(compiled_job, tmp_path):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), "--no-cache"]) == 0
    compiled = tasks(json.loads(out.read_text()))
    assert set(compiled) == set(tasks(compiled_job))
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in compiled.values())
    assert all(task["cachingOptions"]["enableCache"] for name, task in tasks(compiled_job).items()
               if name not in spec_compat.VOLUME_STATE_TASKS)


def test_s3_endpoint_reaches_every_step_as_aws_endpoint_url(tmp_path, capsys):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), "--pipeline-root", "s3://b/r",
                 "--s3-endpoint", "http://minio.example:9000"]) == 0
    executors = json.loads(out.read_text())["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert containers and all({"name": "AWS_ENDPOINT_URL", "value": "http://minio.example:9000"} in c["env"]
                              for c in containers)
    assert main(["compile", "--image", IMAGE, "--output", str(tmp_path / "x.json"),
                 "--s3-endpoint", "minio.example:9000"]) == 2
    assert "--s3-endpoint" in capsys.readouterr().err


def test_the_input_datas_fingerprint_is_in_example_gens_cache_key(compiled_job):
    """KFP's cache key sees a task's parameters, not the files it reads (kubeflow/input_fingerprint.py)."""
    fingerprint = tasks(compiled_job)["InputFingerprint"]
    assert not fingerprint.get("cachingOptions", {}).get("enableCache")
    # The model serving now is read off the volume too: a cached ServingBaseline would keep the first run's.
    assert not tasks(compiled_job)["ServingBaseline"].get("cachingOptions", {}).get("enableCache")
    assert all(task["cachingOptions"]["enableCache"] for name, task in tasks(compiled_job).items()
               if name not in ("InputFingerprint", "ServingBaseline"))
    example_gen = tasks(compiled_job)["CsvExampleGen"]
    assert example_gen["inputs"]["parameters"]["input_fingerprint"] == {
        "taskOutputParameter": {"producerTask": "InputFingerprint", "outputParameterKey": "fingerprint"}}
    assert fingerprint["inputs"]["parameters"]["input_base"] == example_gen["inputs"]["parameters"]["input_base"]
    command = container(compiled_job, "InputFingerprint")
    assert command["command"][-1] == "kubeflow.input_fingerprint" and command["image"] == IMAGE


def test_the_fingerprint_changes_with_the_data_and_only_then(tmp_path):
    from kubeflow import input_fingerprint

    config = '{"splits": [{"name": "single_split", "pattern": "*"}]}'
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("a,b\n1,2\n")
    out = tmp_path / "out" / "fingerprint"
    assert input_fingerprint.main(["--input-base", str(data), "--input-config", config, "--output", str(out)]) == 0
    first = out.read_text()
    assert input_fingerprint.fingerprint(str(data), config) == first
    (data / "data.csv").write_text("a,b\n1,2\n3,4\n")
    assert input_fingerprint.fingerprint(str(data), config) != first
    # No files: a fingerprint all the same; CsvExampleGen then fails with its own message, naming the folder.
    assert input_fingerprint.main(["--input-base", str(tmp_path / "none"), "--input-config", config,
                                   "--output", str(out)]) == 0 and "num_files:0" in out.read_text()


def test_image_pull_secrets_reach_the_trainers_config(tmp_path):
    out = tmp_path / "spec.json"
    assert main(["compile", "--image", IMAGE, "--output", str(out), "--workers", "2",
                 "--image-pull-secret", "regcred", "--image-pull-secret", "other"]) == 0
    trainer = tasks(json.loads(out.read_text()))["Trainer"]["inputs"]["parameters"]
    config = json.loads(trainer["custom_config"]["runtimeValue"]["constant"])
    assert config["image_pull_secrets"] == ["regcred", "other"]
