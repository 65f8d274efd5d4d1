"""First-request latency with and without SavedModel warmup (issue 8, acceptance 3).

Two scenarios (`--scenario`, default both), each interleaved with its references round by round:
- new-version: what warmup is for in production. A running server serves version 1 to a connected
  client; version 2 lands under the base path as the Pusher writes it (copied aside, renamed in) while
  the client keeps sending requests; the first request version 2 answers is its first real request
  (see _new_version_round). Nothing is cold there but the new version, so the figure isolates the
  model; without warmup that first request is ~8x the median.
- fresh-server (below): a new server process and a new connection per round, which also charges the
  first request with what a new HTTP/2 connection's first call costs on any server.

In fresh-server, each round starts a fresh `taxi-pipeline serve --backend standin` process on a
model version that carries `assets.extra/tf_serving_warmup_requests` (written as the pipeline's
ServingValidator writes them: one PredictRequest per example), waits until the version is
AVAILABLE, then sends one request and times it, then `--requests` more: the figure is first /
median of the rest.

One request is one draw: even on a server with nothing left to warm, it is slower than the median
of the rest in about half the rounds (and the position of a request alone moves it by several per
cent: see the second request's figures). So the bench runs many rounds (25) and reports, beside the
median ratio, how many rounds had the first request slower, with a one-sided sign test: a small p
(< 0.05) means the first request really is slower than the others; a p near or above 0.5 means it
is like any other request. Three references run interleaved with it, on the same client sequence:
the same model with `--enable_model_warmup=false`; a fresh do-nothing PredictionService process
(grpc.aio, canned answer: what a first request costs on a server with no model at all, the cold
gRPC path alone; 1.87-1.93x its median here); and the same do-nothing server after it answered one
Predict on another connection (what a new connection's first Predict costs on a server with
nothing left to warm: the best any server can do for a new client).

Before each server starts, the client process sends one Predict to a canned in-process
PredictionService, so this client's own first-call costs (stub, serialization, response parsing:
1-8 ms) are not charged to the server (`--cold-client` skips it); it runs before the server starts,
so that nothing of the in-process server's shutdown (on the client's gRPC threads) can overlap the
first timed request (no measurable difference in 25-round runs: 1.02 before, 1.09 and 1.03 after).
Nothing warms the model server from outside: its first
real Predict is the first one it serves (the server warms its own gRPC path and, with warmup
records, the model through that path; `--client-warms-server` adds an extra request for a model
that does not exist, which warms the server's gRPC method from the client). Every request, the
first included, follows the same pause (`--gap-ms`, 50): after an idle moment a request costs more
than back-to-back, and the first one always comes after one. Also reported: the time from process
start to AVAILABLE.

    python -m bench.serving_warmup [--rounds R] [--requests N] [--home DIR]

The model: the pipeline's pushed model under `--home` when there is one (its own warmup file is
replaced by one built from taxi rows, so both come from the same examples), else the taxi-like
sample model. Writes bench/results/serving_warmup.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from bench import serving_latency

RESULTS = Path(__file__).resolve().parent / "results" / "serving_warmup.json"
REPO = Path(__file__).resolve().parents[1]


def _model(args, workdir: Path):
    from pipeline import configs

    from components.serving_validator import warmup_logs, write_warmup_model
    from serving.client import row_to_example
    from serving.config import model_config
    from serving.testing.sample_models import export_taxi_like_model

    pushed = configs.PipelineConfig(home=args.home).serving_model_dir
    versions = model_config.versions_on_disk(str(pushed))
    if versions:
        source, kind = versions[max(versions)], "pipeline's pushed model"
    else:
        source, kind = export_taxi_like_model(str(workdir / "sample")), "taxi-like sample model (no pushed model found)"
    import csv

    with open(configs.default_data_root() / "data.csv") as f:
        rows = [r for _, r in zip(range(args.warmup_records + 1), csv.DictReader(f))]
    from tensorflow.python.saved_model import loader_impl

    from serving.client import raw_input_dtypes

    meta_graph = loader_impl.parse_saved_model(str(source)).meta_graphs[0]
    dtypes = raw_input_dtypes(dict(meta_graph.signature_def))  # typed as the model's serving_raw takes them
    examples = [row_to_example(r, dtypes).SerializeToString() for r in rows]
    base = workdir / "taxi"
    version = base / "1"
    shutil.copytree(source, workdir / "plain", ignore=shutil.ignore_patterns("assets.extra"))
    write_warmup_model(str(workdir / "plain"), str(version), warmup_logs(str(workdir / "plain"), examples[1:], "taxi"))
    return base, examples[0], kind


def _warm_client(inputs) -> None:
    """One Predict from this process to a canned in-process PredictionService (no model server).

    A client process's own first Predict (stub, request serialization, response parsing and
    conversion) costs ~1-8 ms whatever the server does; paying it here means the timed first request
    measures the model server's first request only.
    """
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.client import ServingClient
    from serving.util import tensors

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "taxi"
    tensors.from_ndarray(np.array([[0.5]], np.float32), response.outputs["probabilities"])

    class Canned(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Canned(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with ServingClient(f"127.0.0.1:{port}") as client:
            client.predict("taxi", inputs)
    finally:
        server.stop(0)


def start_model_server(base: Path, port: int, warmup: bool, server_args=(), poll_s: float = 30) -> subprocess.Popen:
    """`taxi-pipeline serve --backend standin` on model `taxi` under `base`, in its own process."""
    argv = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", "--backend", "standin", f"--port={port}", "--rest_api_port=0", "--model_name=taxi",
            f"--model_base_path={base}", f"--file_system_poll_wait_seconds={poll_s}",
            f"--enable_model_warmup={'true' if warmup else 'false'}", *server_args]
    env = serving_latency.child_env()
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))


def _round(base: Path, example: bytes, warmup: bool, requests: int, cold_client: bool, gap_s: float,
           client_warms_server: bool = False, server_args=()):
    import grpc

    from serving.client import ServingClient

    port = serving_latency.free_port()
    inputs = {"examples": np.array([example], dtype=object)}
    if not cold_client:
        # Before the server starts, so the in-process server this starts and stops is gone (its
        # shutdown runs on the client's gRPC threads) before anything is timed.
        _warm_client(inputs)
    started = time.perf_counter()
    process = start_model_server(base, port, warmup, server_args)
    try:
        with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            if not client.wait_until_available("taxi", 180):
                raise RuntimeError("the server did not load the model")
            available_s = time.perf_counter() - started
            if client_warms_server:
                try:  # this channel's first Predict (and the server's gRPC method), on a model that does not exist
                    client.predict("no-such-model", inputs)
                except grpc.RpcError:
                    pass
            latencies = _timed_requests(client, inputs, requests, gap_s)
    finally:
        process.terminate()
        process.wait(30)
    return {**_figures(latencies), "available_s": available_s}


def _new_version_round(base: Path, example: bytes, warmup: bool, requests: int, gap_s: float, server_args=()):
    """A new version pushed under traffic: the case warmup exists for in production.

    The server serves version 1 to a connected client (which sends `requests` requests to it); version 2
    (the same SavedModel with the same warmup file) then lands under the base path the way the Pusher
    writes it (copied aside, renamed in), and the client goes on sending a request every `gap_s`. The
    server loads version 2 in the background (replaying its warmup records when `warmup`), makes it
    AVAILABLE and unloads version 1. The first request that version 2 answers (the response's
    model_spec.version says which did) is its first real request; the figure is its latency over the
    median of the next `requests` answered by version 2. Nothing here is cold but the new version: the
    server process, its gRPC method and the connection have all served before, which is what a running
    TF Serving sees when the Pusher lands a new version. Its `available_s` (printed as "AVAILABLE
    after") is the time from the push to version 2's first answer: poll, load, warmup and swap.
    """
    from serving.client import ServingClient

    model_base = base.parent / f"swap-{'warm' if warmup else 'cold'}-{time.monotonic_ns()}"
    shutil.copytree(base / "1", model_base / "1")
    port = serving_latency.free_port()
    inputs = {"examples": np.array([example], dtype=object)}
    process = start_model_server(model_base, port, warmup, server_args, poll_s=0.2)
    try:
        with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            if not client.wait_until_available("taxi", 180):
                raise RuntimeError("the server did not load version 1")
            _timed_requests(client, inputs, requests, gap_s)  # version 1, on this connection
            shutil.copytree(base / "1", model_base / ".2.partial")
            pushed = time.perf_counter()
            os.rename(model_base / ".2.partial", model_base / "2")
            latencies, every, deadline = [], [], time.monotonic() + 180
            while len(latencies) < requests + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("version 2 did not answer within 180 s")
                time.sleep(gap_s)
                t = time.perf_counter()
                _, response = client.predict("taxi", inputs)
                elapsed = time.perf_counter() - t
                every.append(elapsed)
                if response.model_spec.version.value == 2:
                    if not latencies:
                        available_s = time.perf_counter() - pushed
                    latencies.append(elapsed)
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(model_base, ignore_errors=True)
    # The slowest request from the push on, whichever version answered it: what the load, the swap and
    # the old version's unload cost the traffic (a full GC pass stalls the event loop, see
    # serving.model_servers.main.freeze_import_time_objects).
    return {**_figures(latencies), "available_s": available_s, "max_during_swap_ms": max(every) * 1e3}


def _timed_requests(client, inputs, requests: int, gap_s: float):
    latencies = []
    for _ in range(requests + 1):
        # The same pause before every request: a request after an idle moment costs more than one
        # sent back-to-back (threads wake up, caches are cold), and the first one always follows
        # an idle moment, so the rest must too for the ratio to compare like with like.
        time.sleep(gap_s)
        t = time.perf_counter()
        client.predict("taxi", inputs)
        latencies.append(time.perf_counter() - t)
    return latencies


def _noop_round(example: bytes, requests: int, cold_client: bool, gap_s: float, warmed: bool = False):
    """The same client sequence against a fresh do-nothing PredictionService process (grpc.aio, a
    canned answer; bench.serving_latency's ceiling server): what a first request costs on a server
    with no model at all, i.e. the cold gRPC path alone. `warmed`: the server first answers one
    Predict on another connection, so the timed client's first request pays only what a new
    connection's first Predict costs (the best any server can do for a new client)."""
    import grpc

    from serving.client import ServingClient

    port = serving_latency.free_port()
    inputs = {"examples": np.array([example], dtype=object)}
    if not cold_client:
        _warm_client(inputs)
    started = time.perf_counter()
    process = serving_latency._start_helper_server("--noop-aio-server", str(port))
    try:
        serving_latency._wait_for_port(port)
        with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            grpc.channel_ready_future(client.channel).result(timeout=60)
            available_s = time.perf_counter() - started
            if warmed:
                with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as other:
                    other.predict("taxi", inputs)
            latencies = _timed_requests(client, inputs, requests, gap_s)
    finally:
        serving_latency._stop(process)
    return {**_figures(latencies), "available_s": available_s}


def _figures(latencies):
    first, rest = latencies[0] * 1e3, np.median(latencies[1:]) * 1e3
    # A single request is one draw: even on a server with nothing left to warm, it is slower than the
    # median of the rest in about half the rounds. So also: the share of the rest faster than the
    # first (~0.5 when the first is like any other request, 1.0 when it is the slowest), and the same
    # two figures for the second request against the requests after it, the like-for-like reference.
    second, after = latencies[1] * 1e3, np.median(latencies[2:]) * 1e3
    return {"first_ms": first, "median_rest_ms": float(rest), "ratio": first / float(rest),
            "rank": float(np.mean(np.array(latencies[1:]) < latencies[0])),
            "second_ratio": second / float(after), "second_rank": float(np.mean(np.array(latencies[2:]) < latencies[1]))}


def _sign_test(slower: int, faster: int) -> float:
    """One-sided p-value that the first request is slower than the median of the rest more often than
    not (a sign test over the rounds it was slower / faster in; ties left out). A first request like
    any other is slower in half the rounds, so small values (say < 0.05) mean it is really slower."""
    from scipy.stats import binomtest

    if slower + faster == 0:
        return 1.0
    return float(binomtest(slower, slower + faster, 0.5, alternative="greater").pvalue)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--requests", type=int, default=50, help="requests after the first, per round")
    parser.add_argument("--warmup-records", type=int, default=32)
    parser.add_argument("--home", type=Path, default=REPO / "outputs")
    parser.add_argument("--gap-ms", type=float, default=50.0, help="pause before each request")
    parser.add_argument("--cold-client", action="store_true",
                        help="no client-side warm-up request: the first request also pays the client's first call")
    parser.add_argument("--client-warms-server", action="store_true",
                        help="before the timed requests, one Predict for a model that does not exist (NOT_FOUND)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for the model server, e.g. --server-arg=--grpc_aio=false (repeatable)")
    parser.add_argument("--scenario", choices=("both", "fresh-server", "new-version"), default="both",
                        help="fresh-server: each round starts a server and a new connection; new-version: a new "
                             "version lands on a running server under traffic (see _new_version_round)")
    args = parser.parse_args(argv)
    fresh, new_version = args.scenario in ("both", "fresh-server"), args.scenario in ("both", "new-version")
    with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
        base, example, kind = _model(args, Path(tmp))
        names = ((["with_warmup", "without_warmup", "do_nothing_server", "do_nothing_server_warmed"] if fresh else [])
                 + (["new_version_with_warmup", "new_version_without_warmup"] if new_version else []))
        results = {name: [] for name in names}
        gap_s = args.gap_ms / 1e3
        for _ in range(args.rounds):  # interleaved, so load on the machine hits all alike
            if fresh:
                for name, warm in (("with_warmup", True), ("without_warmup", False)):
                    results[name].append(_round(base, example, warm, args.requests, args.cold_client, gap_s,
                                                args.client_warms_server, args.server_arg))
                for name, warmed in (("do_nothing_server", False), ("do_nothing_server_warmed", True)):
                    results[name].append(_noop_round(example, args.requests, args.cold_client, gap_s, warmed))
            if new_version:
                for name, warm in (("new_version_with_warmup", True), ("new_version_without_warmup", False)):
                    results[name].append(_new_version_round(base, example, warm, args.requests, gap_s,
                                                            args.server_arg))
    summary = {}
    for name, rounds in results.items():
        summary[name] = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
        summary[name]["ratio_max"] = float(max(r["ratio"] for r in rounds))
        slower, faster = sum(r["ratio"] > 1.0 for r in rounds), sum(r["ratio"] < 1.0 for r in rounds)
        summary[name]["rounds_first_slower"] = int(slower)
        summary[name]["sign_test_p_first_slower"] = _sign_test(slower, faster)
    report = {"command": "python -m bench.serving_warmup " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": kind, "scenario": args.scenario, "rounds": args.rounds, "cold_client": args.cold_client,
              "client_warms_server": args.client_warms_server, "server_args": args.server_arg,
              "gap_ms": args.gap_ms, "requests_after_first": args.requests,
              "warmup_records": args.warmup_records, "summary (medians over rounds)": summary, "rounds_detail": results,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg": os.getloadavg()}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, s in summary.items():
        ratios = " ".join(f"{r['ratio']:.2f}" for r in results[name])
        seconds = " ".join(f"{r['second_ratio']:.2f}" for r in results[name])
        print(f"{name}\n{'':15s} first {s['first_ms']:7.2f} ms  median of the rest {s['median_rest_ms']:6.2f} ms  "
              f"ratio {s['ratio']:5.2f} (rounds: {ratios})  AVAILABLE after {s['available_s']:.1f} s\n"
              f"{'':15s} share of the rest faster than the first {s['rank']:.2f}; reference, the second request: "
              f"ratio {s['second_ratio']:.2f} (rounds: {seconds}), share faster {s['second_rank']:.2f}\n"
              f"{'':15s} first slower than the median in {s['rounds_first_slower']} of {len(results[name])} rounds: "
              f"sign test p = {s['sign_test_p_first_slower']:.3f} (small: the first request is really slower)")
        if "max_during_swap_ms" in s:
            print(f"{'':15s} slowest request from the push on (median over rounds): {s['max_during_swap_ms']:.1f} ms")
    print(f"model: {kind}; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
