"""The front-end fuzzer, longer than `make test` runs it: more inputs, other seeds, both gRPC front ends.

Each (front end, seed) starts a server process as `serve --enable_batching` runs it (half_plus_two
and the taxi-like model; serving.testing.fuzz_target), sends `--examples` inputs hypothesis draws
from the seed (serving.testing.fuzz_requests: structure-aware PredictRequest / ClassificationRequest
/ RegressionRequest / MultiInferenceRequest, REST bodies, raw bytes) and checks every answer, the
process and a good Predict after each (serving.testing.fuzz_run). Reports the answers by code, the
good Predict's latency over the run and the server's memory before and after; a failing input is
shrunk by hypothesis and printed (make it a regression test in tests/serving/test_serving_hostile.py).

    python -m bench.serving_fuzz [--examples 10000] [--seeds 1,2] [--front-ends compiled,aio]

Writes bench/results/serving_fuzz.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "serving_fuzz.json"
FRONT_ENDS = {"compiled": "true", "aio": "false"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--front-ends", default="compiled,aio")
    args = parser.parse_args(argv)
    from serving.model_servers.compiled_frontend import frontend_binary
    from serving.testing import fuzz_run
    from serving.testing.fuzz_target import FuzzTarget, build_models

    fronts = [f for f in args.front_ends.split(",") if f != "compiled" or frontend_binary() is not None]
    runs, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="serving-fuzz-") as tmp:
        models = build_models(Path(tmp) / "models")
        for front in fronts:
            for seed in (int(s) for s in args.seeds.split(",")):
                run = {"front_end": front, "seed": seed, "examples": args.examples}
                with FuzzTarget(models, Path(tmp) / f"{front}-{seed}", front_end=FRONT_ENDS[front]) as target:
                    for _ in range(50):
                        target.probe()
                    start = target.memory_bytes()
                    try:
                        run.update(fuzz_run.run(target, args.examples, seed))
                    except AssertionError as err:  # hypothesis has shrunk it: the smallest failing input
                        failed += 1
                        run["failure"] = str(err)[:4000]
                    run["memory_mb"] = {"start": round(start / 1e6, 1), "end": round(target.memory_bytes() / 1e6, 1)}
                    run["alive"] = target.alive()
                runs.append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "top_messages"}), flush=True)
    report = {"command": "python -m bench.serving_fuzz " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": f"{platform.node()} {os.cpu_count()} cores",
              "load_average_end": [round(v, 2) for v in os.getloadavg()], "runs": runs}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
