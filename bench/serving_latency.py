"""Serving latency and throughput: the model server vs the in-process signature call (the floor).

Measures, in one run on one model version:
- floor: the in-process call of the same signature (`tf.saved_model.load(...).signatures
  ["serving_default"]` on one serialized tf.Example), p50/p99 and its sequential rate;
- 1 client: sequential gRPC Predict calls (one example each) to the server running in its own
  process, as deployed;
- 16 clients: 16 concurrent clients (grpc.aio coroutines in this process, one channel each),
  against the server with batching on, and (for reference) with batching off;
- the transport ceiling: the same 1- and 16-client loads against a no-op PredictionService on the
  same Python gRPC stack (canned answer, no model): no server built on grpcio can beat it here;
- the serving core without transport: 16 threads calling the Predict handler in this process
  (decode, validate, batch, run, encode), batching on and off.
Every figure is also given as a ratio to the floor measured in the same run. Goals (issue 3):
1-client p50 <= 1.5x the floor p50; 16-client throughput >= 2x the floor's sequential rate.

    python -m bench.serving_latency [--model-dir DIR] [--requests N] [--seconds S]

The model: `--model-dir` (a model base path with numeric versions), else the pipeline's pushed
model under `--home` (default outputs/), else the taxi-like sample model exported on the spot
(reported as such). Writes bench/results/serving_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# One intra-/inter-op thread per Session run: on 2 cores, less hand-off for single-example requests.
SESSION_FLAGS = ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"]
RESULTS = Path(__file__).resolve().parent / "results" / "serving_latency.json"
REPO = Path(__file__).resolve().parents[1]
BATCHING = "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n" \
           "max_enqueued_batches { value: 1000 }\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(latencies_s: List[float], wall_s: float) -> Dict[str, float]:
    ms = np.array(latencies_s) * 1e3
    return {"requests": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput_rps": len(ms) / wall_s}


def _model_base(args, workdir: Path):
    from pipeline import configs

    from serving.config import model_config

    if args.model_dir:
        return Path(args.model_dir), "given --model-dir"
    pushed = configs.PipelineConfig(home=args.home).serving_model_dir
    if model_config.versions_on_disk(str(pushed)):
        return pushed, "pipeline's pushed model"
    from serving.testing.sample_models import export_taxi_like_model

    export_taxi_like_model(str(workdir / "taxi" / "1"))
    return workdir / "taxi", "taxi-like sample model (no pushed model found)"


def _measure_floor(version_dir: str, serialized: bytes, n: int) -> Dict[str, float]:
    """The same work as a request minus the server: bytes in, a tensor built, the call, numpy out."""
    import tensorflow as tf

    fn = tf.saved_model.load(version_dir).signatures["serving_default"]

    def call():
        return {k: v.numpy() for k, v in fn(examples=tf.constant([serialized])).items()}

    for _ in range(max(50, n // 10)):
        call()
    latencies = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t)
    return _summary(latencies, time.perf_counter() - start)


def _start_server(base: Path, port: int, batching_file: str = None) -> subprocess.Popen:
    argv = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", "--backend", "standin", f"--port={port}", "--rest_api_port=0", "--model_name=taxi",
            f"--model_base_path={base}", "--file_system_poll_wait_seconds=30",
            *SESSION_FLAGS]
    if batching_file:
        argv += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))


def _noop_server(port: int) -> int:
    """A PredictionService that answers a canned response: the same gRPC stack as the model server
    (sync server, 32 worker threads) with no model, decoding or batching. Its figures are the ceiling
    the Python gRPC transport alone allows on this machine."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "taxi"
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    probabilities = response.outputs["probabilities"]
    probabilities.dtype = 1
    probabilities.tensor_shape.dim.add().size = 1
    probabilities.tensor_shape.dim.add().size = 1
    probabilities.float_val.append(0.5)

    class NoOp(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(NoOp(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()
    return 0


def _start_noop_server(port: int) -> subprocess.Popen:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "bench.serving_latency", "--noop-server", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))


def _wait_for_port(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _request(serialized: bytes):
    from tensorflow_serving.apis import predict_pb2

    from serving.util import tensors

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxi"
    request.model_spec.signature_name = "serving_default"
    tensors.from_ndarray(np.array([serialized], dtype=object), request.inputs["examples"])
    return request


def _one_client(target: str, request, n: int) -> Dict[str, float]:
    from serving.client import ServingClient

    with ServingClient(target) as client:
        for _ in range(max(50, n // 10)):
            client.prediction.Predict(request)
        latencies = []
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            client.prediction.Predict(request)
            latencies.append(time.perf_counter() - t)
        return _summary(latencies, time.perf_counter() - start)


def _many_clients(target: str, request, clients: int, seconds: float) -> Dict[str, float]:
    """`clients` concurrent clients, each with its own channel, each one request in flight.

    Driven by grpc.aio coroutines in this process: an efficient load generator, so the figure is
    the server's throughput rather than the GIL of 16 client threads.
    """
    import asyncio

    from tensorflow_serving.apis import prediction_service_pb2_grpc

    async def run():
        channels = [grpc_aio.insecure_channel(target) for _ in range(clients)]
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
        await asyncio.gather(*(stub.Predict(request) for stub in stubs))
        latencies, errors = [], []
        start = time.perf_counter()
        deadline = start + seconds

        async def loop(stub):
            while True:
                t = time.perf_counter()
                if t >= deadline:
                    return
                try:
                    await stub.Predict(request)
                except grpc.RpcError as err:  # counted and reported
                    errors.append(err.code().name)
                    return
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(loop(stub) for stub in stubs))
        wall = time.perf_counter() - start
        for channel in channels:
            await channel.close()
        return latencies, errors, wall

    import grpc
    from grpc import aio as grpc_aio

    latencies, errors, wall = asyncio.run(run())
    result = _summary(latencies, wall)
    result["errors"] = len(errors)
    return result


def main(argv=None) -> int:
    from pipeline import configs

    from serving.config import model_config
    from serving.client import ServingClient, raw_input_dtypes, row_to_example

    parser = argparse.ArgumentParser(prog="python -m bench.serving_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=configs.default_home())
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--requests", type=int, default=5000, help="sequential requests per 1-client phase "
                        "(split over the rounds)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each 16-client phase (split over "
                        "the rounds)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; figures are medians")
    parser.add_argument("--noop-server", type=int, default=None, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.noop_server is not None:
        return _noop_server(args.noop_server)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base, source = _model_base(args, workdir)
        versions = model_config.versions_on_disk(str(base))
        version = max(versions)
        batching_file = workdir / "batching.pbtxt"
        batching_file.write_text(BATCHING)

        results = {"model": {"base_path": str(base), "version": version, "source": source},
                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "load_avg_at_start": os.getloadavg()[0]},
                   "batching_parameters": BATCHING.strip().replace("\n", "; "),
                   "server_flags": SESSION_FLAGS}
        # Both servers run for the whole measurement; phases alternate in rounds and each figure is
        # the median over rounds, so a burst of load from other processes cannot favour one phase.
        ports = {"on": _free_port(), "off": _free_port(), "noop": _free_port()}
        servers = {"on": _start_server(base, ports["on"], str(batching_file)), "off": _start_server(base, ports["off"]),
                   "noop": _start_noop_server(ports["noop"])}
        rounds = {}
        try:
            _wait_for_port(ports["noop"])
            for key in ("on", "off"):
                port = ports[key]
                with ServingClient(f"127.0.0.1:{port}") as client:
                    if not client.wait_until_available("taxi", 180):
                        print("error: the server did not make the model AVAILABLE within 180s", file=sys.stderr)
                        return 1
                    defs = client.signature_defs("taxi")
            rows = _taxi_rows()
            raw = raw_input_dtypes(defs)
            serialized = row_to_example(rows[0], raw).SerializeToString()
            request = _request(serialized)
            n = max(100, args.requests // args.rounds)
            phases_in_order = [
                ("floor (in-process signature call)", lambda: _measure_floor(versions[version], serialized, n)),
                ("1 client, batching on", lambda: _one_client(f"127.0.0.1:{ports['on']}", request, n)),
                ("1 client, batching off", lambda: _one_client(f"127.0.0.1:{ports['off']}", request, n)),
                (f"{args.clients} clients, batching on", lambda: _many_clients(
                    f"127.0.0.1:{ports['on']}", request, args.clients, args.seconds / args.rounds)),
                (f"{args.clients} clients, batching off", lambda: _many_clients(
                    f"127.0.0.1:{ports['off']}", request, args.clients, args.seconds / args.rounds)),
                ("1 client, no-op gRPC server", lambda: _one_client(f"127.0.0.1:{ports['noop']}", request, n)),
                (f"{args.clients} clients, no-op gRPC server", lambda: _many_clients(
                    f"127.0.0.1:{ports['noop']}", request, args.clients, args.seconds / args.rounds)),
            ]
            for r in range(args.rounds):
                # Rotate the order each round and pause between phases, so no phase always follows
                # the same one (TensorFlow's threads keep spinning briefly after the floor's calls).
                shift = r * len(phases_in_order) // args.rounds
                for name, measure in phases_in_order[shift:] + phases_in_order[:shift]:
                    time.sleep(0.3)
                    rounds.setdefault(name, []).append(measure())
            # The serving core without gRPC (in this process, after the servers' phases).
            for _ in range(args.rounds):
                for label, text in (("on", BATCHING), ("off", None)):
                    rounds.setdefault(f"{args.clients} threads in-process, no gRPC, batching {label}", []).append(
                        _in_process_capacity(base, request, args.clients, args.seconds / args.rounds, text))
        finally:
            for server in servers.values():
                _stop(server)
    phases = {name: _median(results) for name, results in rounds.items()}

    floor = phases["floor (in-process signature call)"]
    for result in phases.values():
        result["p50_vs_floor_p50"] = result["p50_ms"] / floor["p50_ms"]
        result["throughput_vs_floor_rate"] = result["throughput_rps"] / floor["throughput_rps"]
    results["phases"] = phases
    single = phases["1 client, batching on"]
    many = phases[f"{args.clients} clients, batching on"]
    results["goals"] = {
        "single_client_p50_le_1.5x_floor": {"ratio": single["p50_vs_floor_p50"], "met": single["p50_vs_floor_p50"] <= 1.5},
        f"{args.clients}_client_throughput_ge_2x_floor_rate": {"ratio": many["throughput_vs_floor_rate"],
                                                              "met": many["throughput_vs_floor_rate"] >= 2.0},
    }
    results["load_avg_at_end"] = os.getloadavg()[0]

    print(f"model: {source}, version {version} ({base})")
    header = f"{'phase':38} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'p50/floor':>10} {'rate/floor':>10}"
    print(header)
    print("-" * len(header))
    for name, r in phases.items():
        print(f"{name:38} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['throughput_rps']:8.0f} "
              f"{r['p50_vs_floor_p50']:10.2f} {r['throughput_vs_floor_rate']:10.2f}")
    for goal, value in results["goals"].items():
        print(f"goal {goal}: {value['ratio']:.2f} -> {'met' if value['met'] else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


def _in_process_capacity(base: Path, request, clients: int, seconds: float, batching_text: str = None
                         ) -> Dict[str, float]:
    """`clients` threads calling the server's Predict handler directly (no gRPC) on a loaded model:
    the serving core's own capacity, batching on or off, without the Python gRPC transport."""
    import threading

    from tensorflow_serving.apis import predict_pb2

    from serving.batching import batcher as batching
    from serving.servables import handlers
    from serving.config import model_config
    from serving.model_servers.server import ModelServer, ServerOptions

    options = batching.parse_batching_parameters(batching_text) if batching_text else None
    server = ModelServer(ServerOptions(model_config.single_model_config("taxi", str(base)), rest_port=None,
                                       batching=options, poll_wait_s=0, intra_op_threads=1, inter_op_threads=1))
    server.manager.start()
    try:
        server.wait_until_available("taxi", 180)
        data = request.SerializeToString()
        handlers.predict(server.manager, predict_pb2.PredictRequest.FromString(data))
        latencies = [[] for _ in range(clients)]
        go = threading.Barrier(clients + 1)
        deadline = [0.0]

        def loop(out):
            go.wait()
            while True:
                t = time.perf_counter()
                if t >= deadline[0]:
                    return
                handlers.predict(server.manager, predict_pb2.PredictRequest.FromString(data)).SerializeToString()
                out.append(time.perf_counter() - t)

        threads = [threading.Thread(target=loop, args=(out,)) for out in latencies]
        for t in threads:
            t.start()
        start = time.perf_counter()
        deadline[0] = start + seconds
        go.wait()
        for t in threads:
            t.join()
        return _summary([x for out in latencies for x in out], time.perf_counter() - start)
    finally:
        server.manager.stop()


def _median(results: List[Dict[str, float]]) -> Dict[str, float]:
    merged = {key: float(np.median([r[key] for r in results])) for key in results[0]}
    merged["rounds"] = len(results)
    merged["requests"] = int(sum(r["requests"] for r in results))
    return merged


def _taxi_rows(count: int = 200):
    import csv

    from pipeline import configs

    with open(configs.default_data_root() / "data.csv") as f:
        reader = csv.DictReader(f)
        return [next(reader) for _ in range(count)]


if __name__ == "__main__":
    sys.exit(main())
