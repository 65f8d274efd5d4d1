"""`taxi-pipeline compile`: the Kubeflow Pipelines spec of the same pipeline `run` runs locally.

The pipeline comes from `pipeline.pipeline.create_pipeline` like every other runner; only the
config differs: paths are the in-cluster ones (the shared volume of `kubeflow/storage.py`), every
step runs `--image`, Beam runs multi-process inside each step's pod, ML Metadata is the one KFP
provides (no connection config), and the trainer's custom config carries the image and
namespace so the multi-worker executor launches its workers as a TFJob.

TFX's `KubeflowV2DagRunner` compiles it to a `PipelineJob` JSON (the IR). A `.yaml` output gets
the KFP package form instead (pipeline spec + the shared-volume mounts), which the KFP UI's
"Upload pipeline" takes as is.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path, PurePosixPath
from typing import Dict, Optional

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from kubeflow import package, storage
from kubeflow.errors import KubeflowError
from pipeline import beam_runners, configs
from pipeline.errors import UserError

SCORE_SPEC_NAME = "taxi-pipeline-scoring.json"  # compile --score's default output, beside the training spec


@dataclasses.dataclass(frozen=True)
class KubeflowPipelineConfig(configs.PipelineConfig):
    """`PipelineConfig` with a serving base that need not sit under `home`.

    In the cluster the Pusher must write where TF Serving reads (the volume's `serving/`),
    which `--serving-base` may point elsewhere than `<home>/serving`.
    """

    serving_base_override: Optional[Path] = None

    @property
    def serving_base(self) -> Path:
        if self.serving_base_override is not None:
            return Path(self.serving_base_override)
        return super().serving_base


def _in_cluster_path(value: str, flag: str) -> Path:
    if "://" in value or not PurePosixPath(value).is_absolute():
        raise KubeflowError(f"{flag} {value!r} must be an absolute path inside the pipeline's pods "
                        f"(e.g. on the shared volume: {storage.MOUNT_PATH}/...)")
    return Path(value)


def kubeflow_config(image: str, data: Optional[str] = None, serving_base: Optional[str] = None,
                    **changes) -> KubeflowPipelineConfig:
    """The pipeline config for the cluster: in-cluster paths, the image, the Evaluator on two Beam processes.

    `changes` are further `PipelineConfig` fields (workers, training_loop, train_steps, ...).
    """
    return KubeflowPipelineConfig(
        home=Path(str(storage.MOUNT_PATH)),  # logs etc. land on the shared volume
        data_root=_in_cluster_path(data, "--data") if data else Path(str(storage.DATA_DIR)),
        serving_base_override=(_in_cluster_path(serving_base, "--serving-base") if serving_base
                               else Path(str(storage.SERVING_BASE))),
        schema_path=Path(str(storage.IMAGE_SCHEMA_PATH)),  # read inside the image, not here
        kubeflow_image=image,
        # The data's size is not known when compiling: the Evaluator runs on beam_workers processes (the rows
        # a cluster evaluates repay them), the other Beam steps in their pod's process (pipeline/beam_parallelism.py).
        beam_mode="auto",
        baseline="serving",  # the open-source backend runs no resolver tasks: compare with the served model
        **changes,
    )


def compile_job(config: configs.PipelineConfig, pipeline_root: Optional[str] = None,
                s3_endpoint: Optional[str] = None) -> Dict:
    """Builds the pipeline from `config` and returns the compiled PipelineJob as a dict.

    The pipeline root given here replaces the in-cluster path `create_pipeline` put there; with
    none, the spec carries no root and the KFP backend uses its default (`kfp-launcher` ConfigMap).
    `s3_endpoint`: the S3 API every step talks to (AWS_ENDPOINT_URL in each step's environment), for an
    s3:// root outside AWS or a minio:// root whose store is not KFP's default one.
    """
    from pipeline.pipeline import create_pipeline

    return _compiled(create_pipeline(config, metadata_connection_config=None), config, pipeline_root, s3_endpoint)


def compile_score_job(config: configs.PipelineConfig, data: str, pipeline_root: Optional[str] = None,
                      s3_endpoint: Optional[str] = None, output_format: str = "csv") -> Dict:
    """The scoring pipeline (`pipeline/score_pipeline.py`, its Kubeflow steps) on the CSV files directly
    in `data` (a folder as the pods see it), compiled as its own PipelineJob.

    It scores with the model serving now under `config.serving_model_dir`; its outputs are ScoreWriter's
    `predictions` (predictions.csv or .parquet) and BulkInferrer's PredictionLogs, under the pipeline root.
    Never cached (`create_score_pipeline`), so no input fingerprint either.
    """
    from pipeline.score import SCORING_PIPELINE_NAME
    from pipeline.score_pipeline import create_score_pipeline

    built = create_score_pipeline(SCORING_PIPELINE_NAME, str(config.pipeline_root), str(_in_cluster_path(data, "--data")),
                                  str(config.serving_model_dir), None, config.beam_pipeline_args(), number_rows=True,
                                  schema_path=str(config.schema_path), output_format=output_format)
    return _compiled(built, config, pipeline_root, s3_endpoint, fingerprint=False)


def _compiled(tfx_pipeline, config: configs.PipelineConfig, pipeline_root: Optional[str], s3_endpoint: Optional[str],
              fingerprint: bool = True) -> Dict:
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2

    from kubeflow import spec_compat

    runner = v2.KubeflowV2DagRunner(
        config=v2.KubeflowV2DagRunnerConfig(default_image=config.kubeflow_image,
                                            display_name=tfx_pipeline.pipeline_info.pipeline_name,
                                            use_pipeline_spec_2_1=True))  # what the KFP 2.x driver reads
    job = spec_compat.for_open_source_kfp(runner.run(tfx_pipeline, write_out=False), fingerprint=fingerprint)
    if s3_endpoint:
        spec_compat.with_env(job["pipelineSpec"], {"AWS_ENDPOINT_URL": s3_endpoint})
    runtime = job.setdefault("runtimeConfig", {})
    if pipeline_root:
        runtime["gcsOutputDirectory"] = pipeline_root
        job["pipelineSpec"]["defaultPipelineRoot"] = pipeline_root
    else:
        runtime.pop("gcsOutputDirectory", None)
        job["pipelineSpec"].pop("defaultPipelineRoot", None)
    return job


def write_spec(job: Dict, output: Path) -> None:
    """JSON: the PipelineJob as TFX writes it. YAML: the KFP package with the volume mounts."""
    if output.suffix in (".yaml", ".yml"):
        spec = job["pipelineSpec"]
        text = package.dump_package(spec, package.platform_spec(spec, storage.PVC_NAME))
    else:
        text = package.dump_job(job)
    package.write_atomic(output, text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = configs.PipelineConfig
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the default --output goes under <home>/kubeflow (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--image", required=True,
                        help="container image every step runs (built from kubeflow/Dockerfile), "
                             "e.g. registry.example.com/taxi-pipeline:1.0")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"spec file to write (.json: PipelineJob IR; .yaml: KFP package); "
                             f"default <home>/kubeflow/{package.DEFAULT_SPEC_NAME}")
    parser.add_argument("--pipeline-root", default=None, metavar="URI",
                        help="object store for TFX artifacts (gs://, s3:// or minio://bucket/path); default: the "
                             "cluster's default pipeline root")
    parser.add_argument("--s3-endpoint", default=None, metavar="URL",
                        help="S3 API of an s3:// or minio:// pipeline root outside AWS, e.g. "
                             "http://minio.example:9000 (every step gets it as AWS_ENDPOINT_URL; KFP sets none). "
                             "Default: AWS for s3://; for minio:// the store KFP installs (seaweedfs.kubeflow:9000 "
                             "from KFP 2.16, minio-service.kubeflow:9000 before), found in the cluster's DNS")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help=f"CSV directory as seen by the pipeline's pods (default {storage.DATA_DIR})")
    parser.add_argument("--serving-base", default=None, metavar="DIR",
                        help=f"where the Pusher writes <model>/<version>/, as seen by the pipeline's "
                             f"pods (default {storage.SERVING_BASE}, the TF Serving volume)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="trainer workers (a TFJob with MultiWorkerMirroredStrategy when > 1)")
    parser.add_argument("--training-loop", choices=configs.TRAINING_LOOPS, default=defaults.training_loop,
                        help=f"model.fit or a custom GradientTape loop (default {defaults.training_loop})")
    beam_runners.add_arguments(parser)
    parser.add_argument("--epochs", type=float, default=defaults.epochs,
                        help="passes over the training split (default: at least one; on small data more, "
                             "up to 128,000 examples)")
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps,
                        help="a fixed number of training steps instead (overrides --epochs)")
    parser.add_argument("--tune", action="store_true",
                        help="add TFX's Tuner (KerasTuner over trainer_module/tuning.py's search space) before the "
                             "Trainer, which then trains with its best hyperparameters; without it the defaults "
                             "(KFP runs no resolver, so no earlier tuning is looked up)")
    parser.add_argument("--tune-trials", type=int, default=defaults.tune_trials,
                        help=f"with --tune: trials (default {defaults.tune_trials}; the first is the defaults)")
    parser.add_argument("--tune-steps", type=int, default=defaults.tune_steps,
                        help=f"with --tune: training steps per trial (default {defaults.tune_steps})")
    parser.add_argument("--score", action="store_true",
                        help="compile the batch-scoring pipeline instead (as `taxi-pipeline score` runs it "
                             "locally): the CSV files directly in --data (required) scored by the model serving "
                             "now under --serving-base, predictions.csv/.parquet and TFX's PredictionLogs "
                             "under the pipeline root; default --output <home>/kubeflow/"
                             f"{SCORE_SPEC_NAME}")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv",
                        help="with --score: predictions.csv (default) or predictions.parquet")
    parser.add_argument("--image-pull-secret", action="append", default=None, metavar="SECRET",
                        help="a Secret the TFJob workers pull the image with (repeatable); default: the same as "
                             "the Trainer step's own pod")
    parser.add_argument("--no-cache", action="store_true",
                        help="compile every step with KFP's caching off (each run re-runs every step); by "
                             "default a step is taken from KFP's cache when its inputs, the input data's "
                             "fingerprint included, are unchanged")


# Flags of the training pipeline that a scoring spec has no use for: given with --score, an error.
TRAINING_ONLY = ("workers", "training_loop", "epochs", "train_steps", "tune", "tune_trials", "tune_steps",
                 "image_pull_secret", "no_cache")


def main(args: argparse.Namespace) -> int:
    package.check_image(args.image)
    pipeline_root = package.check_pipeline_root(args.pipeline_root)
    if args.s3_endpoint and not args.s3_endpoint.startswith(("http://", "https://")):
        raise UserError(f"--s3-endpoint {args.s3_endpoint!r} must be an http:// or https:// URL")
    if args.score:
        return _main_score(args, pipeline_root)
    if args.format != "csv":
        raise UserError("--format is for --score (the scoring pipeline's output)")
    try:
        config = kubeflow_config(args.image, data=args.data, serving_base=args.serving_base,
                                 workers=args.workers, training_loop=args.training_loop,
                                 train_steps=args.train_steps, epochs=args.epochs,
                                 tune=args.tune, tune_trials=args.tune_trials, tune_steps=args.tune_steps,
                                 enable_cache=not args.no_cache,
                                 kubeflow_image_pull_secrets=(tuple(args.image_pull_secret)
                                                              if args.image_pull_secret else None),
                                 **beam_runners.fields_from_args(args))
    except ValueError as err:  # PipelineConfig's own checks (counts below 1, ...)
        raise UserError(str(err)) from None
    output = args.output or package.default_spec_path(args.home or configs.default_home())
    if output.suffix not in (".json", ".yaml", ".yml"):
        raise UserError(f"--output {output} must end in .json (PipelineJob) or .yaml (KFP package)")
    job = compile_job(config, pipeline_root, s3_endpoint=args.s3_endpoint)
    write_spec(job, output)

    steps = len(job["pipelineSpec"]["root"]["dag"]["tasks"])
    tuning = f", Tuner: {args.tune_trials} trials of {args.tune_steps} steps" if args.tune else ""
    print(f"wrote {output} ({steps} steps{tuning}, image {args.image})")
    _print_notes(args, pipeline_root, output)
    return 0


def _main_score(args: argparse.Namespace, pipeline_root: Optional[str]) -> int:
    defaults = _flag_defaults()
    given = [name for name in TRAINING_ONLY if getattr(args, name) != defaults[name]]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} is for the training pipeline, not --score")
    if not args.data:
        raise UserError(f"--score needs --data: the folder of CSV files to score as the pipeline's pods see it "
                        f"(e.g. {storage.MOUNT_PATH}/score/<date>)")
    try:
        config = kubeflow_config(args.image, serving_base=args.serving_base, **beam_runners.fields_from_args(args))
    except ValueError as err:
        raise UserError(str(err)) from None
    output = args.output or package.default_spec_path(args.home or configs.default_home()).with_name(SCORE_SPEC_NAME)
    if output.suffix not in (".json", ".yaml", ".yml"):
        raise UserError(f"--output {output} must end in .json (PipelineJob) or .yaml (KFP package)")
    job = compile_score_job(config, args.data, pipeline_root, s3_endpoint=args.s3_endpoint, output_format=args.format)
    write_spec(job, output)
    steps = len(job["pipelineSpec"]["root"]["dag"]["tasks"])
    print(f"wrote {output} (scoring: {steps} steps, the CSV files in {args.data} scored by the model serving "
          f"under {config.serving_model_dir}, image {args.image})\n"
          f"predictions: the ScoreWriter step's `predictions` artifact (predictions.{args.format}); "
          "PredictionLogs: BulkInferrer's `inference_result`")
    _print_notes(args, pipeline_root, output)
    return 0


def _flag_defaults() -> Dict[str, object]:
    """Each flag's default, as the parser sets it."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(["--image", "x"]))


def _print_notes(args: argparse.Namespace, pipeline_root: Optional[str], output: Path) -> None:
    if not pipeline_root:
        print("pipeline root: the cluster's default (kfp-launcher ConfigMap, usually minio://mlpipeline/v2/artifacts); "
              "the steps must be able to write it, else pass --pipeline-root")
    if ":" not in args.image.rsplit("/", 1)[-1] or args.image.endswith(":latest"):
        print("note: a mutable tag (none, or :latest) lets cached steps and TFJob workers run "
              "different code; prefer a versioned tag or a digest")
    print(f"submit with: taxi-pipeline submit --spec {output} --endpoint http://<kfp-host>")
