"""Training-serving skew: a model served with request logging on, then `taxi-pipeline skew` on its logs.

The shared run's pushed model is served with TF Serving's logging_config (every request sampled);
2,000 rows of the data it was trained on (its training split is two thirds of them) are sent over
gRPC, once as they are and once shifted (fares x1.5, half of the cash rides left out), each into its own log
folder. `skew` must name exactly the shifted features on the shifted logs and none on the others.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from test_drift import write_shifted
from tests_support import write_sample

ROWS = 2000


def serve_and_send(serving_base: Path, prefix: Path, rows, batch: int = 200) -> None:
    from pipeline.predict_cli import predict_rows
    from serving.client import ServingClient
    from serving.config.model_config import parse_config_text
    from serving.model_servers.server import ModelServer, ServerOptions

    config = parse_config_text(f"""
      model_config_list {{ config {{
        name: "taxi" base_path: "{serving_base / 'taxi'}" model_platform: "tensorflow"
        logging_config {{
          log_collector_config {{ type: "" filename_prefix: "{prefix}" }}
          sampling_config {{ sampling_rate: 1.0 }}
        }}
      }} }}""")
    with ModelServer(ServerOptions(config, grpc_port=0, rest_port=None)) as server, \
            ServingClient(f"127.0.0.1:{server.grpc_port}", timeout_s=60) as client:
        assert client.wait_until_available("taxi", 120)
        for start in range(0, len(rows), batch):
            predict_rows(client, "taxi", "serving_default", rows[start:start + batch])


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def logged(taxi_serving_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("skew")
    # Rows from where the training data came from: the taxi CSV is not shuffled, and rows 4,000-5,999 already
    # differ from the first 4,000 in their payment mix by 0.04 (L-infinity), near the 0.05 threshold.
    plain = write_sample(folder / "plain.csv", rows=ROWS, skip=0)
    (folder / "shifted_rows").write_text(str(write_shifted(plain, folder / "shifted.csv")))
    for name in ("plain", "shifted"):
        serve_and_send(taxi_serving_base, folder / "logs" / name / "requests", read_csv(folder / f"{name}.csv"))
    return folder


def test_the_server_logs_prediction_logs_as_tf_serving_does(logged, taxi_serving_base):
    from serving.core.request_logger import read_logs

    files = sorted((logged / "logs" / "plain").iterdir())
    assert len(files) == 1 and files[0].name.startswith("requests-") and files[0].suffix == ".tfrecord"
    entries = list(read_logs([str(files[0])]))
    assert len(entries) == ROWS // 200
    first = entries[0]
    version = int(sorted(p.name for p in (taxi_serving_base / "taxi").iterdir())[-1])
    assert first.log_metadata.model_spec.name == "taxi" and first.log_metadata.model_spec.version.value == version
    assert first.log_metadata.sampling_config.sampling_rate == 1.0
    assert list(first.log_metadata.saved_model_tags) == ["serve"]
    assert first.predict_log.request.inputs["examples"].tensor_shape.dim[0].size == 200
    assert first.predict_log.response.outputs["probabilities"].tensor_shape.dim[0].size == 200


def _skew(logs: Path, home: Path):
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "skew", "--logs", str(logs), "--home", str(home)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_skew_names_the_shifted_features(logged, taxi_pipeline_run):
    out = _skew(logged / "logs" / "shifted", taxi_pipeline_run.home)
    assert f"{int((logged / 'shifted_rows').read_text()):,} logged rows" in out
    skewed = [l for l in out.splitlines() if l.strip().startswith("skewed: ")]
    assert len(skewed) == 1 and sorted(skewed[0].split(": ", 1)[1].split(", ")) == ["fare", "payment_type"], out
    plot = Path(out.strip().splitlines()[-1].split("plot: ", 1)[1])
    assert plot.stat().st_size > 10_000  # a real figure, not an empty canvas


def test_unshifted_requests_give_no_skew(logged, taxi_pipeline_run):
    out = _skew(logged / "logs" / "plain", taxi_pipeline_run.home)
    assert "skewed: none" in out, out


def test_raw_feature_requests_become_the_rows_they_carried():
    import numpy as np
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    from pipeline.skew import examples_of
    from serving.util import tensors

    entry = prediction_log_pb2.PredictionLog()
    inputs = entry.predict_log.request.inputs
    tensors.from_ndarray(np.array([b"Cash", b""], dtype=object), inputs["payment_type"])
    tensors.from_ndarray(np.array([7.25, float("nan")], dtype=np.float32), inputs["fare"])
    tensors.from_ndarray(np.array([13, -1], dtype=np.int64), inputs["trip_start_hour"])
    first, second = [example_pb2.Example.FromString(s) for s in examples_of(entry)]
    assert first.features.feature["payment_type"].bytes_list.value == [b"Cash"]
    assert first.features.feature["fare"].float_list.value == [7.25]
    assert first.features.feature["trip_start_hour"].int64_list.value == [13]
    assert dict(second.features.feature) == {}  # "", NaN and -1 mark missing values, as in serving_raw


def test_status_and_the_report_show_the_last_skew_check_with_its_plot(logged, taxi_pipeline_run):
    from pipeline import report, run_view, status

    _skew(logged / "logs" / "shifted", taxi_pipeline_run.home)
    check = run_view.load_skew(taxi_pipeline_run.reports_dir)
    assert sorted(f.feature for m in check.models for f in m.skewed) == ["fare", "payment_type"]
    text = status.render(taxi_pipeline_run, 1)
    line = next(l for l in text.splitlines() if l.startswith("skew (last `taxi-pipeline skew`"))
    assert "fare Jensen-Shannon" in line and "payment_type L-infinity" in line, text
    html = report.build(taxi_pipeline_run).read_text()
    section = html[html.index('id="skew"'):]
    section = section[:section.index("</table>")]
    assert "data:image/png;base64," in section  # the skew result comes as a plot, beside its table
    assert section.count("SKEW<") == 2 and section.count(">ok<") == 3, section[-3000:]
