"""What a new gRPC connection's first Predict costs, and which side pays it (issue 8, acceptance 3).

`bench.serving_warmup` finds that with SavedModel warmup the first request on a fresh client is
still a few per cent slower than the median of the rest, and that a do-nothing server warmed through
another connection shows the same. This bench measures that residual directly: against a warmed
server (ours with a warmed model, and the do-nothing grpc.aio PredictionService of
`bench.serving_latency`), each round opens a new channel, waits until it is connected, and sends
`--requests` + 1 Predicts, `--gap-ms` apart (1 ms by default: after a 50 ms pause the wake-up of
idle threads, ~2 ms here, hides most of it). Around every request it reads the CPU time that the
server process and this client process spent (the sum of `/proc/<pid>/task/*/schedstat`, in ns, a
2 ms settle after each response included), so the first request's extra cost splits into the
server's share and the client's: only the server's share is a server's to remove.

    python -m bench.new_connection [--rounds R] [--requests N] [--gap-ms G] [--home DIR]

Writes bench/results/new_connection.json. Linux only (schedstat).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "new_connection.json"
SETTLE_S = 0.002  # after each response, so the server's work on it (write completion, cleanup) is counted


def cpu_ns(pid: int) -> int:
    """CPU time all threads of process `pid` have run, in ns (reading it costs the reader, not `pid`)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:  # a thread that ended in between
            pass
    return total


def _own_cpu_ns() -> int:
    """This process's CPU time, all threads (one cheap call, unlike reading /proc per thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def _idle_cpu_us_per_s(pid: int, seconds: float = 1.0) -> float:
    before = cpu_ns(pid)
    time.sleep(seconds)
    return (cpu_ns(pid) - before) / 1e3 / seconds


def _connection_round(port: int, server_pid: int, inputs, requests: int, gap_s: float):
    import grpc

    from serving.client import ServingClient

    wall, server_cpu, client_cpu = [], [], []
    with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as client:
        grpc.channel_ready_future(client.channel).result(timeout=60)
        for _ in range(requests + 1):
            time.sleep(gap_s)
            s0 = cpu_ns(server_pid)
            c0 = _own_cpu_ns()
            t = time.perf_counter()
            client.predict("taxi", inputs)
            wall.append(time.perf_counter() - t)
            time.sleep(SETTLE_S)
            client_cpu.append(_own_cpu_ns() - c0)
            server_cpu.append(cpu_ns(server_pid) - s0)
    rest = slice(2, None)  # the first two against those after them
    return {
        "first_ratio": wall[0] / float(np.median(wall[1:])),
        "second_ratio": wall[1] / float(np.median(wall[rest])),
        "first_ms": wall[0] * 1e3, "median_rest_ms": float(np.median(wall[1:])) * 1e3,
        "server_cpu_first_extra_us": (server_cpu[0] - float(np.median(server_cpu[rest]))) / 1e3,
        "server_cpu_second_extra_us": (server_cpu[1] - float(np.median(server_cpu[rest]))) / 1e3,
        "client_cpu_first_extra_us": (client_cpu[0] - float(np.median(client_cpu[rest]))) / 1e3,
        "client_cpu_second_extra_us": (client_cpu[1] - float(np.median(client_cpu[rest]))) / 1e3,
        "server_cpu_median_us": float(np.median(server_cpu[rest])) / 1e3,
        "client_cpu_median_us": float(np.median(client_cpu[rest])) / 1e3,
    }


def _summary(rounds):
    keys = rounds[0].keys()
    summary = {k: float(np.median([r[k] for r in rounds])) for k in keys}
    summary["rounds_first_slower"] = int(sum(r["first_ratio"] > 1 for r in rounds))
    return summary


def main(argv=None) -> int:
    from bench import serving_latency, serving_warmup
    from serving.client import ServingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=30, help="requests after the first, per connection")
    parser.add_argument("--gap-ms", type=float, default=1.0, help="pause before each request")
    parser.add_argument("--home", type=Path, default=REPO / "outputs")
    parser.add_argument("--warmup-records", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-newconn-") as tmp:
        base, example, kind = serving_warmup._model(args, Path(tmp))
        inputs = {"examples": np.array([example], dtype=object)}
        ports = {"ours": serving_latency.free_port(), "do_nothing": serving_latency.free_port()}
        servers = {"ours": serving_warmup.start_model_server(base, ports["ours"], warmup=True),
                   "do_nothing": serving_latency._start_helper_server("--noop-aio-server", str(ports["do_nothing"]))}
        results = {name: [] for name in servers}
        try:
            with ServingClient(f"127.0.0.1:{ports['ours']}", timeout_s=60) as client:
                if not client.wait_until_available("taxi", 300):
                    print("error: the model server did not make the model AVAILABLE", file=sys.stderr)
                    return 1
            serving_latency._wait_for_port(ports["do_nothing"])
            idle = {name: _idle_cpu_us_per_s(process.pid) for name, process in servers.items()}
            for name, port in ports.items():  # warm each server (and this client) on another connection
                with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as client:
                    for _ in range(20):
                        client.predict("taxi", inputs)
            for i in range(args.rounds):
                for name, process in servers.items():  # interleaved: both see the same machine state
                    results[name].append(_connection_round(ports[name], process.pid, inputs, args.requests,
                                                           args.gap_ms / 1e3))
                print(f"  round {i + 1}/{args.rounds}: " + ", ".join(
                    f"{n} first/median {r[-1]['first_ratio']:.2f}" for n, r in results.items()), flush=True)
        finally:
            for process in servers.values():
                serving_latency._stop(process)
    report = {
        "command": "python -m bench.new_connection " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": kind, "rounds": args.rounds, "requests_after_first": args.requests, "gap_ms": args.gap_ms,
        "summary (medians over rounds)": {name: _summary(r) for name, r in results.items()},
        "server_idle_cpu_us_per_s": idle,
        "rounds_detail": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_end": os.getloadavg()[0]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"new connection, {args.rounds} rounds, {args.requests} requests after the first, {args.gap_ms} ms apart:")
    for name, s in report["summary (medians over rounds)"].items():
        print(f"  {name:<11} first / median of the rest {s['first_ratio']:.2f} (slower in {s['rounds_first_slower']} of "
              f"{args.rounds}), second {s['second_ratio']:.2f}; first request's extra CPU: server "
              f"{s['server_cpu_first_extra_us']:.0f} us, client {s['client_cpu_first_extra_us']:.0f} us "
              f"(a request otherwise: server {s['server_cpu_median_us']:.0f} us, client {s['client_cpu_median_us']:.0f} us)")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
