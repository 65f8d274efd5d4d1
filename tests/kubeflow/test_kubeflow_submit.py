"""`taxi-pipeline submit`: readable failures, and what reaches a (fake, loopback) KFP API."""
import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kfp_testdata import PIPELINE_ROOT, compiled_job, compiled_spec_path  # noqa: F401

from kubeflow import package, spec_compat, storage
from pipeline.cli import main


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens once the socket closes


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_missing_spec_says_to_compile(tmp_path, capsys):
    rc = main(["submit", "--spec", str(tmp_path / "nope.json"), "--endpoint", "http://127.0.0.1:1"])
    assert rc == 2
    err = one_error_line(capsys)
    assert str(tmp_path / "nope.json") in err and "taxi-pipeline compile" in err


def test_not_a_spec_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"displayName": "x"')
    assert main(["submit", "--spec", str(bad), "--endpoint", "http://127.0.0.1:1"]) == 2
    assert "not valid JSON" in one_error_line(capsys)
    bad.write_text('{"displayName": "x"}')
    assert main(["submit", "--spec", str(bad), "--endpoint", "http://127.0.0.1:1"]) == 2
    assert "not a compiled pipeline" in one_error_line(capsys)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://"])
def test_endpoint_must_be_an_http_url(endpoint, tmp_path, capsys):
    assert main(["submit", "--spec", str(tmp_path / "x.json"), "--endpoint", endpoint]) == 2
    assert "--endpoint" in one_error_line(capsys)


def test_unreachable_endpoint_names_the_url(compiled_spec_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url]) == 2
    err = one_error_line(capsys)
    assert f"cannot reach Kubeflow Pipelines at {url}" in err and "connection refused" in err


class FakeKfp(BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 API for kfp.Client.create_run_from_pipeline_package."""

    requests = []
    headers = []  # each request's headers (names in lower case), in order
    multi_user = False
    accepted = None  # (header, value) every request must carry, else 401; None: no auth

    def _refused(self):
        type(self).headers.append({name.lower(): value for name, value in self.headers.items()})
        if self.accepted and self.headers.get(self.accepted[0]) != self.accepted[1]:
            self._reply({"error": "Unauthenticated", "code": 16}, 401)
            return True
        return False

    def _reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.requests.append(("GET", self.path, None))
        if self._refused():
            return None
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": self.multi_user})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({})  # no experiment of that name yet
        self._reply({"error": "not found"}, 404)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if self._refused():
            return None
        if self.path == "/apis/v2beta1/experiments":
            return self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        if self.path == "/apis/v2beta1/runs":
            return self._reply({"run_id": "run-42", "display_name": body["display_name"],
                                "experiment_id": body["experiment_id"]})
        if self.path == "/apis/v2beta1/runs-refused":
            return self._reply({}, 400)
        if self.path == "/apis/v2beta1/recurringruns":
            return self._reply({**body, "recurring_run_id": "rr-7", "status": "ENABLED"})
        self._reply({"error": "not found"}, 404)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_kfp(monkeypatch):
    FakeKfp.requests = []
    FakeKfp.headers = []
    monkeypatch.setattr(FakeKfp, "multi_user", False)
    monkeypatch.setattr(FakeKfp, "accepted", None)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", FakeKfp.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_submit_sends_the_package_with_volume_and_root(compiled_spec_path, compiled_job, fake_kfp, capsys):
    url, requests = fake_kfp
    rc = main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url,
               "--experiment", "taxi-ci", "--run-name", "nightly"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "run-42" in out and url in out

    experiment = next(body for method, path, body in requests if path == "/apis/v2beta1/experiments" and body)
    assert experiment["display_name"] == "taxi-ci"
    run = next(body for method, path, body in requests if path == "/apis/v2beta1/runs")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["pipeline_root"] == PIPELINE_ROOT
    sent = run["pipeline_spec"]
    assert sent["pipeline_spec"]["root"]["dag"]["tasks"].keys() == compiled_job["pipelineSpec"]["root"]["dag"]["tasks"].keys()
    assert sent["pipeline_spec"]["deploymentSpec"] == compiled_job["pipelineSpec"]["deploymentSpec"]
    executors = sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(package.container_executors(compiled_job["pipelineSpec"]))
    assert {m["constant"] for e in executors.values() for m in e["pvcMount"]} == {storage.PVC_NAME}


def test_submit_overrides_root_and_volume(compiled_spec_path, fake_kfp):
    url, requests = fake_kfp
    rc = main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url,
               "--pipeline-root", "gs://other/root", "--no-pvc"])
    assert rc == 0
    run = next(body for method, path, body in requests if path == "/apis/v2beta1/runs")
    assert run["runtime_config"]["pipeline_root"] == "gs://other/root"
    assert not run["pipeline_spec"].get("platform_spec")


def test_api_refusal_is_one_line_with_status(compiled_spec_path, fake_kfp, capsys, monkeypatch):
    url, _ = fake_kfp
    monkeypatch.setattr(FakeKfp, "do_POST", lambda self: (self.rfile.read(int(self.headers["Content-Length"])),
                                                          self._reply({"error": "bad spec"}, 400)))
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url]) == 2
    err = one_error_line(capsys)
    assert url in err and "HTTP 400" in err and "bad spec" in err


@pytest.mark.parametrize("healthz, fragment", [
    ((404, b'{"error": "not found"}'), "HTTP 404"),
    ((200, b"<html>Log in</html>"), "not as the Kubeflow Pipelines API"),
])
def test_wrong_service_fails_fast_in_one_line(healthz, fragment, compiled_spec_path, fake_kfp, capsys, monkeypatch):
    url, requests = fake_kfp
    status, body = healthz

    def do_get(self):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    monkeypatch.setattr(FakeKfp, "do_GET", do_get)
    started = time.monotonic()
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url]) == 2
    assert time.monotonic() - started < 5, "no retry loop"
    err = one_error_line(capsys)
    assert fragment in err and url in err
    assert not any(method == "POST" for method, _, _ in requests), "nothing is created"


def test_no_cache_turns_off_every_tasks_cache(compiled_spec_path, compiled_job, fake_kfp):
    url, requests = fake_kfp
    compiled = compiled_job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert all(task["cachingOptions"].get("enableCache") for name, task in compiled.items() if name not in spec_compat.VOLUME_STATE_TASKS)
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--no-cache"]) == 0
    run = next(body for method, path, body in requests if path == "/apis/v2beta1/runs")
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks.keys() == compiled.keys()
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())


NS = "kubeflow-user-example-com"
COOKIE = "authservice_session=MTcwMDAwMDAwMHxOd3dBTkRSYVZF"


def service_account_token(namespace):
    """The shape of a `kubectl create token` JWT: claims carry kubernetes.io.namespace (unsigned here)."""
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"aud": ["pipelines.kubeflow.org"], "sub": f"system:serviceaccount:{namespace}:default-editor",
              "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": "default-editor"}}}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def posted(requests, path):
    return next(body for method, p, body in requests if method == "POST" and p == path)


def test_token_and_cookie_reach_every_request(compiled_spec_path, fake_kfp, monkeypatch, capsys):
    url, requests = fake_kfp
    token = service_account_token(NS)
    monkeypatch.setattr(FakeKfp, "multi_user", True)
    monkeypatch.setattr(FakeKfp, "accepted", ("Authorization", f"Bearer {token}"))
    rc = main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--token", token,
               "--namespace", NS, "--cookie", COOKIE])
    assert rc == 0, capsys.readouterr().err
    assert len(FakeKfp.headers) == len(requests) >= 4  # our health check, kfp's, experiment, run
    assert all(h.get("authorization") == f"Bearer {token}" and h.get("cookie") == COOKIE for h in FakeKfp.headers)
    assert posted(requests, "/apis/v2beta1/experiments")["namespace"] == NS
    assert f"namespace {NS}" in capsys.readouterr().out


def test_token_file_and_namespace_read_from_the_token(compiled_spec_path, fake_kfp, monkeypatch, tmp_path):
    url, requests = fake_kfp
    token = service_account_token(NS)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    monkeypatch.setattr(FakeKfp, "multi_user", True)
    monkeypatch.setattr(FakeKfp, "accepted", ("Authorization", f"Bearer {token}"))
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--token-file", str(token_file)]) == 0
    assert posted(requests, "/apis/v2beta1/experiments")["namespace"] == NS


def test_cookie_alone_authenticates(compiled_spec_path, fake_kfp, monkeypatch):
    url, requests = fake_kfp
    monkeypatch.setattr(FakeKfp, "accepted", ("Cookie", COOKIE))
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--cookie", COOKIE]) == 0
    assert all("authorization" not in h and h["cookie"] == COOKIE for h in FakeKfp.headers)


def test_multi_user_without_a_namespace_is_one_line(compiled_spec_path, fake_kfp, monkeypatch, capsys):
    url, requests = fake_kfp
    monkeypatch.setattr(FakeKfp, "multi_user", True)
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--cookie", COOKIE]) == 2
    err = one_error_line(capsys)
    assert "multi-user" in err and "--namespace" in err
    assert not any(method == "POST" for method, _, _ in requests)


@pytest.mark.parametrize("extra, fragment", [
    ([], "needs authentication (HTTP 401"),
    (["--token", "expired-token"], "refused the token (HTTP 401"),
    (["--cookie", "authservice_session=old"], "refused the cookie (HTTP 401"),
])
def test_refused_credentials_are_one_line(extra, fragment, compiled_spec_path, fake_kfp, monkeypatch, capsys):
    url, requests = fake_kfp
    monkeypatch.setattr(FakeKfp, "accepted", ("Authorization", "Bearer good"))
    started = time.monotonic()
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--namespace", NS, *extra]) == 2
    assert time.monotonic() - started < 5, "no retry loop"
    err = one_error_line(capsys)
    assert fragment in err and url in err and "kubectl create token" in err
    assert "--audience=pipelines.kubeflow.org" in err
    assert not any(method == "POST" for method, _, _ in requests)


def test_forbidden_run_is_one_line(compiled_spec_path, fake_kfp, monkeypatch, capsys):
    """The token passes the health check, but the namespace is not the user's: 403 on the run."""
    url, requests = fake_kfp

    def do_post(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply({"error": "PermissionDenied", "code": 7}, 403)

    monkeypatch.setattr(FakeKfp, "do_POST", do_post)
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--token", "t0k3n",
                 "--namespace", "someone-else"]) == 2
    err = one_error_line(capsys)
    assert "refused the token (HTTP 403" in err and url in err


def test_login_redirect_is_one_line(compiled_spec_path, fake_kfp, monkeypatch, capsys):
    url, requests = fake_kfp

    def do_get(self):
        self.send_response(302)
        self.send_header("Location", "/dex/auth?client_id=kubeflow-oidc-authservice")
        self.send_header("Content-Length", "0")
        self.end_headers()

    monkeypatch.setattr(FakeKfp, "do_GET", do_get)
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url]) == 2
    err = one_error_line(capsys)
    assert "needs authentication (HTTP 302 to /dex/auth" in err and "--cookie" in err


def test_token_and_token_file_exclude_each_other(compiled_spec_path, tmp_path):
    with pytest.raises(SystemExit):
        main(["submit", "--spec", str(compiled_spec_path), "--endpoint", "http://127.0.0.1:1",
              "--token", "a", "--token-file", str(tmp_path / "t")])


def test_empty_token_file_is_one_line(compiled_spec_path, tmp_path, capsys):
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", "http://127.0.0.1:1",
                 "--token-file", str(empty)]) == 2
    assert "token is empty" in one_error_line(capsys)


# kubeflow/pipelines 2.5.0 backend/api/v2beta1/recurring_run.proto: the fields of RecurringRun (:81-157) a
# client may set, Trigger (:247-250), CronSchedule (:222-232); the server checks max_concurrency in [1, 10]
# and parses the cron with robfig/cron v1 (backend/src/apiserver/server/api_converter.go:1919-1926).
RECURRING_RUN_FIELDS = {"display_name", "description", "pipeline_version_id", "pipeline_spec",
                        "pipeline_version_reference", "runtime_config", "service_account", "max_concurrency",
                        "trigger", "mode", "no_catchup", "experiment_id", "namespace"}
CRON_SCHEDULE_FIELDS = {"start_time", "end_time", "cron"}


def test_schedule_creates_a_recurring_run_that_never_overlaps(compiled_spec_path, compiled_job, fake_kfp, capsys):
    url, requests = fake_kfp
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--schedule", "0 3 * * *",
                 "--run-name", "nightly"]) == 0
    assert "created recurring run rr-7" in capsys.readouterr().out
    body = next(body for method, path, body in requests if path == "/apis/v2beta1/recurringruns")
    assert set(body) <= RECURRING_RUN_FIELDS, set(body) - RECURRING_RUN_FIELDS
    assert set(body["trigger"]) == {"cron_schedule"} and set(body["trigger"]["cron_schedule"]) <= CRON_SCHEDULE_FIELDS
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"  # seconds first, as robfig/cron v1 parses
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-1" and body["display_name"] == "nightly"
    assert body["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"].keys() == \
        compiled_job["pipelineSpec"]["root"]["dag"]["tasks"].keys()
    assert body["runtime_config"]["pipeline_root"] == PIPELINE_ROOT
    assert not any(path == "/apis/v2beta1/runs" for _, path, _ in requests), "no one-off run as well"


@pytest.mark.parametrize("schedule", ["every night", "0 3 * *", "0 3 * * * * *", "0 3 * * ;rm"])
def test_a_bad_schedule_is_one_line_and_sends_nothing(schedule, compiled_spec_path, fake_kfp, capsys):
    url, requests = fake_kfp
    assert main(["submit", "--spec", str(compiled_spec_path), "--endpoint", url, "--schedule", schedule]) == 2
    assert "--schedule" in one_error_line(capsys)
    assert not requests
