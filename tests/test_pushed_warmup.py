"""The pushed model carries warmup requests built from eval examples, as TFX's InfraValidator writes them.

tfx/components/infra_validator/executor.py `_CreateWarmupModel` and request_builder.py: a copy of the
model with assets.extra/tf_serving_warmup_requests, a TFRecord file of PredictionLogs, one
PredictRequest per example on serving_default (model name set, serialized example as the one input).
A model server replays them on load (tensorflow_serving/servables/tensorflow/saved_model_warmup.cc).
"""
from __future__ import annotations

import pytest

from components.serving_validator import check_model, eval_examples, write_warmup_model


def _pushed_version(config, result):
    pushed = result.nodes["Pusher"].output("pushed_model")
    assert pushed.custom_properties["pushed"].int_value == 1
    return config.serving_model_dir / pushed.custom_properties["pushed_version"].string_value


def _read_logs(path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset([str(path)]):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def test_the_pushed_model_carries_parseable_warmup_requests_from_eval_examples(taxi_pipeline_result):
    import tensorflow as tf

    from serving.util import tensors

    config, result = taxi_pipeline_result
    version_dir = _pushed_version(config, result)
    warmup_file = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    assert warmup_file.is_file()
    logs = _read_logs(warmup_file)
    examples = eval_examples(result.nodes["CsvExampleGen"].output_uri("examples"), 32)
    assert len(logs) == len(examples) == 32
    for log, example in zip(logs, examples):
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert (request.model_spec.name, request.model_spec.signature_name) == (config.model_name, "serving_default")
        assert list(request.inputs) == ["examples"]
        sent = tensors.to_ndarray(request.inputs["examples"])
        assert sent.shape == (1,) and sent[0] == example
        tf.train.Example.FromString(sent[0])  # a real tf.Example
    # The ServingValidator's blessing holds the very model the Pusher pushed (TFX's has_model contract).
    blessing = result.nodes["ServingValidator"].output("blessing")
    assert blessing.custom_properties["has_model"].int_value == 1
    assert blessing.custom_properties["warmup_requests"].int_value == 32
    assert (version_dir / "fingerprint.pb").read_bytes() == (
        next(p for p in (config.pipeline_root).rglob("Format-Serving/fingerprint.pb"))).read_bytes()


def test_our_server_replays_the_pushed_warmup_before_serving(taxi_pipeline_result):
    from prometheus_client.parser import text_string_to_metric_families

    from serving.config import model_config
    from serving.model_servers.server import ModelServer, ServerOptions

    config, result = taxi_pipeline_result
    version_dir = _pushed_version(config, result)
    options = ServerOptions(model_config.single_model_config(config.model_name, str(config.serving_model_dir)),
                            grpc_port=0, rest_port=None, poll_wait_s=0, prometheus_path="/metrics")
    with ModelServer(options) as server:
        assert server.wait_until_available(config.model_name, 120)
        page = server.metrics.render()
    read = {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(page)
            for s in f.samples if s.name == ":tensorflow:serving:model_warmup_records_read_total"}
    assert read == {(("model_path", str(version_dir)), ("status", "OK")): 32}


@pytest.fixture(scope="module")
def trained_model_and_examples(taxi_pipeline_result):
    config, result = taxi_pipeline_result
    examples = eval_examples(result.nodes["CsvExampleGen"].output_uri("examples"), 8)
    return result.nodes["Trainer"].output_uri("model") + "/Format-Serving", examples


def test_a_warmup_file_the_server_rejects_fails_the_serving_check(trained_model_and_examples, tmp_path):
    model_dir, examples = trained_model_and_examples
    path = write_warmup_model(model_dir, str(tmp_path / "stamped"), [])
    with open(path, "wb") as f:
        f.write(b"not a TFRecord file at all")
    problem = check_model(str(tmp_path / "stamped"), examples, "taxi", load_timeout_s=60)
    assert problem.startswith("the model server could not load the model: ")
    assert "Please verify your warmup data is in TFRecord format" in problem


def test_warmup_logs_reject_a_signature_not_taking_serialized_examples(tmp_path):
    from components.serving_validator import warmup_logs
    from serving.testing.sample_models import export_classify_regress_model

    model = export_classify_regress_model(str(tmp_path / "m"))  # serving_default takes x float [None, 1]
    with pytest.raises(ValueError, match="one string input of shape \\[None\\]"):
        warmup_logs(model, [b""], "m")
