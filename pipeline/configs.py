"""The one configuration object of the pipeline.

Everything a run can vary (paths, training length, workers, thresholds, Beam options) lives in
`PipelineConfig`, so the CLI, the local runner, the Kubeflow runner and the tests build the same
pipeline from the same object instead of reading constants scattered through the code.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import List, Optional, Tuple

from components.multiworker_trainer.settings import TrainerSettings
from pipeline import beam_runners
from trainer_module import features
from trainer_module.settings import TRAINING_LOOPS, TUNE_TRIALS, TrainingSettings

PIPELINE_NAME = "taxi-pipeline"
MODEL_NAME = "taxi"
HOME_ENV = "TAXI_PIPELINE_HOME"
SCHEMA_PATH = features.SCHEMA_PATH  # the dataset's curated schema lives beside its feature spec

# Module paths, not file paths: the same code runs in the Kubeflow image.
PREPROCESSING_FN = "trainer_module.preprocessing.preprocessing_fn"
RUN_FN = "trainer_module.run.run_fn"
TUNER_FN = "trainer_module.tuning.tuner_fn"

# Drift check: (feature, comparator, threshold, why this threshold). Distances are between this run's
# training split and the training data of the latest blessed model, as TFDV computes them: "linf" =
# L-infinity (the largest change of any value's share), "jsd" = Jensen-Shannon divergence of the
# histograms (StatisticsGen's, HISTOGRAM_BUCKETS equal-width buckets). The natural figures were measured
# between disjoint 4,000-row samples of the taxi data (tests/tests_support.write_sample, skip 0/4000/8000).
DRIFT_THRESHOLDS: Tuple[Tuple[str, str, float, str], ...] = (
    ("payment_type", "linf", 0.05,
     "the model's strongest signal (credit card => big tipper); samples differ by 0.006-0.013, so a "
     "5-point shift of any payment type's share is a real change of the mix"),
    ("company", "linf", 0.05, "samples differ by 0.011-0.018; 5 points of one company's share is a new market"),
    ("fare", "jsd", 0.1,
     "samples differ by 0.02-0.05; fares x1.5 give 0.18. Fares also make the label (tip > 20% of the fare)"),
    ("trip_miles", "jsd", 0.4,
     "heavy tail (a few 1,000-mile trips reshape equal-width histograms): samples differ by up to 0.29, "
     "so only a gross change is flagged"),
    ("trip_seconds", "jsd", 0.4, "heavy tail as trip_miles: samples differ by up to 0.26"),
)
# Equal-width histogram buckets per numeric feature in StatisticsGen, which the drift check's Jensen-Shannon
# divergence compares. TFDV's default 10 puts nearly every trip in the first bucket of a heavy tail: two
# disjoint 4,000-row samples of the taxi data (rows 0-3,999 vs 4,000-7,999) then differ by 0.70 on
# trip_miles (a false alarm at any useful threshold); with 200 buckets by 0.24 (fare 0.037 -> 0.022).
HISTOGRAM_BUCKETS = 200

BEAM_MODES = beam_runners.BEAM_MODES
BASELINES = ("latest_blessed", "serving")  # PipelineConfig.baseline


def default_data_root() -> Path:
    """The Chicago taxi sample (~15k rows) that ships inside the installed tfx wheel."""
    import importlib.util  # find, don't import: importing tfx costs seconds and floods stderr

    spec = importlib.util.find_spec("tfx")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the tfx package is not installed; run `make setup`")
    return Path(spec.submodule_search_locations[0]) / "examples" / "chicago_taxi_pipeline" / "data" / "simple"


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV, "outputs")).resolve()


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What one pipeline run is made of. Paths derive from `home` unless given."""

    home: Path = dataclasses.field(default_factory=default_home)
    data_root: Optional[Path] = None  # None: the taxi sample inside the tfx wheel
    pipeline_name: str = PIPELINE_NAME
    model_name: str = MODEL_NAME
    schema_path: Path = SCHEMA_PATH

    # ExampleGen: hash split train:eval, as TFX's taxi example.
    train_buckets: int = 2
    eval_buckets: int = 1

    # Spans (pipeline/spans.py): the span this run ingests from `data` (None: `data` is one dataset) with
    # ExampleGen's input pattern for its layout, and the accepted spans before it that it trains on
    # (the runner reads them from ML Metadata); it is judged on every row of its own span.
    span: Optional[int] = None
    span_pattern: Optional[str] = None
    window_spans: Tuple[int, ...] = ()
    window: int = 4  # how many accepted spans a run trains on (`run --window`)
    warm_start: bool = True  # with spans: start from the baseline model's weights (`run --cold-start`: not)

    # Trainer. The length follows the data: `epochs` passes over the training split (None: at least
    # one pass, more up to today's 128k examples on small data; trainer_module/training_length.py).
    # `train_steps` overrides it with a fixed step count.
    epochs: Optional[float] = None
    train_steps: Optional[int] = None
    eval_steps: int = 20  # x batch 256: the whole eval split (4,966 rows) once per validation
    # The trainer's own defaults live with the code that reads them (run_fn, the multi-worker executor).
    batch_size: int = TrainingSettings.batch_size  # per replica: global batch = this x replicas
    learning_rate: float = TrainingSettings.learning_rate
    seed: int = TrainingSettings.seed
    workers: int = TrainerSettings.workers  # trainer worker processes (MultiWorkerMirroredStrategy when > 1)
    training_loop: str = TrainingSettings.training_loop  # "fit" or "custom" (GradientTape under strategy.run)
    hidden_units: Tuple[int, ...] = TrainingSettings.hidden_units  # the model's MLP widths
    embedding_dim: int = TrainingSettings.embedding_dim  # the width of each categorical feature's embedding
    worker_timeout_s: float = TrainerSettings.worker_timeout_s
    # Tuner (`run --tune`): KerasTuner trials over trainer_module/tuning.py's search space, each trained
    # `tune_steps` steps (the default length on the default data); the Trainer takes the best. Runs without
    # --tune take the last tuning's hyperparameters (locally: ML Metadata), else the defaults above.
    tune: bool = False
    tune_trials: int = TUNE_TRIALS
    tune_steps: int = 500

    # AnomaliesGate: stop before training when the data does not match the curated schema.
    fail_on_anomalies: bool = True

    # DriftCheck: stop before training when the data drifted from the served model's training data.
    fail_on_drift: bool = True
    drift_thresholds: Tuple[Tuple[str, str, float, str], ...] = DRIFT_THRESHOLDS

    # Evaluator: a model is blessed only above these bounds and not worse than the baseline.
    min_auc: float = 0.90
    min_accuracy: float = 0.85
    auc_regression_tolerance: float = 0.001

    # Beam with the direct runner: "auto" runs each Beam component in this process, the Evaluator on
    # beam_workers processes when its input is large enough to repay them (pipeline/beam_parallelism.py);
    # "in_memory" all in this process, "multi_processing" all on beam_workers processes.
    beam_mode: str = "auto"
    beam_workers: int = 2
    # Or another runner: "portable" (a job service) or the presets "DataflowRunner", "FlinkRunner",
    # "SparkRunner"; pipeline/beam_runners.py says what each needs.
    beam_runner: str = "direct"
    beam_job_endpoint: Optional[str] = None  # host:port of the job service (portable, Flink/Spark job servers)
    beam_environment: Optional[str] = None  # where workers run: DOCKER, PROCESS, EXTERNAL, LOOPBACK
    beam_environment_config: Optional[str] = None  # image (DOCKER), worker pool host:port (EXTERNAL), ...
    beam_options: Tuple[str, ...] = ()  # further NAME=VALUE pipeline options (project=..., flink_master=...)
    enable_cache: bool = True

    # What the Evaluator and the DriftCheck compare with: "latest_blessed" (TFX's resolver, an ML Metadata
    # query) or "serving" (the newest version at the push destination: components/serving_baseline.py;
    # Kubeflow's choice, whose open-source backend cannot run resolvers).
    baseline: str = "latest_blessed"

    # Kubeflow: the image every step (and each TFJob worker) runs, and where TFJobs are created.
    kubeflow_image: Optional[str] = None
    kubeflow_namespace: str = "kubeflow"
    # Secrets the TFJob workers pull kubeflow_image with; None: the Trainer step pod's own.
    kubeflow_image_pull_secrets: Optional[Tuple[str, ...]] = TrainerSettings.image_pull_secrets

    def __post_init__(self):
        if self.beam_mode not in BEAM_MODES:
            raise ValueError(f"beam mode must be one of {BEAM_MODES}, not {self.beam_mode!r}")
        self.beam_pipeline_args()  # raises BeamConfigError (a ValueError) on incomplete runner settings
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {self.baseline!r}")
        if self.training_loop not in TRAINING_LOOPS:
            raise ValueError(f"training loop must be one of {TRAINING_LOOPS}, not {self.training_loop!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be positive, not {self.epochs}")
        if self.span is not None and not self.span_pattern:
            raise ValueError("a span needs its input pattern (span_pattern)")
        for name in ("train_steps", "eval_steps", "batch_size", "workers", "beam_workers", "window",
                     "tune_trials", "tune_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}")
        TrainerSettings.from_custom_config(self.trainer_custom_config())  # a misspelt key fails here, before any run

    # Everything generated lives under `home`.
    @property
    def data(self) -> Path:
        return Path(self.data_root) if self.data_root else default_data_root()

    @property
    def pipeline_root(self) -> Path:
        return Path(self.home) / "pipeline_root"

    @property
    def metadata_path(self) -> Path:
        return Path(self.home) / "metadata.db"

    @property
    def serving_base(self) -> Path:
        """TF Serving's model base path is `<serving_base>/<model_name>/<version>`."""
        return Path(self.home) / "serving"

    @property
    def serving_model_dir(self) -> Path:
        return self.serving_base / self.model_name

    @property
    def log_dir(self) -> Path:
        return Path(self.home) / "logs"

    @property
    def reports_dir(self) -> Path:
        return Path(self.home) / "reports"

    def beam_pipeline_args(self) -> List[str]:
        """The options every Beam-using component runs with (TFX passes them to each)."""
        return beam_runners.pipeline_args(
            self.beam_runner, beam_mode=self.beam_mode, beam_workers=self.beam_workers,
            job_endpoint=self.beam_job_endpoint, environment=self.beam_environment,
            environment_config=self.beam_environment_config, options=self.beam_options,
            image=self.kubeflow_image)

    def trainer_custom_config(self) -> dict:
        """Passed to `run_fn` (fn_args.custom_config) and to the multi-worker trainer executor."""
        return {
            "epochs": self.epochs,  # used when train_steps is None: the executor counts the training rows
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "training_loop": self.training_loop,
            "hidden_units": list(self.hidden_units),
            "embedding_dim": self.embedding_dim,
            "workers": self.workers,
            "worker_timeout_s": self.worker_timeout_s,
            "log_dir": str(self.log_dir),
            "image": self.kubeflow_image,  # set only in compiled Kubeflow pipelines: selects the TFJob launcher
            "namespace": self.kubeflow_namespace,
            "image_pull_secrets": (None if self.kubeflow_image_pull_secrets is None
                                   else list(self.kubeflow_image_pull_secrets)),
        }

    def drift_thresholds_json(self) -> str:
        """The DriftCheck's `thresholds` parameter: {"feature": [comparator, threshold], ...}."""
        return json.dumps({feature: [comparator, threshold] for feature, comparator, threshold, *_ in self.drift_thresholds},
                          sort_keys=True)

    def replace(self, **changes) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)
