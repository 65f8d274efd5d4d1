"""Request logging (serving/core/request_logger.py) on its own: sampling, records, config updates."""
from __future__ import annotations

import random

import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.core.request_logger import RequestLogger, RequestLoggingError, ServerRequestLogger, read_logs


def _config(prefix, rate, name="m"):
    return text_format.Parse(f"""model_config_list {{ config {{ name: "{name}" base_path: "/x"
        logging_config {{ log_collector_config {{ filename_prefix: "{prefix}" }}
                          sampling_config {{ sampling_rate: {rate} }} }} }} }}""",
                             model_server_config_pb2.ModelServerConfig())


def _exchange(name="m", version=7):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].float_val.append(1.5)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.outputs["y"].float_val.append(0.25)
    return request, response


def test_sampled_requests_become_prediction_logs_with_the_answering_version(tmp_path):
    config = _config(tmp_path / "logs" / "req", 0.5).model_config_list.config[0].logging_config
    logger = RequestLogger(config, ["serve"], rng=random.Random(1))
    logged = sum(logger.log("predict", *_exchange()) for _ in range(400))
    logger.close()
    assert 150 < logged < 250  # about half
    entries = list(read_logs([logger.collector.path]))
    assert len(entries) == logged
    assert entries[0].log_metadata.model_spec.version.value == 7
    assert entries[0].log_metadata.sampling_config.sampling_rate == 0.5
    assert list(entries[0].log_metadata.saved_model_tags) == ["serve"]
    assert entries[0].predict_log.request.inputs["x"].float_val == [1.5]
    assert entries[0].predict_log.response.outputs["y"].float_val == [0.25]


def test_server_logger_follows_the_config_and_ignores_other_models(tmp_path):
    server = ServerRequestLogger()
    server.update(_config(tmp_path / "a", 1.0))
    server.log("predict", *_exchange("other"))
    server.log("predict", *_exchange("m"))
    first = server._by_model["m"][0]
    server.update(_config(tmp_path / "a", 1.0))  # the same logging_config keeps its logger (and file)
    assert server._by_model["m"][0] is first
    server.update(model_server_config_pb2.ModelServerConfig())  # logging switched off
    server.log("predict", *_exchange("m"))
    server.close()
    assert len(list(read_logs([first.collector.path]))) == 1


def test_bad_logging_configs_are_refused(tmp_path):
    config = _config(tmp_path / "a", 1.5).model_config_list.config[0].logging_config
    with pytest.raises(RequestLoggingError, match="sampling_rate"):
        RequestLogger(config)
    config = _config(tmp_path / "a", 1.0).model_config_list.config[0].logging_config
    config.log_collector_config.type = "kafka"
    with pytest.raises(RequestLoggingError, match="Cannot find LogCollector::Factory for type: 'kafka'"):
        RequestLogger(config)
