"""`taxi-pipeline serve` / `predict`, the demo, model config files and TLS, as a user runs them."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from pipeline import serve_cli
from serving.config import model_config
from serving.model_servers import flags
from serving.util.errors import ServerConfigError
from serving_helpers import REPO_ROOT, config_for, running_server, taxi_rows


def _serve_args(*argv):
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_tf_serving_flags_in_both_spellings_and_back():
    args = _serve_args("--port=9000", "--rest_api_port=0", "--model_name=m", "--model_base_path=/models/m",
                       "--enable_batching", "--file-system-poll-wait-seconds", "5", "--grpc_max_threads=8")
    assert (args.port, args.rest_api_port, args.model_name, args.enable_batching) == (9000, 0, "m", True)
    assert args.file_system_poll_wait_seconds == 5.0
    assert flags.tfserving_argv(args) == ["--port=9000", "--rest_api_port=0", "--model_name=m",
                                          "--model_base_path=/models/m", "--enable_batching=true",
                                          "--file_system_poll_wait_seconds=5", "--grpc_max_threads=8"]
    assert _serve_args("--enable_batching=false").enable_batching is False


def test_docker_line_and_real_binary_get_the_same_flags(tmp_path, monkeypatch, capsys):
    base = tmp_path / "models" / "m"
    (base / "1").mkdir(parents=True)
    record = tmp_path / "argv.json"
    fake = tmp_path / "bin" / "tensorflow_model_server"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    args = _serve_args("--model_name=m", f"--model_base_path={base}", "--port=8600", "--enable_batching")
    assert serve_cli.main(args) == 0
    assert json.loads(record.read_text()) == ["--port=8600", "--rest_api_port=8501", "--model_name=m",
                                              f"--model_base_path={base}", "--enable_batching=true"]
    out = capsys.readouterr().out
    assert (f"docker run --rm -p 8600:8500 -p 8501:8501 -v {base}:/models/m:ro -e MODEL_NAME=m "
            "tensorflow/serving:2.16.1 --rest_api_port=8501 --enable_batching=true") in out


@pytest.mark.parametrize("argv,message", [
    (["--model_base_path=/nonexistent/m"], "does not exist"),
    (["--model_config_file=/nonexistent.config"], "cannot read model config file"),
    (["--model_config_file=x", "--model_name=m"], "either --model_config_file or"),
    (["--home=/nonexistent-home"], "no model at /nonexistent-home/serving/taxi: run `taxi-pipeline run` first"),
    (["--home=/nonexistent-home", "--model_name=other"], "no model at /nonexistent-home/serving/other"),
])
def test_serve_refuses_unusable_model_flags(argv, message):
    with pytest.raises(ServerConfigError, match=re.escape(message)):
        serve_cli.main(_serve_args(*argv))


def test_model_name_alone_serves_that_model_under_home(tmp_path):
    """`serve --model_name other` serves <home>/serving/other, not the taxi model's folder."""
    from pipeline.serve_cli import default_model
    from serving.model_servers.main import resolve_models

    for name in ("other", "taxi"):
        (tmp_path / "serving" / name / "1").mkdir(parents=True)
    _, name, base = resolve_models(_serve_args("--model_name=other"), default_model(tmp_path))
    assert (name, base) == ("other", str(tmp_path / "serving" / "other"))
    assert resolve_models(_serve_args(), default_model(tmp_path))[1:] == ("taxi", str(tmp_path / "serving" / "taxi"))


def test_standalone_server_needs_a_model_and_says_so(capsys):
    """The server's own main knows no pipeline: with no model flags it refuses in one line."""
    from serving.model_servers import main as server_main

    assert server_main._standalone([]) == 2
    assert "nothing to serve" in capsys.readouterr().err


def test_serve_refuses_bad_batching_and_backend(tmp_path, monkeypatch):
    (tmp_path / "m" / "1").mkdir(parents=True)
    bad = tmp_path / "batching.pbtxt"
    bad.write_text("max_batch_size: {")
    common = [f"--model_base_path={tmp_path / 'm'}", "--backend=standin"]
    with pytest.raises(ServerConfigError, match="BatchingParameters"):
        serve_cli.main(_serve_args(*common, "--enable_batching", f"--batching_parameters_file={bad}"))
    with pytest.raises(ServerConfigError, match="needs --enable_batching"):
        serve_cli.main(_serve_args(*common, f"--batching_parameters_file={bad}"))
    with pytest.raises(ServerConfigError, match="--gil_switch_interval_ms must be > 0"):
        serve_cli.main(_serve_args(*common, "--gil_switch_interval_ms=0"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerConfigError, match="tensorflow_model_server is not on PATH"):
        serve_cli.main(_serve_args(f"--model_base_path={tmp_path / 'm'}", "--backend=tfserving"))


def test_model_config_file_policies_and_errors(tmp_path):
    (tmp_path / "a").mkdir()
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "a" base_path: "a" model_platform: "tensorflow" '
                    'model_version_policy { latest { num_versions: 2 } } } }')
    config = model_config.load_config_file(str(path))
    model = config.model_config_list.config[0]
    assert model.base_path == str(tmp_path / "a")  # relative to the config file, as TF Serving does
    assert model_config.aspired_versions(model, [1, 5, 3]) == {3, 5}
    model.model_version_policy.all.SetInParent()
    assert model_config.aspired_versions(model, [1, 5, 3]) == {1, 3, 5}
    model.model_version_policy.specific.versions.extend([1, 9])
    assert model_config.aspired_versions(model, [1, 5, 3]) == {1}
    model.ClearField("model_version_policy")
    assert model_config.aspired_versions(model, [1, 5, 3]) == {5}
    for text, message in [('model_config_list { config { name: "a" } }', "needs a base_path"),
                          ('model_config_list { config { name: "a" base_path: "/x" } '
                           'config { name: "a" base_path: "/y" } }', "appears twice"),
                          ('model_config_list { config { name: "a" base_path: "/x" model_platform: "onnx" } }',
                           "only 'tensorflow'"),
                          ("model_config_list { bogus: 1 }", "not a ModelServerConfig")]:
        with pytest.raises(model_config.ConfigError, match=message):
            model_config.parse_config_text(text)


def _pushed_home(tmp_path, taxi_like_base):
    home = tmp_path / "home"
    shutil.copytree(taxi_like_base / "taxi" / "1", home / "serving" / "taxi" / "1")
    return home


def test_serve_and_predict_commands_end_to_end(tmp_path, taxi_like_base):
    """`taxi-pipeline serve` in its own process, `taxi-pipeline predict` against it, then SIGTERM."""
    home = _pushed_home(tmp_path, taxi_like_base)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    cli = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"]
    server = subprocess.Popen(cli + ["serve", f"--home={home}", "--port=0", "--rest_api_port=0"], env=env,  # no REST
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO_ROOT))
    try:
        port = None
        deadline = time.monotonic() + 120
        lines = []
        while port is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"on gRPC 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        assert port, f"serve did not report its port: {lines} {server.stderr.read() if server.poll() else ''}"
        assert any("docker run" in l and "tensorflow/serving:2.16.1" in l for l in lines)
        csv_path = tmp_path / "rows.csv"
        rows = taxi_rows(3)
        csv_path.write_text(",".join(rows[0]) + "\n" + "\n".join(",".join(f'"{v}"' for v in r.values()) for r in rows))
        predict = subprocess.run(cli + ["predict", str(csv_path), f"--server=127.0.0.1:{port}", "--timeout=60"],
                                 env=env, capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=180)
        assert predict.returncode == 0, predict.stderr
        out = predict.stdout.splitlines()
        assert out[0].startswith("model taxi version 1, signature serving_default, 3 rows")
        assert out[1].split() == ["row", "label", "probabilities"]
        from trainer_module.features import label_from_row

        for line, row in zip(out[2:], rows):
            number, label, probability = line.split()
            assert label == str(label_from_row(row)) and 0.0 <= float(probability) <= 1.0
        bad = subprocess.run(cli + ["predict", str(csv_path), f"--server=127.0.0.1:{port}", "--model=nope"],
                             env=env, capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=180)
        assert bad.returncode == 2
        assert "error: server refused the request (NOT_FOUND): Servable not found for request: Latest(nope)" \
            in bad.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, err
    assert "model server stopped" in out


def test_predict_reads_json_forms(tmp_path):
    from pipeline.predict_cli import read_rows

    rows = [{"fare": 1.5, "company": "x"}, {"fare": 2.0, "company": "y"}]
    for name, text in [("a.json", json.dumps(rows)), ("b.json", json.dumps({"instances": rows})),
                       ("c.jsonl", "\n".join(json.dumps(r) for r in rows))]:
        (tmp_path / name).write_text(text)
        assert read_rows(tmp_path / name) == rows
    (tmp_path / "bad.json").write_text('{"instances": [1, 2]}')
    with pytest.raises(ValueError, match="expected a list of objects"):
        read_rows(tmp_path / "bad.json")


def test_demo_serves_queries_and_stops(tmp_path, taxi_like_base, capsys):
    from pipeline import demo

    home = _pushed_home(tmp_path, taxi_like_base)
    assert demo.main(["--home", str(home), "--rows", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "model taxi version 1 AVAILABLE" in out[0] and "4 eval rows over gRPC" in out[0]
    assert out[1].split() == ["row", "label", "probabilities"]
    assert len(out) == 6
    assert demo.main(["--home", str(tmp_path / "empty")]) == 1
    assert "no pushed model under" in capsys.readouterr().err


def test_tls(tmp_path, testdata):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    from serving.client import ServingClient
    from serving.model_servers.server_options import parse_ssl_config

    ssl_text = f'server_key: {json.dumps(key.read_text())}\nserver_cert: {json.dumps(cert.read_text())}\n'
    tls = parse_ssl_config(ssl_text)
    config = config_for(default=str(testdata / "saved_model_half_plus_two_cpu"))
    with running_server(config, wait_for=["default"], tls=tls, rest_port=None) as server:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        channel = grpc.secure_channel(f"localhost:{server.grpc_port}", credentials)
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from serving.util import tensors

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "default"
        tensors.from_ndarray(np.array([[2.0]], np.float32), request.inputs["x"])
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert list(response.outputs["y"].float_val) == [3.0]
        channel.close()
        with ServingClient(f"localhost:{server.grpc_port}", timeout_s=5) as plain:  # no TLS: refused
            with pytest.raises(grpc.RpcError):
                plain.status("default")


def test_a_stop_that_hangs_ends_at_the_deadline_with_the_stuck_stack(testdata, tmp_path):
    """SIGTERM to a server whose stop never returns (ModelServer.stop patched to block, the deadline set to
    3 s): the process still ends, with exit 1, and stderr names where it was stuck. Kubernetes would kill
    it anyway after its grace period; this way the log says why."""
    script = ("import sys, threading\n"
              "from serving.model_servers import main, server\n"
              "main.STOP_DEADLINE_S = 3.0\n"
              "def stuck_stop(self, *args):\n"
              "    threading.Event().wait()\n"
              "server.ModelServer.stop = stuck_stop\n"
              "sys.exit(main._standalone(sys.argv[1:]))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    stderr = open(tmp_path / "stderr", "w+")  # a file: a pipe left unread while stdout is read fills and blocks
    server = subprocess.Popen([sys.executable, "-c", script, "--backend=standin", "--port=0", "--rest_api_port=0",
                               "--model_name=half", f"--model_base_path={testdata / 'saved_model_half_plus_two_cpu'}"],
                              env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=str(REPO_ROOT))
    try:
        lines = [server.stdout.readline()]
        while lines[-1] and "on gRPC" not in lines[-1]:
            lines.append(server.stdout.readline())
        assert "on gRPC" in lines[-1], lines
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        stderr.seek(0)
        err = stderr.read()
        stderr.close()
    assert server.returncode == 1, err
    assert "Timeout (0:00:03)!" in err and "in stuck_stop" in err and "in run_standin" in err, err
    assert "model server stopped" not in out
