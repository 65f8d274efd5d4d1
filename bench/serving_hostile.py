"""Good clients under hostile and expensive traffic (issue 29): their latency alone and beside it.

One server process (`serve --enable_batching` as the issue ran it: the compiled gRPC front end,
TF Serving's default batching, half_plus_two and the taxi-like sample model), and phases of a good
client (sequential Predicts of one example on `--good-model`) measured:
- alone;
- while another client streams Predicts declaring 10,000,000 string elements in ~40 bytes, one per
  `--pace-ms` (acceptance 2 of the issue: the good client's p99 within 2x of its p99 alone);
- while another client streams legitimate but expensive Predicts to the other model (1,000 taxi
  tf.Examples each, within the batch limit): isolation between models (2 shared cores: what is left
  is CPU contention, not waiting for the other model's run);
- the refusal time of the issue's 1e9-element request (acceptance 1: within 10 ms; this checkout only);
- what the isolation costs good traffic: 16 concurrent clients of the taxi model (one example each,
  bench.serving_latency's load generator) for `--many-seconds` per round, their rate and p50.
Phases alternate over `--rounds` rounds (alone first in odd rounds, last in even ones); the ratios
are of p99s pooled over the rounds, all from this run.

With `--baseline-tree DIR` (a checkout of an earlier commit, e.g. `git archive ed89a9c serving | tar
-x -C DIR`) the same phases run against that tree's server too, side by side (its runs and batches
on the compiled front end's dispatch thread): what the isolation changed, measured in one run.

    python -m bench.serving_hostile [--rounds 4] [--requests 400] [--many-seconds 5] [--baseline-tree DIR]

Writes bench/results/serving_hostile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "serving_hostile.json"
REPO = Path(__file__).resolve().parents[1]


def _requests():
    """(good half, good taxi, 1e7-element, 1e9-element, expensive taxi batch of 1,000) PredictRequests."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    def request(name, alias, dtype, count, values):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = name
        t = r.inputs[alias]
        t.dtype = dtype
        t.tensor_shape.dim.add().size = count
        (t.string_val if dtype == 7 else t.float_val).extend(values)
        return r

    example = tf.train.Example()
    for name, value in (("fare", 12.5), ("trip_miles", 3.2)):
        example.features.feature[name].float_list.value.append(value)
    for name, value in (("trip_seconds", 900), ("trip_start_hour", 14)):
        example.features.feature[name].int64_list.value.append(value)
    for name, value in (("payment_type", b"Cash"), ("company", b"Flash Cab")):
        example.features.feature[name].bytes_list.value.append(value)
    one = example.SerializeToString()
    return {"half": request("half", "x", 1, 1, [2.0]), "taxi": request("taxi", "examples", 7, 1, [one]),
            "1e7": request("taxi", "examples", 7, 10_000_000, [b"x"]),
            "1e9": request("taxi", "examples", 7, 1_000_000_000, [b"x"]),
            "expensive": request("taxi", "examples", 7, 1000, [one] * 1000)}


class _Server:
    """A server process from `tree` (this checkout, or a baseline one), the compiled front end."""

    def __init__(self, tree: Path, models: Dict[str, str], workdir: Path):
        from bench.serving_latency import child_env, free_port

        config = workdir / "models.config"
        config.write_text("model_config_list {\n" + "".join(
            f'config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}\n'
            for n, p in models.items()) + "}\n")
        self.port = free_port()
        argv = [sys.executable, "-m", "serving.model_servers.main", "--backend=standin", f"--port={self.port}",
                "--rest_api_port=0", f"--model_config_file={config}", "--enable_batching",
                "--file_system_poll_wait_seconds=30", "--grpc_compiled=true"]
        from serving.model_servers.compiled_frontend import BINARY_ENV, frontend_binary

        env = dict(child_env(), PYTHONPATH=str(tree), **{BINARY_ENV: frontend_binary() or ""})
        import subprocess

        self.process = subprocess.Popen(argv, env=env, cwd=str(tree), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


def _wait_ready(stub, requests, timeout_s=300.0):
    import grpc

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stub.Predict(requests["half"], timeout=5)
            stub.Predict(requests["taxi"], timeout=5)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _stream(stub, request, pace_s: float, stop: threading.Event, counts: dict) -> None:
    import grpc

    while not stop.is_set():
        started = time.perf_counter()
        try:
            stub.Predict(request, timeout=60)
            code = "OK"
        except grpc.RpcError as err:
            code = err.code().name
        counts[code] = counts.get(code, 0) + 1
        counts["seconds"] = counts.get("seconds", 0.0) + time.perf_counter() - started
        if pace_s:
            time.sleep(pace_s)


def _good_client(stub, request, n: int) -> List[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        stub.Predict(request, timeout=60)
        latencies.append(time.perf_counter() - started)
    return latencies


def _measure(port: int, requests, args, send_1e9: bool = True) -> Dict[str, object]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from bench.serving_latency import _many_clients

    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
    good, other = (prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels)
    _wait_ready(good, requests)
    _good_client(good, requests[args.good_model], 100)
    phases = {"alone": [], "1e7 stream": [], "expensive other model": []}
    streams = {"1e7 stream": (requests["1e7"], args.pace_ms / 1e3),
               "expensive other model": (requests["expensive"], 0.0)}
    counts = {name: {} for name in streams}
    for round_index in range(args.rounds):
        order = list(phases) if round_index % 2 == 0 else list(reversed(list(phases)))
        for phase in order:
            stop, thread = threading.Event(), None
            if phase in streams:
                thread = threading.Thread(target=_stream, args=(other, *streams[phase], stop, counts[phase]))
                thread.start()
                time.sleep(0.1)
            phases[phase] += _good_client(good, requests[args.good_model], args.requests)
            stop.set()
            if thread is not None:
                thread.join()
    many = [_many_clients(f"127.0.0.1:{port}", requests["taxi"], 16, args.many_seconds) for _ in range(args.rounds)]
    refusals = []
    for _ in range(20 if send_1e9 else 0):
        started = time.perf_counter()
        try:
            good.Predict(requests["1e9"], timeout=60)
        except grpc.RpcError:
            pass
        refusals.append(time.perf_counter() - started)
    for channel in channels:
        channel.close()
    ms = {phase: np.array(v) * 1e3 for phase, v in phases.items()}
    summary = {phase: {"requests": len(v), "p50_ms": round(float(np.percentile(v, 50)), 3),
                       "p99_ms": round(float(np.percentile(v, 99)), 3)} for phase, v in ms.items()}
    for phase, c in counts.items():
        calls = sum(n for code, n in c.items() if code != "seconds")
        summary[phase]["stream"] = {"calls": calls, "codes": {k: v for k, v in c.items() if k != "seconds"},
                                    "mean_ms": round(1e3 * c.get("seconds", 0.0) / max(calls, 1), 3)}
    p99_alone = summary["alone"]["p99_ms"]
    return {"phases": summary,
            "p99_ratio_1e7_stream": round(summary["1e7 stream"]["p99_ms"] / p99_alone, 3),
            "p99_ratio_expensive_other_model": round(summary["expensive other model"]["p99_ms"] / p99_alone, 3),
            "16_clients": {"rate_rps": round(float(np.median([m["throughput_rps"] for m in many])), 1),
                           "p50_ms": round(float(np.median([m["p50_ms"] for m in many])), 3),
                           "errors": sum(m["errors"] for m in many)},
            "refusal_1e9_ms": {"p50": round(float(np.median(refusals)) * 1e3, 3),
                               "max": round(float(np.max(refusals)) * 1e3, 3)} if refusals else "not sent"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400, help="good requests per phase and round")
    parser.add_argument("--pace-ms", type=float, default=5.0, help="pause between the 1e7-element requests")
    parser.add_argument("--good-model", choices=("half", "taxi"), default="half")
    parser.add_argument("--many-seconds", type=float, default=5.0, help="16-client phase length per round")
    parser.add_argument("--baseline-tree", type=Path, default=None)
    args = parser.parse_args(argv)
    from serving.model_servers.compiled_frontend import frontend_binary
    from serving.testing.fuzz_target import build_models

    if frontend_binary() is None:
        print("the compiled gRPC front end is not built (make grpc-frontend): nothing to measure")
        return 0
    requests = _requests()
    trees = {"this checkout": REPO}
    if args.baseline_tree is not None:
        trees[f"baseline {args.baseline_tree}"] = args.baseline_tree.resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="serving-hostile-") as tmp:
        models = build_models(Path(tmp))
        for name, tree in trees.items():
            workdir = Path(tmp) / name.replace(" ", "_").replace("/", "_")
            workdir.mkdir()
            server = _Server(tree, models, workdir)
            try:
                # A baseline from before issue 29 builds the 1e9-element tensor (8 GB of objects, then
                # TensorFlow's 32 GB of tstrings): not sent there.
                results[name] = _measure(server.port, requests, args, send_1e9=tree == REPO)
            finally:
                server.stop()
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    report = {"command": "python -m bench.serving_hostile " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": f"{platform.node()} {os.cpu_count()} cores",
              "load_average_end": [round(v, 2) for v in os.getloadavg()], "args": {k: str(v) for k, v in vars(args).items()},
              "results": results}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
