"""Serving latency and throughput: the model server against the transport's limit and the in-process call.

Measures, in one run on one model version, every server in its own process, as deployed:
- floor: the in-process call of the same signature (`tf.saved_model.load(...).signatures
  ["serving_default"]` on one serialized tf.Example), p50/p99 and its sequential rate;
- the transport ceiling: do-nothing PredictionServices (canned answer, no model) on grpcio's
  thread-pool server and on grpc.aio: no server built on grpcio can beat the faster of the two;
- the simplest server a user would write instead: `tf.saved_model.load` + a PredictionService
  servicer (tf.make_ndarray in, the signature function, tf.make_tensor_proto out);
- ours: the compiled front end (the default when built: C++ gRPC in a child process, the model in
  Python) and the grpc.aio front end (`--grpc_compiled=false`), each unbatched and batched, and the
  thread-pool front end (`--grpc_aio=false`, the first design) with batching;
each with 1 client (sequential Predict calls, one example each) and 16 concurrent clients
(grpc.aio coroutines in this process, one channel each). Phases rotate (and reverse) across
rounds and each figure is the median over rounds, so a burst of load from other processes cannot
favour one phase. Goals (issue 8, acceptance 5), computed from this run's figures:
- one client: our p50 <= 1.15 x (transport ceiling p50 + floor p50);
- 16 clients, batching on: our rate >= 0.8 x the do-nothing server's rate;
- ahead of the simple user-written server on both.

    python -m bench.serving_latency [--model-dir DIR] [--requests N] [--seconds S] [--rounds R]

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
from typing import Dict, List, Mapping, Optional

import numpy as np

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# One intra-/inter-op thread per Session run: on 2 cores, less hand-off for single-example requests.
SESSION_FLAGS = ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"]
RESULTS = Path(__file__).resolve().parent / "results" / "serving_latency.json"
REPO = Path(__file__).resolve().parents[1]
BATCHING = "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n" \
           "max_enqueued_batches { value: 1000 }\n"


def child_env(extra: Optional[Mapping[str, str]] = None) -> dict:
    """The environment of a process the bench starts: this checkout importable, legacy Keras, TF quiet,
    plus `extra` (a variant's own variables, bench/serving_ab)."""
    return dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **(extra or {}))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it), for a server the bench starts."""
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


FRONT_END_FLAGS = {"compiled": ["--grpc_compiled=true"], "aio": ["--grpc_compiled=false"],
                   "threads": ["--grpc_compiled=false", "--grpc_aio=false"]}


def _start_server(base: Path, port: int, batching_file: str = None, front: Optional[str] = "compiled",
                  processes: int = 1, extra_args=(), extra_env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "serving.model_servers.main",
            "--backend", "standin", f"--port={port}", "--rest_api_port=0", "--model_name=taxi",
            f"--model_base_path={base}", "--file_system_poll_wait_seconds=30",
            *SESSION_FLAGS]
    if batching_file:
        argv += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    argv += FRONT_END_FLAGS[front] if front else []  # None: the server's default front end
    if processes > 1:
        argv += [f"--grpc_processes={processes}"]
    argv += list(extra_args)
    env = child_env(extra_env)
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))


def _canned_response():
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "taxi"
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    probabilities = response.outputs["probabilities"]
    probabilities.dtype = 1
    probabilities.tensor_shape.dim.add().size = 1
    probabilities.tensor_shape.dim.add().size = 1
    probabilities.float_val.append(0.5)
    return response


def _noop_aio_server(port: int) -> int:
    """The do-nothing PredictionService on grpc.aio (one event loop, no worker threads)."""
    import asyncio

    from grpc import aio
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    response = _canned_response()

    class NoOp(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):
            return response

    async def serve():
        server = aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(NoOp(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())
    return 0


def _simple_server(port: int, version_dir: str) -> int:
    """What a user would write instead of a model server: load the SavedModel with
    `tf.saved_model.load`, call its signature from a PredictionService servicer (grpcio's
    thread-pool server), tensors through tf.make_ndarray / tf.make_tensor_proto."""
    from concurrent import futures

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    model = tf.saved_model.load(version_dir)

    class Simple(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            fn = model.signatures[request.model_spec.signature_name or "serving_default"]
            outputs = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Simple(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()
    return 0


def _noop_server(port: int) -> int:
    """A PredictionService that answers a canned response: the same gRPC stack as the model server
    (sync server, 32 worker threads) with no model, decoding or batching. Its figures are the ceiling
    the Python gRPC transport alone allows on this machine."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    response = _canned_response()

    class NoOp(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(NoOp(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()
    return 0


def _measure_floor_in_child(version_dir: str, serialized: bytes, n: int) -> Dict[str, float]:
    """`_measure_floor` in a process of its own: the load generator (this process) then never holds a
    loaded model nor TensorFlow's runtime threads, which would share its cores and its GC with the
    16-client phases that follow (measured side by side: 0.78x the do-nothing server with the floor
    measured in the load generator, 0.81-0.90x without)."""
    env = child_env()
    done = subprocess.run([sys.executable, "-m", "bench.serving_latency", "--floor-child", version_dir, str(n),
                           serialized.hex()], env=env, capture_output=True, text=True, cwd=str(REPO), check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _start_helper_server(*flag_args: str) -> subprocess.Popen:
    env = child_env()
    return subprocess.Popen([sys.executable, "-m", "bench.serving_latency", *flag_args], env=env,
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


def _wait_all_processes(target: str, request, channels: int = 24, timeout_s: float = 300) -> None:
    """Until `channels` fresh connections in a row answer Predict (the kernel spreads connections
    over the processes of a --grpc_processes server, so each may land on any of them)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    deadline, ok = time.monotonic() + timeout_s, 0
    while ok < channels:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target}: not every server process serves the model")
        with grpc.insecure_channel(target) as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
                ok += 1
            except grpc.RpcError:
                ok = 0
                time.sleep(0.5)


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


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads, and its live descendants (a
    `--grpc_processes` server's other processes), from /proc."""
    total = 0.0
    try:
        total += process_cpu_s(pid)
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                total += sum(process_tree_cpu_s(int(child)) for child in f.read().split())
    except FileNotFoundError:  # the process (or a thread) ended meanwhile
        pass
    return total


def _with_cpu(measure, server_pid: int) -> Dict[str, float]:
    """`measure()` plus the CPU per request it took, the server's and this process's (the load generator's).

    On this machine the 16-client phases keep both cores busy, so a server's rate is set by the CPU
    per request of the server and the load generator together: rate ~ cores / (server + load generator).
    """
    server_before, own_before, start = process_tree_cpu_s(server_pid), time.process_time(), time.perf_counter()
    result = measure()
    wall = time.perf_counter() - start
    server_s, own_s = process_tree_cpu_s(server_pid) - server_before, time.process_time() - own_before
    requests = max(result["requests"], 1)
    result["server_cpu_us_per_request"] = server_s / requests * 1e6
    result["load_generator_cpu_us_per_request"] = own_s / requests * 1e6
    result["cores_busy"] = (server_s + own_s) / wall
    return result


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


SERVERS = {  # key: (label, kind)
    "noop": ("do-nothing grpcio server (thread pool)", "noop"),
    "noop_aio": ("do-nothing grpcio server (grpc.aio)", "noop"),
    "simple": ("simple user server (tf.saved_model.load + servicer)", "simple"),
    "threads_batched": ("ours, --grpc_aio=false (thread pool), batching", "ours"),
    "aio_unbatched": ("ours, --grpc_compiled=false (grpc.aio), no batching", "ours"),
    "aio_batched": ("ours, --grpc_compiled=false (grpc.aio), batching", "ours"),
    "compiled_unbatched": ("ours, compiled front end (default), no batching", "ours"),
    "compiled_batched": ("ours, compiled front end (default), batching", "ours"),
}
FRONT_ENDS = {"threads_batched": "threads", "aio_unbatched": "aio", "aio_batched": "aio",
              "compiled_unbatched": "compiled", "compiled_batched": "compiled"}
FLOOR = "floor (in-process signature call)"


def main(argv=None) -> int:
    from pipeline import configs

    from serving.config import model_config
    from serving.client import ServingClient, raw_input_dtypes, row_to_example

    parser = argparse.ArgumentParser(prog="python -m bench.serving_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=configs.default_home())
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--requests", type=int, default=5000, help="sequential requests per 1-client phase "
                        "(split over the rounds)")
    # 3 s per 16-client phase at 5 rounds: with 2 s phases (the earlier default) the same servers measured
    # 0.59-0.68x where 3 s phases gave 0.74-0.81x in the same hour (bench/RESULTS.md, 2026-12-02 (c)).
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each 16-client phase (split over "
                        "the rounds)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="rotating rounds; figures are medians")
    parser.add_argument("--in-process-core", action="store_true",
                        help="also measure the serving core without gRPC (threads calling the Predict handler)")
    parser.add_argument("--noop-server", type=int, default=None, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--noop-aio-server", type=int, default=None, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--simple-server", nargs=2, default=None, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--floor-child", nargs=3, default=None, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.floor_child is not None:
        version_dir, n, example = args.floor_child
        print(json.dumps(_measure_floor(version_dir, bytes.fromhex(example), int(n))))
        return 0
    if args.noop_server is not None:
        return _noop_server(args.noop_server)
    if args.noop_aio_server is not None:
        return _noop_aio_server(args.noop_aio_server)
    if args.simple_server is not None:
        return _simple_server(int(args.simple_server[0]), args.simple_server[1])

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base, source = _model_base(args, workdir)
        versions = model_config.versions_on_disk(str(base))
        version = max(versions)
        batching_file = workdir / "batching.pbtxt"
        batching_file.write_text(BATCHING)

        results = {"command": "python -m bench.serving_latency " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "model": {"base_path": str(base), "version": version, "source": source},
                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "load_avg_at_start": os.getloadavg()[0]},
                   "batching_parameters": BATCHING.strip().replace("\n", "; "),
                   "server_flags": SESSION_FLAGS}
        ports = {key: free_port() for key in SERVERS}
        servers = {
            "noop": _start_helper_server("--noop-server", str(ports["noop"])),
            "noop_aio": _start_helper_server("--noop-aio-server", str(ports["noop_aio"])),
            "simple": _start_helper_server("--simple-server", str(ports["simple"]), versions[version]),
            **{key: _start_server(base, ports[key], str(batching_file) if key.endswith("_batched") else None,
                                  front=front) for key, front in FRONT_ENDS.items()},
        }
        rounds = {}
        try:
            for key in ("noop", "noop_aio", "simple"):
                _wait_for_port(ports[key], 300)
            for key, (_, kind) in SERVERS.items():
                if kind != "ours":
                    continue
                with ServingClient(f"127.0.0.1:{ports[key]}") as client:
                    if not client.wait_until_available("taxi", 300):
                        print("error: the server did not make the model AVAILABLE within 300s", file=sys.stderr)
                        return 1
                    defs = client.signature_defs("taxi")
            rows = _taxi_rows()
            raw = raw_input_dtypes(defs)
            serialized = row_to_example(rows[0], raw).SerializeToString()
            request = _request(serialized)
            for key, (_, kind) in SERVERS.items():
                if kind == "ours":  # every process of a multi-process server has the model
                    _wait_all_processes(f"127.0.0.1:{ports[key]}", request)
            n = max(100, args.requests // args.rounds)
            seconds = args.seconds / args.rounds
            phases_in_order = [(FLOOR, lambda: _measure_floor_in_child(versions[version], serialized, n))]
            for key, (label, _) in SERVERS.items():
                target = f"127.0.0.1:{ports[key]}"
                phases_in_order.append((f"1 client: {label}", lambda t=target: _one_client(t, request, n)))
                phases_in_order.append((f"{args.clients} clients: {label}", lambda t=target, pid=servers[key].pid:
                                        _with_cpu(lambda: _many_clients(t, request, args.clients, seconds), pid)))
            for r in range(args.rounds):
                # Rotate the order each round, reverse it every other round and pause between phases,
                # so no phase always follows the same one (TensorFlow's threads keep spinning briefly).
                shift = r * len(phases_in_order) // args.rounds
                order = phases_in_order[shift:] + phases_in_order[:shift]
                if r % 2:
                    order.reverse()
                for name, measure in order:
                    time.sleep(0.3)
                    rounds.setdefault(name, []).append(measure())
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            if args.in_process_core:
                for _ in range(args.rounds):
                    for label, text in (("on", BATCHING), ("off", None)):
                        rounds.setdefault(f"{args.clients} threads in-process, no gRPC, batching {label}", []).append(
                            _in_process_capacity(base, request, args.clients, seconds, text))
        finally:
            for server in servers.values():
                _stop(server)
    phases = {name: _median(r) for name, r in rounds.items()}
    floor = phases[FLOOR]
    for result in phases.values():
        result["p50_vs_floor_p50"] = result["p50_ms"] / floor["p50_ms"]
        result["throughput_vs_floor_rate"] = result["throughput_rps"] / floor["throughput_rps"]
    results["phases"] = phases
    results["goals"] = _goals(phases, args.clients)
    results["cpu_bound_estimate"] = _cpu_bound_estimate(phases, args.clients)
    results["load_avg_at_end"] = os.getloadavg()[0]

    print(f"model: {source}, version {version} ({base})")
    header = f"{'phase':66} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7}"
    print(header)
    print("-" * len(header))
    for name, r in phases.items():
        print(f"{name:66} {r['p50_ms']:7.3f} {r['p99_ms']:7.3f} {r['throughput_rps']:7.0f}")
    print(f"CPU per request with {args.clients} clients (us; medians over rounds), and the cores the server and the "
          f"load generator kept busy together ({os.cpu_count()} here):")
    for name, r in phases.items():
        if "server_cpu_us_per_request" in r:
            print(f"  {name:64} server {r['server_cpu_us_per_request']:5.0f}  load generator "
                  f"{r['load_generator_cpu_us_per_request']:5.0f}  cores busy {r['cores_busy']:.2f}")
    for goal, value in results["goals"].items():
        print(f"goal {goal}: {value['value']:.3f} (target {value['target']}) -> {'met' if value['met'] else 'NOT met'}")
    estimate = results["cpu_bound_estimate"]
    print(f"CPU-bound estimate of the {args.clients}-client ratio, {estimate['server']}: "
          f"{estimate['ratio_from_cpu']:.3f} = (do-nothing {estimate['ceiling_cpu_us']:.0f} us) / (ours "
          f"{estimate['ours_cpu_us']:.0f} us), server + load generator per request; for 0.8 ours must stay within "
          f"{estimate['ours_cpu_us_for_0_8']:.0f} us")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


def _goals(phases, clients: int):
    """Issue 8 acceptance 5, from this run's medians. The transport ceiling is the faster do-nothing
    server on each measure (lower p50 with 1 client, higher rate with `clients`)."""
    one = {key: phases[f"1 client: {label}"] for key, (label, _) in SERVERS.items()}
    many = {key: phases[f"{clients} clients: {label}"] for key, (label, _) in SERVERS.items()}
    ceiling_p50 = min(one["noop"]["p50_ms"], one["noop_aio"]["p50_ms"])
    ceiling_rate = many[_fastest_do_nothing(many)]["throughput_rps"]
    budget = ceiling_p50 + phases[FLOOR]["p50_ms"]
    goals = {}
    for key in ("compiled_unbatched", "compiled_batched", "aio_unbatched", "aio_batched", "threads_batched"):
        ratio = one[key]["p50_ms"] / budget
        goals[f"1 client p50 / (ceiling p50 + floor p50), {SERVERS[key][0]}"] = {
            "value": ratio, "target": "<= 1.15", "met": ratio <= 1.15}
    for key in ("compiled_batched", "aio_batched", "threads_batched"):
        ratio = many[key]["throughput_rps"] / ceiling_rate
        goals[f"{clients} clients rate / do-nothing server's rate, {SERVERS[key][0]}"] = {
            "value": ratio, "target": ">= 0.8", "met": ratio >= 0.8}
    for key in ("compiled_unbatched", "compiled_batched", "aio_unbatched", "aio_batched", "threads_batched"):
        ratio = one["simple"]["p50_ms"] / one[key]["p50_ms"]
        goals[f"1 client: simple server's p50 / ours, {SERVERS[key][0]}"] = {
            "value": ratio, "target": "> 1", "met": ratio > 1}
    for key in ("compiled_batched", "aio_batched", "threads_batched"):
        ratio = many[key]["throughput_rps"] / many["simple"]["throughput_rps"]
        goals[f"{clients} clients: our rate / simple server's, {SERVERS[key][0]}"] = {
            "value": ratio, "target": "> 1", "met": ratio > 1}
    return goals


def _fastest_do_nothing(many) -> str:
    """The do-nothing server with the higher 16-client rate: the transport ceiling."""
    return max(("noop", "noop_aio"), key=lambda k: many[k]["throughput_rps"])


def _cpu_bound_estimate(phases, clients: int, key: str = "compiled_batched") -> Dict[str, object]:
    """The rate ratio the CPU per request predicts when both cores are busy (rate ~ cores / CPU per
    request of server and load generator together), beside the measured one: how much of the gap to
    the do-nothing server is CPU, and how much CPU per request 0.8x allows."""
    many = {k: phases[f"{clients} clients: {label}"] for k, (label, _) in SERVERS.items()}
    ceiling = _fastest_do_nothing(many)

    def per_request(k):
        return many[k]["server_cpu_us_per_request"] + many[k]["load_generator_cpu_us_per_request"]

    return {"server": SERVERS[key][0], "ceiling": SERVERS[ceiling][0],
            "ceiling_cpu_us": per_request(ceiling), "ours_cpu_us": per_request(key),
            "ratio_from_cpu": per_request(ceiling) / per_request(key),
            "ratio_measured": many[key]["throughput_rps"] / many[ceiling]["throughput_rps"],
            "ours_cpu_us_for_0_8": per_request(ceiling) / 0.8}


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
