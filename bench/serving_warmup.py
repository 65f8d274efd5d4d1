"""First-request latency with and without SavedModel warmup (issue 8, acceptance 3).

Each round starts a fresh `taxi-pipeline serve --backend standin` process on a model version that
carries `assets.extra/tf_serving_warmup_requests` (written as the pipeline's ServingValidator
writes them: one PredictRequest per example), waits until the version is AVAILABLE, then sends one
request and times it, then `--requests` more: the figure is first / median of the rest. Before the
timed requests the client sends one Predict for a model that does not exist (NOT_FOUND, no model
runs), so the client process's own first-call cost is not charged to the model (`--cold-client`
skips it). The same
model is served with `--enable_model_warmup=false` as the reference, so both sides of the ratio
are measured in the same run. Also reported: the time from process start to AVAILABLE.

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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "serving_warmup.json"
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _round(base: Path, example: bytes, warmup: bool, requests: int, cold_client: bool):
    import grpc

    from serving.client import ServingClient

    port = _free_port()
    argv = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", "--backend", "standin", f"--port={port}", "--rest_api_port=0", "--model_name=taxi",
            f"--model_base_path={base}", "--file_system_poll_wait_seconds=30",
            f"--enable_model_warmup={'true' if warmup else 'false'}"]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))
    try:
        with ServingClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            if not client.wait_until_available("taxi", 180):
                raise RuntimeError("the server did not load the model")
            available_s = time.perf_counter() - started
            inputs = {"examples": np.array([example], dtype=object)}
            if not cold_client:
                # The client's own first Predict (stub, serialization, the server's gRPC method) costs about
                # 1 ms on its own whatever the model: warm it on a model name that does not exist, which
                # runs no model, so what is measured next is the model's first request only.
                try:
                    client.predict("no-such-model", inputs)
                except grpc.RpcError:
                    pass
            latencies = []
            for _ in range(requests + 1):
                t = time.perf_counter()
                client.predict("taxi", inputs)
                latencies.append(time.perf_counter() - t)
    finally:
        process.terminate()
        process.wait(30)
    first, rest = latencies[0] * 1e3, np.median(latencies[1:]) * 1e3
    return {"first_ms": first, "median_rest_ms": float(rest), "ratio": first / float(rest),
            "available_s": available_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50, help="requests after the first, per round")
    parser.add_argument("--warmup-records", type=int, default=32)
    parser.add_argument("--home", type=Path, default=REPO / "outputs")
    parser.add_argument("--cold-client", action="store_true",
                        help="no client-side warm-up request: the first request also pays the client's first call")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
        base, example, kind = _model(args, Path(tmp))
        results = {"with_warmup": [], "without_warmup": []}
        for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
            results["with_warmup"].append(_round(base, example, True, args.requests, args.cold_client))
            results["without_warmup"].append(_round(base, example, False, args.requests, args.cold_client))
    summary = {}
    for name, rounds in results.items():
        summary[name] = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
        summary[name]["ratio_max"] = float(max(r["ratio"] for r in rounds))
    report = {"model": kind, "rounds": args.rounds, "cold_client": args.cold_client, "requests_after_first": args.requests,
              "warmup_records": args.warmup_records, "summary (medians over rounds)": summary, "rounds_detail": results,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg": os.getloadavg()}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, s in summary.items():
        print(f"{name:15s} first {s['first_ms']:7.2f} ms  median of the rest {s['median_rest_ms']:6.2f} ms  "
              f"ratio {s['ratio']:5.2f} (worst round {s['ratio_max']:.2f})  AVAILABLE after {s['available_s']:.1f} s")
    print(f"model: {kind}; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
