"""`taxi-pipeline score`: batch scoring of a CSV file or folder with the model serving now, on local Beam.

TFX's BulkInferrer runs in a pipeline of its own (`pipeline/score_pipeline.py`) under TFX's
LocalDagRunner, with its own pipeline name, pipeline root and ML Metadata file under `<home>/scoring/`,
so scoring runs never show among the training runs `status` lists. It holds the home lock as `run` does:
no push or rollback changes the served model while it scores.

Writes `<out>/predictions.csv` (or `.parquet`): the input rows in input order with `probability`
appended (`score_input` says how the order is kept); TFX's PredictionLogs stay where the BulkInferrer
wrote them, named in the summary.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline import configs, home_lock
from pipeline.errors import ComponentFailed, UserError

SCORING_PIPELINE_NAME = configs.PIPELINE_NAME + "-scoring"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="a CSV file with a header row, or a folder of them (every file under it, sorted by path); "
                             "the columns the model takes, the label (tips) not needed")
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the home whose served model scores (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for predictions.csv / .parquet (default <home>/scores/<time>/)")
    parser.add_argument("--key", default=None, metavar="COLUMN",
                        help="match predictions to rows by this column (unique; integer or text) instead of by row "
                             "number; the PredictionLogs then carry it")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="output format (default csv)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when a run holds the home, wait up to this long for it (default 0: exit 2 at once)")


def scoring_root(home: Path) -> Path:
    """Everything the scoring pipeline keeps: `metadata.db`, `pipeline_root/`, and its input while it runs."""
    return Path(home) / "scoring"


def main(args) -> int:
    from pipeline.local_runner import quiet_logs

    config = configs.PipelineConfig(**({"home": args.home.resolve()} if args.home else {}))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_file = config.log_dir / f"score-{stamp}.log"
    target = (args.out or config.home / "scores" / stamp).resolve() / f"predictions.{args.format}"
    nothing_served = UserError(f"nothing served in {config.serving_model_dir}: run `taxi-pipeline run` first")
    if not config.serving_model_dir.is_dir():
        raise nothing_served
    with quiet_logs(log_file, None):  # TensorFlow's and TFX's import chatter: the log
        from components.serving_baseline import newest_version
        from pipeline import score_input, score_output

        # Checked before the lock, and enough: a run only adds versions, a rollback leaves one at least.
        if newest_version(str(config.serving_model_dir)) is None:
            raise nothing_served
        scoring = score_input.read(args.data.resolve(), config.schema_path, key=args.key)
    with home_lock.hold(config.home, wait_s=args.wait):
        started = time.time()
        print(f"taxi-pipeline score: data {scoring.data} ({score_input.describe(scoring)})\n"
              f"  home {config.home}  (log: {log_file})")
        run = run_scoring(config, scoring, log_file, progress=sys.stdout)
        inference_uri = run.nodes["BulkInferrer"].output_uri("inference_result")
        with quiet_logs(log_file, None):
            probs = score_output.probabilities(inference_uri, scoring)
            score_output.write(scoring, probs, target, args.format)
    version = run.nodes["ServedModel"].output("baseline_model").custom_properties["serving_version"].string_value
    print(f"scored {scoring.rows:,} rows with version {version} of {config.serving_model_dir}\n"
          f"  predictions: {target}  (input rows in input order, probability appended"
          f"{f'; matched by {args.key}' if args.key else ''})\n"
          f"  PredictionLogs (TFX's BulkInferrer): {inference_uri}/{score_output.PREDICTION_LOGS}\n"
          f"  took {time.time() - started:.1f} s")
    return 0


def run_scoring(config: configs.PipelineConfig, scoring, log_file: Path, progress=None):
    """The scoring pipeline on `scoring`'s rows with LocalDagRunner; returns the run read back from its
    ML Metadata (`run_results.RunResult`). Its input copy for ExampleGen is removed afterwards."""
    from pipeline import run_results, score_input
    from pipeline.local_runner import quiet_logs

    root = scoring_root(config.home)
    input_copy = root / "input"  # one at a time: the home lock is held
    pipeline_root = root / "pipeline_root"
    shutil.rmtree(input_copy, ignore_errors=True)  # what a killed scoring left
    try:
        score_input.write_for_example_gen(scoring, input_copy)
        with quiet_logs(log_file, progress, (input_copy, pipeline_root)) as components, \
                open(log_file, "a") as log, contextlib.redirect_stdout(log):  # components' prints: the log
            from tfx.orchestration import metadata as tfx_metadata  # not tfx.v1: see pipeline.pipeline's imports
            from tfx.orchestration.local.local_dag_runner import LocalDagRunner

            from pipeline import beam_runners
            from pipeline.score_pipeline import create_score_pipeline

            metadata = tfx_metadata.sqlite_metadata_connection_config(str(root / "metadata.db"))
            built = create_score_pipeline(SCORING_PIPELINE_NAME, str(pipeline_root), str(input_copy),
                                          str(config.serving_model_dir), metadata, config.beam_pipeline_args())
            try:
                with beam_runners.beam_steps():
                    LocalDagRunner().run(built)
            except Exception as err:
                logging.exception("scoring failed")
                where = f"{components.current} failed: " if components.current else ""
                first = (str(err).strip().splitlines() or [""])[0][:600]
                raise ComponentFailed(f"{where}{type(err).__name__}: {first} (full trace: {log_file})") from err
            return run_results.load_run(root / "metadata.db")
    finally:
        shutil.rmtree(input_copy, ignore_errors=True)
