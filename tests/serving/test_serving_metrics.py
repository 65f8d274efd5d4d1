"""Prometheus metrics on the REST port (`--monitoring_config_file`), with TF Serving's names and labels.

Specification: tensorflow_serving/config/monitoring_config.proto (the flag's file),
model_servers/http_server.cc (the page on the REST port; every /v1/ request counted),
model_servers/prediction_service_impl.cc (gRPC Predict/Classify/Regress counted; latency when OK),
servables/tensorflow/util.cc (metric names and labels), util/prometheus_exporter.cc (text format).
The scrape is parsed with prometheus_client's own parser.
"""
from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import classification_pb2

from serving.batching.batcher import BatchingOptions
from serving.client import ServingClient
from serving.model_servers import main as serve_cli
from serving_helpers import config_for, http, running_server
from test_serving_warmup import _example, _model, export_counting_model, predict_log


@pytest.fixture(scope="module")
def counting_version(tmp_path_factory):
    return export_counting_model(str(tmp_path_factory.mktemp("counting") / "1"))


def scrape(port, path="/monitoring/prometheus/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@pytest.mark.parametrize("front_end", [
    {"grpc_aio": False},
    {"grpc_aio": True},  # --grpc_aio: Predict on the event loop (plan fast path after the first), the rest in workers
    {"grpc_aio": True, "batching": BatchingOptions(max_batch_size=8, num_batch_threads=1)},  # batched on the loop
], ids=["threads", "aio", "aio-batching"])
def test_the_page_counts_the_requests_just_sent_by_model_api_and_status(tmp_path, counting_version, front_end):
    base = _model(tmp_path, counting_version, [predict_log()] * 3)
    path = str(base / "1")
    with running_server(config_for(counting=str(base)), wait_for=["counting"],
                        prometheus_path="/monitoring/prometheus/metrics", **front_end) as server:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            for _ in range(5):
                client.predict("counting", {"x": np.ones([2, 1], np.float32)})
            for inputs in ({"wrong": np.ones([1, 1], np.float32)}, {"x": np.ones([1, 1], np.int64)}):
                with pytest.raises(grpc.RpcError) as err:
                    client.predict("counting", inputs)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                client.predict("nope", {"x": np.ones([1, 1], np.float32)})
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name, request.model_spec.signature_name = "counting", "classify"
            request.input.example_list.examples.add().ParseFromString(_example(0.5))
            client.prediction.Classify(request, timeout=30)
        assert http(server.rest_port, "/v1/models/counting:predict", {"instances": [[1.0], [2.0]]})[0] == 200
        assert http(server.rest_port, "/v1/models/counting:predict", {"instances": [["a"]]})[0] == 400
        assert http(server.rest_port, "/v1/models/counting")[0] == 200
        text, samples = scrape(server.rest_port)
    assert "# TYPE :tensorflow:serving:request_count counter" in text  # TF Serving's exported name, no _total
    count = ":tensorflow:serving:request_count_total"  # the parser's name for a counter's sample
    assert value(samples, count, model_name="counting", status="OK") == 5 + 1 + 1 + 1  # gRPC 5+1, REST 1+1
    assert value(samples, count, model_name="counting", status="INVALID_ARGUMENT") == 3
    assert value(samples, count, model_name="nope", status="NOT_FOUND") == 1
    latency = ":tensorflow:serving:request_latency_count"  # only successful requests, as TF Serving
    assert value(samples, latency, model_name="counting", API="Predict", entrypoint="GRPC") == 5
    assert value(samples, latency, model_name="counting", API="Classify", entrypoint="GRPC") == 1
    assert value(samples, latency, model_name="counting", API="predict", entrypoint="REST") == 1
    assert value(samples, latency, model_name="counting", API="", entrypoint="REST") == 1  # the status GET
    assert value(samples, ":tensorflow:serving:request_latency_bucket", model_name="counting", API="Predict",
                 entrypoint="GRPC", le="+Inf") == 5
    assert value(samples, ":tensorflow:serving:request_latency_sum", model_name="counting", API="Predict",
                 entrypoint="GRPC") > 0
    # Session runs: 3 warmup + 5 gRPC + 1 REST predicts, 1 classify.
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert value(samples, runtime, model_name="counting", API="Predict", runtime="TF1") == 3 + 5 + 1
    assert value(samples, runtime, model_name="counting", API="Classify", runtime="TF1") == 1
    assert value(samples, ":tensorflow:cc:saved_model:load_attempt_count_total", model_path=path,
                 status="success") == 1
    assert value(samples, ":tensorflow:serving:model_warmup_records_read_total", model_path=path, status="OK") == 3
    assert value(samples, ":tensorflow:serving:model_warmup_latency_count", model_path=path, status="OK") == 1
    by_signature = "standin_serving_request_count_total"
    assert value(samples, by_signature, model_name="counting", API="Predict", signature_name="serving_default",
                 entrypoint="GRPC", status="OK") == 5
    assert value(samples, by_signature, model_name="counting", API="Predict", signature_name="serving_default",
                 entrypoint="GRPC", status="INVALID_ARGUMENT") == 2
    assert value(samples, by_signature, model_name="counting", API="Classify", signature_name="classify",
                 entrypoint="GRPC", status="OK") == 1
    assert value(samples, "standin_serving_model_version_state", model_name="counting", version="1",
                 state="AVAILABLE") == 1


def test_a_failed_load_shows_in_the_version_states_and_load_attempts(tmp_path, counting_version):
    base = _model(tmp_path, counting_version)
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    config = config_for(counting=str(base))
    config.model_config_list.config[0].model_version_policy.all.SetInParent()
    with running_server(config, wait_for=["counting"], max_load_retries=0,
                        prometheus_path="/metrics") as server:
        assert server.manager.wait_until_settled(60)
        _, samples = scrape(server.rest_port, "/metrics")
        assert http(server.rest_port, "/monitoring/prometheus/metrics")[0] == 404  # only the configured path
    assert value(samples, ":tensorflow:cc:saved_model:load_attempt_count_total", model_path=str(base / "2"),
                 status="fail") == 1
    assert value(samples, "standin_serving_model_version_state", model_name="counting", version="2", state="END") == 1
    assert value(samples, "standin_serving_model_version_state", model_name="counting", version="1",
                 state="AVAILABLE") == 1


def test_no_page_without_a_monitoring_config(tmp_path, counting_version):
    base = _model(tmp_path, counting_version)
    with running_server(config_for(counting=str(base)), wait_for=["counting"]) as server:
        assert http(server.rest_port, "/monitoring/prometheus/metrics")[0] == 404


def test_the_flag_reads_tf_servings_monitoring_config_file(tmp_path, counting_version):
    import argparse

    config_file = tmp_path / "monitoring.config"
    config_file.write_text('prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    base = _model(tmp_path, counting_version)
    args = parser.parse_args([f"--model_base_path={base}", f"--monitoring_config_file={config_file}",
                              "--num_request_iterations_for_warmup=3"])
    config, _, _ = serve_cli.resolve_models(args)
    options = serve_cli.server_options(args, config)
    assert options.prometheus_path == "/monitoring/prometheus/metrics"
    assert options.warmup.num_request_iterations == 3 and options.warmup.enabled
    config_file.write_text("prometheus_config { enable: false }")
    assert serve_cli.server_options(args, config).prometheus_path is None
    args = parser.parse_args([f"--model_base_path={base}", "--enable_model_warmup=false"])
    assert serve_cli.server_options(args, config).warmup.enabled is False
    config_file.write_text("prometheus_config { enable: tru }")
    args = parser.parse_args([f"--model_base_path={base}", f"--monitoring_config_file={config_file}"])
    from serving.util.errors import ServerConfigError

    with pytest.raises(ServerConfigError, match="MonitoringConfig"):
        serve_cli.server_options(args, config)


def test_the_docker_line_mounts_the_monitoring_config(tmp_path):
    import argparse

    from serving.model_servers import flags, launcher

    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    config_file = tmp_path / "conf" / "monitoring.config"
    args = parser.parse_args(["--model_name=m", "--model_base_path=/models/m", f"--monitoring_config_file={config_file}",
                              "--num_request_iterations_for_warmup=2"])
    argv = flags.tfserving_argv(args)
    assert f"--monitoring_config_file={config_file}" in argv and "--num_request_iterations_for_warmup=2" in argv
    docker = launcher.docker_command(argv, "m", "/models/m", None, [], 8500, 8501)
    assert f"{config_file.parent}:{config_file.parent}:ro" in docker
