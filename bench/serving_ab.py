"""Side by side: server variants under 16 clients, against the do-nothing servers, in one balanced run.

`bench/serving_latency` runs every server design and both client loads; a question such as "does this
flag or this environment variable make the default server faster?" needs only the 16-client phase, many
rounds, and a paired comparison. This runs the two do-nothing servers (grpcio's thread pool and
grpc.aio), the default server (grpc.aio, batching, as serving_latency starts it) and each variant, all
loaded at once, then measures them one after another round after round. The order is a cyclic Latin
square: round r starts at server r (mod n), so over a multiple of n rounds every server takes every
position equally often. In a probe that only reversed the order every other round (bench/RESULTS.md 2026-12-02 (e)), one
TensorFlow setting measured 6% faster placed last and 9% slower placed in the middle: the position
moved the figure as much as the effects worth measuring here.

    python -m bench.serving_ab [--home HOME | --model-dir DIR] [--rounds 12] [--seconds 3] \\
        [VARIANT ...]

A VARIANT is `name` or `name:KEY=VALUE,KEY=VALUE`: environment variables of that server's process, and
the key ARGS for extra server flags separated by `|` (e.g. `switch5:ARGS=--gil_switch_interval_ms=5`,
`poll:GRPC_POLL_STRATEGY=poll`). Figures per server: median rate, p50, CPU per request of the server
(process tree) and of the load generator; each variant's paired ratio to the default server (median
over rounds, and how many rounds it was faster). Writes bench/results/serving_ab.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from bench import serving_latency as latency

RESULTS = Path(__file__).resolve().parent / "results" / "serving_ab.json"
DO_NOTHING = {"noop": "--noop-server", "noop_aio": "--noop-aio-server"}


def parse_variant(spec: str) -> Tuple[str, Dict[str, str], List[str]]:
    """`name[:KEY=VALUE,...]` -> (name, environment, extra server flags from ARGS)."""
    name, _, assignments = spec.partition(":")
    if not name or name in DO_NOTHING or name == "default":
        raise ValueError(f"variant name {name!r} is empty or taken")
    env: Dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} in variant {name!r} is not KEY=VALUE")
        env[key] = value
    flags = [flag for flag in env.pop("ARGS", "").split("|") if flag]
    return name, env, flags


def round_order(names: List[str], r: int) -> List[str]:
    """Round r's order: a cyclic Latin square (every name in every position once per len(names) rounds)."""
    shift = r % len(names)
    return names[shift:] + names[:shift]


def main(argv=None) -> int:
    from pipeline import configs
    from serving.client import ServingClient, raw_input_dtypes, row_to_example

    parser = argparse.ArgumentParser(prog="python -m bench.serving_ab", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=configs.default_home())
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each 16-client phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("variants", nargs="*", help="name or name:KEY=VALUE,... (ARGS=--flag|--flag for server flags)")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(spec) for spec in args.variants]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        base, source = latency._model_base(args, Path(tmp))  # pylint: disable=protected-access
        batching_file = Path(tmp) / "batching.pbtxt"
        batching_file.write_text(latency.BATCHING)
        ports = {}
        try:
            for name, flag in DO_NOTHING.items():
                ports[name] = latency.free_port()
                servers[name] = latency._start_helper_server(flag, str(ports[name]))  # pylint: disable=protected-access
            for name, env, flags in [("default", {}, [])] + variants:
                ports[name] = latency.free_port()
                servers[name] = latency._start_server(base, ports[name], str(batching_file), front=None,  # pylint: disable=protected-access
                                                      extra_args=flags, extra_env=env)
            for name in DO_NOTHING:
                latency._wait_for_port(ports[name], 300)  # pylint: disable=protected-access
            ours = ["default"] + [name for name, _, _ in variants]
            for name in ours:
                with ServingClient(f"127.0.0.1:{ports[name]}") as client:
                    if not client.wait_until_available("taxi", 300):
                        print(f"error: server {name} did not make the model AVAILABLE within 300 s", file=sys.stderr)
                        return 1
                    defs = client.signature_defs("taxi")
            serialized = row_to_example(latency._taxi_rows()[0], raw_input_dtypes(defs)).SerializeToString()  # pylint: disable=protected-access
            request = latency._request(serialized)  # pylint: disable=protected-access
            for name in ours:  # every process of a multi-process variant has the model
                latency._wait_all_processes(f"127.0.0.1:{ports[name]}", request)  # pylint: disable=protected-access
            names = list(servers)
            rounds: Dict[str, List[dict]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in round_order(names, r):
                    time.sleep(0.3)
                    target = f"127.0.0.1:{ports[name]}"
                    rounds[name].append(latency._with_cpu(  # pylint: disable=protected-access
                        lambda t=target: latency._many_clients(t, request, args.clients, args.seconds),  # pylint: disable=protected-access
                        servers[name].pid))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                latency._stop(server)  # pylint: disable=protected-access

    summary = summarize(rounds, [name for name, _, _ in variants])
    results = {"command": "python -m bench.serving_ab " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": {"base_path": str(base), "source": source}, "clients": args.clients,
               "seconds": args.seconds, "variants": {name: {"env": env, "flags": flags} for name, env, flags in variants},
               "servers": summary, "rounds": rounds}
    print(f"{'server':12} {'req/s':>7} {'x thread-pool':>13} {'x aio':>6} {'p50 ms':>7} {'server us':>9} "
          f"{'loadgen us':>10}  paired vs default")
    for name, s in summary.items():
        paired = (f"{s['paired_ratio_vs_default']:.3f} (faster in {s['faster_than_default_in']} of "
                  f"{len(rounds[name])})" if "paired_ratio_vs_default" in s else "")
        print(f"{name:12} {s['throughput_rps']:7.0f} {s['vs_noop']:13.3f} {s['vs_noop_aio']:6.3f} {s['p50_ms']:7.2f} "
              f"{s['server_cpu_us_per_request']:9.0f} {s['load_generator_cpu_us_per_request']:10.0f}  {paired}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


def summarize(rounds: Dict[str, List[dict]], variant_names: List[str]) -> Dict[str, dict]:
    """Medians per server, ratios to each do-nothing server, and each variant's paired ratio to the default."""
    def median(name, key):
        return float(np.median([r[key] for r in rounds[name]]))

    summary = {}
    for name in rounds:
        summary[name] = {key: median(name, key) for key in ("throughput_rps", "p50_ms", "server_cpu_us_per_request",
                                                            "load_generator_cpu_us_per_request", "cores_busy")}
    for name in rounds:
        for ref in DO_NOTHING:
            summary[name][f"vs_{ref}"] = summary[name]["throughput_rps"] / summary[ref]["throughput_rps"]
    for name in variant_names:
        paired = [v["throughput_rps"] / d["throughput_rps"] for v, d in zip(rounds[name], rounds["default"])]
        summary[name]["paired_ratio_vs_default"] = float(np.median(paired))
        summary[name]["faster_than_default_in"] = int(sum(p > 1 for p in paired))
    return summary


if __name__ == "__main__":
    sys.exit(main())
