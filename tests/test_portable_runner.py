"""The pipeline on Beam's portable path: Beam's own job service and an external worker pool, as Flink,
Spark and Dataflow Runner v2 run Python pipelines.

The job service (`local_job_service_main`) receives each Beam-using component's job as a portable
pipeline; the worker pool (`worker_pool_main`, environment EXTERNAL) starts the SDK workers that run
it, as separate processes. The pool starts with this repository's venv first on PATH (it starts
workers as plain `python`) so the workers import our modules (tensorflow/tfx#4948). Rows lost in
multi-process runs have happened before (tensorflow/data-validation#247): every stage's row count is
checked against the input's.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests_support import write_sample

pytestmark = pytest.mark.slow  # a whole pipeline on the portable runner

ROWS = 1200
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc, log: Path, within_s: float = 120) -> None:
    deadline = time.time() + within_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"port {port} not open after {within_s} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def beam_services(tmp_path_factory):
    """(job endpoint, worker pool address, job service log, worker pool log); both stopped afterwards."""
    folder = tmp_path_factory.mktemp("beam-services")
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    job_port, pool_port = _free_port(), _free_port()
    procs = []
    try:
        logs = {}
        for name, module, flag, port in (
            ("job_service", "apache_beam.runners.portability.local_job_service_main", "--port", job_port),
            ("worker_pool", "apache_beam.runners.worker.worker_pool_main", "--service_port", pool_port),
        ):
            logs[name] = folder / f"{name}.log"
            out = open(logs[name], "w")
            procs.append(subprocess.Popen([sys.executable, "-m", module, flag, str(port)], env=env, cwd=str(folder),
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            _wait_for_port(port, procs[-1], logs[name])
        yield f"localhost:{job_port}", f"localhost:{pool_port}", logs["job_service"], logs["worker_pool"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)  # the pool's own process group: it and the workers it started
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)


@pytest.fixture(scope="module")
def portable_run(beam_services, tmp_path_factory):
    from pipeline import configs
    from pipeline.local_runner import run_pipeline

    job_endpoint, pool, _, _ = beam_services
    data = tmp_path_factory.mktemp("portable-data")
    write_sample(data / "data.csv", rows=ROWS)
    config = configs.PipelineConfig(
        home=tmp_path_factory.mktemp("portable-home"), data_root=data, train_steps=60, eval_steps=2,
        min_auc=0.6, min_accuracy=0.6, beam_runner="portable", beam_job_endpoint=job_endpoint,
        beam_environment="EXTERNAL", beam_environment_config=pool)
    return config, run_pipeline(config)


def _count_records(folder: Path) -> int:
    import tensorflow as tf

    files = sorted(str(p) for p in folder.glob("*.gz"))
    assert files, folder
    return int(tf.data.TFRecordDataset(files, compression_type="GZIP").reduce(0, lambda n, _: n + 1))


def test_every_stage_keeps_every_row_on_the_portable_runner(portable_run):
    config, view = portable_run
    assert {n: r.state for n, r in view.nodes.items() if r.state != "COMPLETE"} == {}
    examples = Path(view.nodes["CsvExampleGen"].output_uri("examples"))
    written = {split: _count_records(examples / f"Split-{split}") for split in ("train", "eval")}
    assert sum(written.values()) == ROWS  # ExampleGen: every CSV row became an example
    assert view.rows == written  # StatisticsGen counted the same rows
    assert view.training.train_rows == written["train"]  # the Trainer read (and transformed) every one
    assert int(view.overall["example_count"]) == written["eval"]  # the Evaluator saw the whole eval split


def test_the_model_is_blessed_and_pushed(portable_run):
    config, view = portable_run
    assert view.verdict.line() == "yes"
    assert view.push is not None
    assert (Path(view.push.destination) / "saved_model.pb").exists()


def test_the_beam_components_ran_as_jobs_of_the_service_on_pool_workers(portable_run, beam_services):
    _, _, _, pool_log = beam_services
    # ExampleGen, StatisticsGen, Transform and the Evaluator each ran at least one job: a worker process each.
    workers = [line for line in pool_log.read_text().splitlines() if "Starting worker with command" in line]
    assert len(workers) >= 4, pool_log.read_text()[-3000:]
