"""Helpers shared by the serving tests: start a server on free loopback ports, rows, paths."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS first)

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def running_server(config, wait_for=(), **options):
    """A stand-in ModelServer on free 127.0.0.1 ports; waits until `wait_for` models are AVAILABLE."""
    from serving.model_servers.server import ModelServer, ServerOptions

    options.setdefault("grpc_port", 0)
    options.setdefault("rest_port", 0)
    options.setdefault("poll_wait_s", 0.2)
    # The default front end is grpc.aio; SERVING_TEST_GRPC_AIO=0 runs every serving test against the
    # thread-pool front end (--grpc_aio=false) instead.
    options.setdefault("grpc_aio", os.environ.get("SERVING_TEST_GRPC_AIO", "1") == "1")
    # The compiled front end (the server's default once built) is tested by test_serving_compiled.py;
    # SERVING_TEST_GRPC_COMPILED=1 runs every serving test on it wherever it applies (auto: not with TLS).
    options.setdefault("grpc_compiled", None if os.environ.get("SERVING_TEST_GRPC_COMPILED") == "1" else False)
    server = ModelServer(ServerOptions(config=config, **options)).start()
    try:
        for name in wait_for:
            assert server.wait_until_available(name, 120), f"model {name} did not become AVAILABLE"
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def counting_batches(server, name):
    """The sizes of the Session runs model `name` makes inside the block (its run_direct counted)."""
    from tensorflow_serving.apis import model_pb2

    sizes = []
    with server.manager.servable(model_pb2.ModelSpec(name=name)) as held:
        original = held.run_direct

        def counting(s, batched, keys):
            sizes.append(len(next(iter(batched.values()))))
            return original(s, batched, keys)

        held.run_direct = counting
        try:
            yield sizes
        finally:
            del held.run_direct


def config_for(**models):
    """ModelServerConfig text proto from name=base_path (latest version policy)."""
    from serving.config.model_config import parse_config_text

    body = "".join(f'config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}\n'
                   for n, p in models.items())
    return parse_config_text(f"model_config_list {{\n{body}}}")


def taxi_rows(count=5, start=0):
    from pipeline import configs

    with open(configs.default_data_root() / "data.csv") as f:
        rows = list(csv.DictReader(f))
    return rows[start:start + count]


def http(port, path, body=None, raw=None):
    """(status, parsed JSON) of a REST call."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
