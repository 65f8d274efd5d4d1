"""`taxi-pipeline run`: the whole pipeline on this machine with TFX's launcher and Beam's DirectRunner.

The nodes run as TFX's LocalDagRunner runs them, with the checks of the data in a second process beside
the model's path (pipeline/concurrent_runner.py).

The terminal shows one line per component (its duration, and whether it came from the cache) and a
summary; TensorFlow, absl and Beam output goes to `<home>/logs/run-<time>.log`.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline import (beam_parallelism, beam_runners, concurrent_runner, configs, freed_memory, home_lock, spans,
                      stderr_redirect)
from pipeline.errors import ComponentFailed, UserError
from pipeline.data_check import check_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = configs.PipelineConfig
    parser.add_argument("--home", type=Path, default=None, help=f"all outputs go here (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of CSV files (default: the taxi sample in the tfx wheel), or of "
                             f"{spans.LAYOUT_HELP}: each run then ingests the spans not ingested yet, one "
                             "pipeline run per span, trains on the --window spans before it and is judged on it")
    parser.add_argument("--window", type=int, default=defaults.window,
                        help=f"with span folders: how many of the newest accepted spans to train on (default {defaults.window})")
    parser.add_argument("--tune", action="store_true",
                        help="tune the model's size and learning rate with TFX's Tuner (KerasTuner) before training; "
                             "later runs without --tune reuse the result")
    parser.add_argument("--tune-trials", type=int, default=defaults.tune_trials,
                        help=f"trials for --tune (default {defaults.tune_trials}; the first is the defaults)")
    parser.add_argument("--cold-start", action="store_true",
                        help="with span folders: train from scratch instead of from the baseline model's weights")
    parser.add_argument("--epochs", type=float, default=defaults.epochs,
                        help="passes over the training split (default: at least one; on small data more, "
                             "up to 128,000 examples)")
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps,
                        help="a fixed number of training steps instead (overrides --epochs)")
    parser.add_argument("--eval-steps", type=int, default=defaults.eval_steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per-replica batch size")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="trainer worker processes (MultiWorkerMirroredStrategy when > 1)")
    parser.add_argument("--training-loop", choices=configs.TRAINING_LOOPS, default=defaults.training_loop)
    parser.add_argument("--beam-mode", choices=configs.BEAM_MODES, default=defaults.beam_mode,
                        help="auto: the Evaluator on --beam-workers processes when its input repays them, the other "
                             "Beam components in this process; in_memory: all in this process; multi_processing: "
                             "all on --beam-workers processes (default %(default)s)")
    parser.add_argument("--beam-workers", type=int, default=defaults.beam_workers,
                        help="processes for --beam-mode multi_processing, and for the Evaluator under auto")
    beam_runners.add_arguments(parser)
    parser.add_argument("--no-cache", action="store_true", help="re-run every component even if its inputs are unchanged")
    parser.add_argument("--allow-anomalies", action="store_true", help="train even when the data does not match the schema")
    parser.add_argument("--allow-drift", action="store_true",
                        help="train even when the data drifted from the served model's training data (the drift is still reported)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when another run holds the home, wait up to this long for it (default 0: exit 2 "
                             "at once, naming it); one run at a time per home, safe from cron or a timer")


def config_from_args(args) -> configs.PipelineConfig:
    overrides = dict(
        data_root=args.data.resolve() if args.data else None,
        epochs=args.epochs,
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        batch_size=args.batch_size,
        workers=args.workers,
        training_loop=args.training_loop,
        beam_mode=args.beam_mode,
        beam_workers=args.beam_workers,
        enable_cache=not args.no_cache,
        fail_on_anomalies=not args.allow_anomalies,
        **beam_runners.fields_from_args(args),
        fail_on_drift=not getattr(args, "allow_drift", False),
        window=getattr(args, "window", configs.PipelineConfig.window),
        warm_start=not getattr(args, "cold_start", False),
        tune=getattr(args, "tune", False),
        tune_trials=getattr(args, "tune_trials", configs.PipelineConfig.tune_trials),
    )
    if args.home:
        overrides["home"] = args.home.resolve()
    try:
        return configs.PipelineConfig(**overrides)
    except ValueError as err:
        raise UserError(str(err)) from None


# Each process of a local run (this one, the second lane, Beam's and the Trainer's workers) runs TensorFlow's ops
# on one intra-op thread unless the environment says otherwise: the run's parallelism is its processes, one busy
# per core. TensorFlow reads the variable when it first runs an op, and child processes inherit it. The default
# (one thread per core) made the Trainer's `fit` on the default data take either 3.9-4.1 s or 6.2 s (8 runs:
# 4 and 4, 2026-12-07, on 2 cores); with one thread 3.6-3.9 s in each of 4 runs, and Transform and the
# Evaluator no slower (`taxi-pipeline run`, the Trainer's `workers/worker-0.json` examples_per_second).
INTRA_OP_THREADS_ENV = "TF_NUM_INTRAOP_THREADS"


def main(args) -> int:
    from pipeline import summary

    os.environ.setdefault(INTRA_OP_THREADS_ENV, "1")
    config = config_from_args(args)
    check_data_dir(config.data, config.schema_path)
    try:
        folders = spans.discover(config.data)
    except spans.SpanLayoutError as err:
        raise UserError(str(err)) from None
    with home_lock.hold(config.home, wait_s=args.wait):
        if folders is not None:
            return run_spans(config, folders)
        log_file = _log_file(config)
        view = run_pipeline(config, progress=sys.stdout, log_file=log_file)
        with quiet_logs(log_file, None):
            text = summary.render(config, view)
    print(text)
    return 0 if view.pushed_or_unchanged else 1


def run_spans(config: configs.PipelineConfig, folders: spans.SpanFolders) -> int:
    """One pipeline run per span not ingested yet, oldest first; a refused span does not stop the next.

    Exit status: 0 when every span's model was pushed (or nothing was new), 2 when a span was refused
    (bad data: its line says why), 1 when a model was not blessed.
    """
    from pipeline import summary

    allowed = (() if config.fail_on_anomalies else ("AnomaliesGate",)) + (() if config.fail_on_drift else ("DriftCheck",))
    history = spans.ingested(config.metadata_path)
    todo = spans.new_spans(folders, history, allowed)
    if not todo:
        print(f"taxi-pipeline: no new span in {config.data} (newest: {folders.label(folders.spans[-1])}, "
              "already ingested); nothing to do")
        return 0
    status = 0
    for span in todo:
        window = spans.training_window(span, history, config.window)
        run_config = config.replace(span=span, span_pattern=folders.pattern, window_spans=window)
        trained_on = ", ".join(folders.label(s) for s in window) if window else "its own train split"
        print(f"span {folders.label(span)}: ingest, train on {trained_on}, judge on {folders.label(span)}")
        log_file = _log_file(run_config)
        try:
            view = run_pipeline(run_config, progress=sys.stdout, log_file=log_file)
        except UserError as err:  # this span's data was refused: nothing is pushed for it; the next goes on
            print(f"error: span {folders.label(span)} refused: {err}", file=sys.stderr)
            status, view = 2, None
        history = spans.ingested(config.metadata_path)  # this run's verdict on its span, for the next window
        if view is None:
            continue
        with quiet_logs(log_file, None):
            text = summary.render(run_config, view)
        print(text)
        if not view.pushed_or_unchanged and status == 0:
            status = 1
    return status


class _ProgressHandler(logging.Handler):
    """Turns TFX's "Component X is running/finished" log lines into one terminal line per component, and gives
    the heap a finished component freed back to the system (pipeline/freed_memory.py)."""

    def __init__(self, stream=None, read_roots=()):
        super().__init__(logging.INFO)
        self.stream = stream
        self.read_roots = list(read_roots)  # where the components' input files are: data dir, pipeline root
        self.ticker = None
        self.started = {}
        self.cached = set()
        self.running = {}  # thread id -> the node it runs: two lanes run nodes at once (pipeline/concurrent_runner.py)

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Component ") and message.endswith(" is running."):
            node = message[len("Component "):-len(" is running.")]
            self.running[record.thread] = node
            self.started[node] = time.time()
            # One live line at a time: a node starting beside another (the second process's) gets none.
            if self.stream and self.stream.isatty() and self.ticker is None:
                self.stream.write(f"  {node:<32} running…\r")
                self.stream.flush()
                if self.read_roots:  # rows read and rate, on the terminal only (never in the log)
                    from pipeline.progress import Ticker

                    self.ticker = Ticker(self.stream, node, self.read_roots).start()
        elif message.startswith(concurrent_runner.CACHED_PREFIX) and record.thread in self.running:
            self.cached.add(self.running[record.thread])
        elif message.startswith("Component ") and message.endswith(" is finished."):
            node = message[len("Component "):-len(" is finished.")]
            self.running.pop(record.thread, None)
            if self.ticker is not None and self.ticker.node == node:
                self._stop_ticker()
            freed_memory.trim()
            seconds = time.time() - self.started.get(node, time.time())
            note = "cached" if node in self.cached else ""
            if self.stream:
                self.stream.write(f"  {node:<32} {seconds:6.1f} s  {note}\n")
                self.stream.flush()

    def _stop_ticker(self):
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None


@contextlib.contextmanager
def quiet_logs(log_file: Path, progress, read_roots=()):
    """Python logging and C++ stderr go to `log_file`; only our progress lines reach the terminal."""
    from absl import logging as absl_logging

    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    progress_handler = _ProgressHandler(progress, read_roots)
    root.handlers = [file_handler, progress_handler]
    root.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.captureWarnings(True)
    # TensorFlow's C++ runtime and Beam write to fd 2 directly: point it at the log too.
    try:
        with stderr_redirect.fd2_to(log_file):
            yield progress_handler
    finally:
        progress_handler._stop_ticker()
        root.handlers, root.level = saved_handlers, saved_level
        file_handler.close()
        logging.captureWarnings(False)


def run_pipeline(config: configs.PipelineConfig, progress=None, log_file: Path = None):
    """Run the pipeline for `config`; returns the run's view (`run_view.RunView`), read back from ML Metadata."""
    log_file = log_file or _log_file(config)
    if progress:
        progress.write(f"taxi-pipeline: data {config.data}\n  home {config.home}  (log: {log_file})\n"
                       f"  {beam_parallelism.describe(beam_parallelism.plan(config))}\n")
    with quiet_logs(log_file, progress, (config.data, config.pipeline_root)):
        from tfx.orchestration import metadata as tfx_metadata  # not tfx.v1: see pipeline.pipeline's imports

        from components.errors import bad_data_behind
        from pipeline import pipeline as tfx_pipeline, run_view

        metadata = tfx_metadata.sqlite_metadata_connection_config(str(config.metadata_path))
        try:
            with beam_runners.beam_steps():
                # The data checks run in a second process beside Transform and the Trainer (both cores), and
                # the ServingValidator beside the Evaluator; it imports TFDV while this process builds the
                # pipeline and runs CsvExampleGen.
                concurrent_runner.run(lambda: tfx_pipeline.create_pipeline(config, metadata),
                                      beside=tfx_pipeline.nodes_beside(config),
                                      preload=("tensorflow_data_validation",), log_file=log_file)
        except Exception as failure:
            logging.exception("pipeline failed")
            failed = isinstance(failure, concurrent_runner.NodeFailed)
            err = failure.__cause__ if failed and failure.__cause__ is not None else failure
            where = f"{failure.node} failed: " if failed else ""
            bad_data = bad_data_behind(err)
            if bad_data is not None:  # the data's fault: bad input (exit 2), the component says how to go on
                raise UserError(f"{where}{_first_line(bad_data)} (full trace: {log_file})") from err
            raise ComponentFailed(f"{where}{type(err).__name__}: {_first_line(err)} (full trace: {log_file})") from err
        return run_view.load(config.metadata_path, pipeline_root=config.pipeline_root)


def _log_file(config: configs.PipelineConfig) -> Path:
    return config.log_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:600] if text else ""
