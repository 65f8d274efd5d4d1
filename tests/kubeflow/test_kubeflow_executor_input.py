"""kubeflow/executor_input.py against the installed TFX: what the open-source KFP backend sends breaks
TFX's own parser (pinned here, so a TFX that fixes it shows up), and the adapted input parses."""
import json

import pytest

import kubeflow  # noqa: F401  (TF_USE_LEGACY_KERAS)
from kubeflow import executor_input
from kfp_backend import VERSIONS, provision_outputs, record_artifact, runtime_artifact_from_mlmd, session_info

EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\n"
INPUTS_SPEC = {"artifacts": {"examples": {"artifactType": {"instanceSchema": EXAMPLES_SCHEMA}}},
               "parameters": {"exclude_splits": {"parameterType": "STRING"}}}
OUTPUT_DEFINITIONS = {"artifacts": {"statistics": {"artifactType": {
    "instanceSchema": "title: tfx.ExampleStatistics\ntype: object\n"}}}}


def _parse(document: dict):
    """TFX 1.16's own parsing of an ExecutorInput's artifacts (kubeflow_v2_run_executor._run_executor)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as utils

    message = json_format.Parse(json.dumps(document), pipeline_spec_pb2.ExecutorInput(), ignore_unknown_fields=True)
    names = {}
    return (utils.parse_raw_artifact_dict(message.inputs.artifacts, names),
            utils.parse_raw_artifact_dict(message.outputs.artifacts, names))


def _executor_input(version: str) -> dict:
    backend = VERSIONS[version]
    produced = {"uri": "s3://b/root/p/run/CsvExampleGen/u/examples", "type": {"instanceSchema": EXAMPLES_SCHEMA},
                "metadata": {"split_names": '["train", "eval"]', "span": 0}}  # as TFX's executor output says
    record = record_artifact(backend, "examples", produced, session_info(backend, "s3://b/root"))
    upstream = runtime_artifact_from_mlmd(7, record)
    outputs = provision_outputs(backend, "s3://b/root/p/run/StatisticsGen/uuid", OUTPUT_DEFINITIONS)
    return {"inputs": {"artifacts": {"examples": {"artifacts": [upstream]}},
                       "parameterValues": {"exclude_splits": "[]"}},
            "outputs": outputs}


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_tfx_alone_fails_on_what_the_backend_sends(version):
    with pytest.raises((AttributeError, ImportError)):  # tensorflow/tfx#7768; system.Artifact from 2.5.0
        _parse(_executor_input(version))


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_adapted_input_parses_with_the_compiled_types_and_without_the_launchers_logs(version):
    document = _executor_input(version)
    args = ["--executor_class_path", "x.Executor", executor_input.INVOCATION_FLAG, json.dumps(document),
            executor_input.INPUTS_SPEC_FLAG, json.dumps(INPUTS_SPEC), "--direct_num_workers=2"]
    adapted, changes = executor_input.adapt_args(args)
    assert changes["restored input types"] == ["examples"]
    assert changes.get("dropped backend outputs", []) == (["executor-logs"] if VERSIONS[version].publish_logs else [])
    assert adapted[:3] == args[:3] and adapted[4:] == args[4:]
    inputs, outputs = _parse(json.loads(adapted[3]))
    examples = inputs["examples"][0]
    assert type(examples).__name__ == "Examples" and examples.uri.endswith("/examples")
    assert examples.split_names == '["train", "eval"]'
    assert set(outputs) == {"statistics"}


def test_equals_form_and_steps_without_an_executor_input():
    document = _executor_input("2.17.0")
    adapted, changes = executor_input.adapt_args([f"{executor_input.INVOCATION_FLAG}={json.dumps(document)}",
                                                  f"{executor_input.INPUTS_SPEC_FLAG}={json.dumps(INPUTS_SPEC)}"])
    assert adapted[0].startswith(executor_input.INVOCATION_FLAG + "={") and changes
    assert json.loads(adapted[0].split("=", 1)[1])["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == \
        {"instanceSchema": EXAMPLES_SCHEMA}
    for args in (["--serving_model_dir", "/x"], [executor_input.INVOCATION_FLAG, "{not json"]):
        assert executor_input.adapt_args(args) == (args, {})


def test_a_typed_input_is_left_as_sent():
    document = _executor_input("2.17.0")
    document["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] = {"schemaTitle": "tfx.Examples"}
    assert executor_input.restore_input_types(document, INPUTS_SPEC) == []


def test_the_cache_key_parameter_never_reaches_tfx():
    document = _executor_input("2.2.0")
    document["inputs"]["parameterValues"]["input_fingerprint"] = "split:single_split,num_files:1"
    adapted, changes = executor_input.adapt_args([executor_input.INVOCATION_FLAG, json.dumps(document)])
    assert changes["dropped cache-key parameters"] == ["input_fingerprint"]
    assert json.loads(adapted[1])["inputs"]["parameterValues"] == {"exclude_splits": "[]"}


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_tfx_writes_an_executor_output_each_releases_launcher_parses(version, tmp_path):
    """What TFX's entry point writes (translate_executor_output + MessageToJson), checked against the fields
    each release's ExecutorOutput / RuntimeArtifact has (kfp_backend.executor_output_problems)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as utils
    from tfx.types import standard_artifacts

    from kfp_backend import executor_output_problems

    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = "s3://b/root/p/run/StatisticsGen/u/statistics"
    statistics.split_names = '["train", "eval"]'
    output = pipeline_spec_pb2.ExecutorOutput()
    for key, value in utils.translate_executor_output({"statistics": [statistics]}, {}).items():
        output.artifacts[key].CopyFrom(value)
    document = json.loads(json_format.MessageToJson(output))
    assert document["artifacts"]["statistics"]["artifacts"][0]["uri"] == statistics.uri
    assert executor_output_problems(VERSIONS[version], document) == []
    assert executor_output_problems(VERSIONS[version], {**document, "logs": "x"}) == ["unknown field 'logs'"]
