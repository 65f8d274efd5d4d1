"""A model server process to fuzz: started as `taxi-pipeline serve` starts it, called with raw bytes.

The server runs in its own process (`python -m serving.model_servers.main`, the compiled gRPC front
end when built, batching on) so a crash, a hang or its memory show as they would in production and
the fuzzer's own memory does not count. `call` sends any bytes to any PredictionService method and
returns (status code name, message); `probe` times a good Predict (half_plus_two: 2.0 -> 3.0);
`memory_bytes` is the resident memory of the server and its front end process.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Tuple

import grpc

REPO = Path(__file__).resolve().parents[2]
BATCHING = "max_batch_size { value: 16 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_models(workdir: Path) -> Dict[str, str]:
    """half_plus_two (TF Serving's TF1 test model: predict, classify, regress signatures) and the
    taxi-like sample model (tf.Example input) under `workdir`: name -> base path, as the fuzzer serves."""
    from serving.testing import tf_serving_testdata
    from serving.testing.sample_models import export_taxi_like_model

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    asset = workdir / "foo.txt"
    asset.write_text("asset-file-contents")
    tf_serving_testdata.half_plus_two_cpu(workdir / "half" / "00000123", str(asset))
    export_taxi_like_model(str(workdir / "taxi" / "1"))
    return {"half": str(workdir / "half"), "taxi": str(workdir / "taxi")}


class FuzzTarget:
    """A server process serving `models` (name -> base path), started by `start()`, ended by `stop()`."""

    def __init__(self, models: Dict[str, str], workdir: Path, front_end: str = "auto",
                 extra_args: Tuple[str, ...] = ()):
        self._models, self._workdir, self._front_end = dict(models), Path(workdir), front_end
        self._extra_args = tuple(extra_args)
        self.grpc_port = self.rest_port = 0
        self.process: Optional[subprocess.Popen] = None
        self.log_path = self._workdir / "server.log"
        self._channel: Optional[grpc.Channel] = None
        self._methods = {}

    def start(self, timeout_s: float = 300.0) -> "FuzzTarget":
        self._workdir.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "models.config"
        config.write_text("model_config_list {\n" + "".join(
            f'config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}\n'
            for n, p in self._models.items()) + "}\n")
        batching = self._workdir / "batching.pbtxt"
        batching.write_text(BATCHING)
        self.grpc_port, self.rest_port = _free_port(), _free_port()
        argv = [sys.executable, "-m", "serving.model_servers.main", "--backend=standin",
                f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", f"--model_config_file={config}",
                "--enable_batching", f"--batching_parameters_file={batching}",
                "--file_system_poll_wait_seconds=30", f"--grpc_compiled={self._front_end}", *self._extra_args]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        self._channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}",
                                              options=[("grpc.max_receive_message_length", -1)])
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not become ready; its log:\n{self.log()[-3000:]}")
            time.sleep(0.5)
        return self

    def _ready(self) -> bool:
        for name in self._models:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/v1/models/{name}", timeout=5) as r:
                    if b'"AVAILABLE"' not in r.read():
                        return False
            except (OSError, urllib.error.URLError):
                return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def call(self, method: str, payload: bytes, timeout_s: float = 10.0) -> Tuple[str, str]:
        """(status code name, message) of `payload` sent as-is to PredictionService/`method`."""
        stub = self._methods.get(method)
        if stub is None:
            stub = self._methods[method] = self._channel.unary_unary(
                f"/tensorflow.serving.PredictionService/{method}")
        try:
            stub(payload, timeout=timeout_s)
            return "OK", ""
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""

    def probe(self, timeout_s: float = 10.0) -> float:
        """Seconds a good Predict takes (half_plus_two, x = 2.0); AssertionError unless it answers 3.0."""
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        x = request.inputs["x"]
        x.dtype = 1
        x.tensor_shape.dim.add().size = 1
        x.float_val.append(2.0)
        stub = self._methods.get("probe")
        if stub is None:
            stub = self._methods["probe"] = self._channel.unary_unary(
                "/tensorflow.serving.PredictionService/Predict", request_serializer=predict_pb2.PredictRequest.SerializeToString,
                response_deserializer=predict_pb2.PredictResponse.FromString)
        started = time.perf_counter()
        response = stub(request, timeout=timeout_s)
        elapsed = time.perf_counter() - started
        assert list(response.outputs["y"].float_val) == [3.0], response
        return elapsed

    def rest(self, path: str, body: bytes, timeout_s: float = 10.0) -> Tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def memory_bytes(self) -> int:
        """Resident memory of the server process and its children (the compiled front end)."""
        import psutil

        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
