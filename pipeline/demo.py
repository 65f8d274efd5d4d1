"""End of `make run`: serve the pushed model, query a few eval rows over gRPC, stop the server.

`python -m pipeline.demo --home H` starts a model server (real `tensorflow_model_server` when it is
on PATH, else the stand-in) on free loopback ports over `<home>/serving/taxi`, waits until the model
is AVAILABLE, sends ~5 eval rows through the official gRPC client and prints each row's label beside
the predicted probability, then stops the server. Non-zero exit, one line, if nothing was pushed.
"""
from __future__ import annotations

import argparse
import glob
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from trainer_module.records import EVAL_SPLIT, split_dir

ROWS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _example_to_row(serialized: bytes) -> Dict[str, object]:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if values:
            value = values[0]
            row[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return row


def eval_rows(home: Path, count: int = ROWS) -> List[Dict[str, object]]:
    """Rows from the newest eval split ExampleGen wrote; the CSV sample when there is none."""
    pattern = os.path.join(split_dir(os.path.join(home, "pipeline_root", "**", "*ExampleGen", "examples", "*"),
                                             EVAL_SPLIT), "*.gz")
    files = sorted(glob.glob(pattern, recursive=True), key=os.path.getmtime)
    if files:
        import tensorflow as tf

        newest = os.path.dirname(files[-1])
        records = tf.data.TFRecordDataset(sorted(glob.glob(os.path.join(newest, "*.gz"))), compression_type="GZIP")
        return _mixed([_example_to_row(r.numpy()) for r in records.take(50 * count)], count)
    import csv

    from pipeline import configs

    with open(configs.default_data_root() / "data.csv") as f:
        reader = csv.DictReader(f)
        return [next(reader) for _ in range(count)]


def _mixed(rows: List[Dict[str, object]], count: int) -> List[Dict[str, object]]:
    """`count` rows in file order, with both labels present when the rows have both (a demo of one class shows little)."""
    from trainer_module.features import label_from_row

    positives = [r for r in rows if label_from_row(r) == 1][: count // 2]
    rest = [r for r in rows if r not in positives][: count - len(positives)]
    return sorted(positives + rest, key=rows.index)


class _RealServer:
    """tensorflow_model_server as a child process (used when it is installed)."""

    def __init__(self, binary: str, base: str, name: str):
        self.grpc_port = _free_port()
        self._process = subprocess.Popen(
            [binary, f"--port={self.grpc_port}", "--rest_api_port=0", f"--model_name={name}",
             f"--model_base_path={base}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def main(argv: Optional[List[str]] = None) -> int:
    from pipeline import configs

    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=configs.default_home())
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the model to load")
    args = parser.parse_args(argv)

    config = configs.PipelineConfig(home=args.home)
    base = config.serving_base / config.model_name
    from serving.config import model_config

    if not model_config.versions_on_disk(str(base)):
        print(f"demo: no pushed model under {base}; run the pipeline first (the Pusher writes it)", file=sys.stderr)
        return 1

    from serving.model_servers import launcher
    from serving.model_servers import main as serve_cli
    from serving.client import ServingClient
    from pipeline.predict_cli import format_table, predict_rows

    binary = launcher.find_binary()
    if binary:
        server = _RealServer(binary, str(base), config.model_name)
        kind = "tensorflow_model_server"
    else:
        from serving.model_servers.server import ModelServer, ServerOptions

        serve_cli.configure_logging()
        server = ModelServer(ServerOptions(model_config.single_model_config(config.model_name, str(base)),
                                           grpc_port=0, rest_port=None)).start()
        kind = "stand-in model server"
    try:
        target = f"127.0.0.1:{server.grpc_port}"
        with ServingClient(target, timeout_s=30) as client:
            started = time.monotonic()
            if not client.wait_until_available(config.model_name, args.timeout):
                print(f"demo: model {config.model_name} did not become AVAILABLE within {args.timeout:.0f}s "
                      f"(see the server log above)", file=sys.stderr)
                return 1
            rows = eval_rows(args.home, args.rows)
            outputs, response = predict_rows(client, config.model_name, "serving_default", rows)
        from trainer_module.features import label_from_row

        labels = [label_from_row(r) for r in rows]
        print(f"{kind} on {target}: model {response.model_spec.name} version {response.model_spec.version.value} "
              f"AVAILABLE after {time.monotonic() - started:.1f}s; {len(rows)} eval rows over gRPC:")
        print(format_table(rows, outputs, labels))
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
