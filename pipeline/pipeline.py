"""`create_pipeline(config)`: the only place the components are wired.

CsvExampleGen -> Transform (against the curated schema) -> Trainer (one or several workers) -> Evaluator
(against the latest blessed model) and ServingValidator (loads it in a model server, writes the model with
warmup requests) -> Pusher (pushes that model). Beside Transform, the data checks: CsvExampleGen ->
StatisticsGen -> ExampleValidator (against the curated schema) -> AnomaliesGate, and DriftCheck (against the
data of the latest blessed model); the Trainer waits for them, so nothing is trained on data they refuse.
The local runner and the Kubeflow runner both build their pipeline here.
"""
from typing import List, Optional, Tuple

from google.protobuf import wrappers_pb2
import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
# TFX's own modules rather than `from tfx import v1`, which also imports TFX's Google Cloud extensions
# (google.cloud.aiplatform): the imports up to a built pipeline took 11.4 s with it, 8.8 s without
# (medians of four interleaved pairs, bench/RESULTS.md 2026-12-01 (c)); and each component from its own module,
# not `from tfx.components import ...`, which runs that package's __init__ (every TFX component):
# see kubeflow.tfx_internals.defer_tfx_components.
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.pusher.component import Pusher
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, range_config_pb2, trainer_pb2, transform_pb2
from tfx.types import Channel, standard_artifacts

from components import analysis_reuse
from components.anomalies_gate import AnomaliesGate
from components.arrow_csv_example_gen import ArrowCsvExampleGen
from components.atomic_pusher import AtomicPusherExecutor
from components.dealt_statistics_gen import StatisticsGen
from components.drift_check import DriftCheck
from components.multiworker_trainer.component import Trainer
from components.multiworker_trainer.executor import MultiWorkerExecutor
from components.newest_artifact import NewestArtifactStrategy
from components.reusing_evaluator import ReusingEvaluator
from components.serving_baseline import ServingBaseline
from components.serving_validator import ServingValidator
from components.span_window import SpanWindowStrategy
from pipeline import beam_parallelism, configs
from trainer_module import features, preprocessing
from trainer_module.records import EVAL_SPLIT, TRAIN_SPLIT


def eval_config(config: configs.PipelineConfig) -> tfma.EvalConfig:
    """Metrics by slice, and the bars a model must clear to be blessed."""
    overall = [tfma.SlicingSpec()]  # the bars apply to the whole eval split, not to each hour or payment type
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.min_auc}),
        # No regression against the latest blessed model (beyond training noise).
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.auc_regression_tolerance},
        ),
    )
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.min_accuracy})
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=features.LABEL_KEY,
                preprocessing_function_names=["transform_features"],
                # What TFMA would infer, said up front: to infer it, TFMA loads each model (candidate and
                # baseline) with Keras once more before evaluating (~0.7-1.2 s per model per run).
                model_type=tfma.TF_KERAS,
            )
        ],
        # No metrics from the model's compile(): it compiles none that TFMA reports, and looking for them
        # loads each model with Keras once more (tensorflow_model_analysis/evaluators/keras_util.py).
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=["trip_start_hour"]),
            tfma.SlicingSpec(feature_keys=["payment_type"]),
        ],
        metrics_specs=[
            tfma.MetricsSpec(  # every model: the baseline's AUC is what the change threshold compares with
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="AUC",
                        per_slice_thresholds=[tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=auc_threshold)],
                    ),
                ]
            ),
            # The candidate only: nothing reads the baseline's (pipeline/run_view.py reads the candidate's metrics
            # and its diffs), and TFMA computes each metric one example at a time, per model and slice. With no
            # baseline TFMA renames "candidate" to the one model's "" (config_util.update_eval_config_with_defaults).
            tfma.MetricsSpec(
                model_names=[tfma.CANDIDATE_KEY],
                metrics=[
                    tfma.MetricConfig(
                        class_name="BinaryAccuracy",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=accuracy_threshold)
                        ],
                    ),
                    tfma.MetricConfig(class_name="Precision"),
                    tfma.MetricConfig(class_name="Recall"),
                    tfma.MetricConfig(class_name="Calibration"),
                    tfma.MetricConfig(class_name="CalibrationPlot"),
                ],
            ),
        ],
    )


# The nodes that check this run's data. Transform needs only the curated schema, so they run beside it (the local
# runner: a second process, pipeline/concurrent_runner.py; Kubeflow: its own DAG) and the Trainer waits for them.
DATA_CHECKS = ("StatisticsGen", "ExampleValidator", "AnomaliesGate", "DriftCheck")
SERVING_CHECK = "ServingValidator"


def nodes_beside(config: configs.PipelineConfig) -> Tuple[str, ...]:
    """The nodes the local runner runs in its second process: the data checks, and the ServingValidator when the
    Evaluator runs in the run's own process (the second core is idle then; on several Beam processes it is not,
    and the second process's memory would add to the Evaluator's workers', the run's peak).

    The ServingValidator needs only the Trainer's model, so beside it runs while the Evaluator does: 0.8 s of the
    default run (`taxi-pipeline run`, 2026-12-07) off the path to the Pusher."""
    evaluator_alone = beam_parallelism.component_beam(config, "Evaluator").processes == 1
    return DATA_CHECKS + ((SERVING_CHECK,) if evaluator_alone else ())


def create_components(config: configs.PipelineConfig) -> List:
    example_gen = _example_gen(config)
    beam = beam_parallelism.plan(config)  # each Beam component's processes, from the size of what it reads
    statistics_gen = StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(num_histogram_buckets=configs.HISTOGRAM_BUCKETS),
    ).with_beam_pipeline_args(beam["StatisticsGen"].beam_args)
    schema_gen = ImportSchemaGen(schema_file=str(config.schema_path))
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"], fail_on_anomalies=int(config.fail_on_anomalies)
    )
    baseline, baseline_model = _baseline(config)
    drift_check = DriftCheck(  # this run's data against the data the latest blessed model was trained on
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        baseline_model=baseline_model,
        thresholds=config.drift_thresholds_json(),
        fail_on_drift=int(config.fail_on_drift),
    )
    # What the model trains on: this run's data, or with spans the accepted spans before this one
    # (pipeline/spans.py); this run's span is then what it is judged on.
    window = _span_window(config)
    training_examples = window.outputs["examples"] if window is not None else example_gen.outputs["examples"]
    analyzer_cache = _analyzer_cache(config)
    transform = _transform(training_examples, schema_gen, analyzer_cache, both_splits=window is not None)
    transform.with_beam_pipeline_args(beam["Transform"].beam_args)
    tuning = _tuning(config, training_examples, transform, schema_gen)
    trainer = Trainer(  # TFX's Trainer, also given the raw examples (TF Lite evaluation) and their statistics
        run_fn=configs.RUN_FN,
        examples=training_examples,  # raw: run_fn applies Transform's graph (trainer_module/inputs.py)
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        raw_examples=example_gen.outputs["examples"] if window is not None else None,  # TF Lite's evaluation
        statistics=statistics_gen.outputs["statistics"],
        # No num_steps (0): the executor derives the steps from the training rows and config.epochs.
        # With spans, every row of the window: the held-out judgement is the newest span's (the Evaluator).
        train_args=trainer_pb2.TrainArgs(num_steps=config.train_steps or 0,
                                         splits=[TRAIN_SPLIT, EVAL_SPLIT] if window is not None else [TRAIN_SPLIT]),
        eval_args=trainer_pb2.EvalArgs(num_steps=config.eval_steps),
        # Warm start (trainer_module/warm_start.py) from the baseline, in runs over spans.
        base_model=baseline_model if config.span is not None and config.warm_start else None,
        hyperparameters=_hyperparameters(tuning),  # the Tuner's best, or the last tuning's (None: the defaults)
        custom_config=config.trainer_custom_config(),
        custom_executor_spec=executor_spec.ExecutorClassSpec(MultiWorkerExecutor),
    )
    for learner in (tuning, trainer) if config.tune else (trainer,):
        learner.add_upstream_node(anomalies_gate)  # no training (nor anything after it) on bad data
        learner.add_upstream_node(drift_check)  # ... nor on data that drifted, unless told to go on
    # TFX's Evaluator; a candidate that is its own baseline (a re-run on unchanged input) reuses its evaluation.
    evaluator = ReusingEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_model,
        eval_config=eval_config(config),
        example_splits=[TRAIN_SPLIT, EVAL_SPLIT] if window is not None else [EVAL_SPLIT],  # with spans: all of the newest span
    ).with_id("Evaluator").with_beam_pipeline_args(beam["Evaluator"].beam_args)
    serving_validator = ServingValidator(
        model=trainer.outputs["model"], examples=example_gen.outputs["examples"], model_name=config.model_name
    )
    pusher = _pusher(config, evaluator, serving_validator)
    return [
        example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate, drift_check,
        *[node for node in (window, analyzer_cache, tuning) if node is not None],
        transform, trainer, baseline, evaluator, serving_validator, pusher,
    ]


def _example_gen(config: configs.PipelineConfig):
    """TFX's CsvExampleGen (same spec, outputs and splits) with the Arrow executor (5.7x at 100k rows,
    bench/RESULTS.md): hash split train:eval, of one span when the data has span folders."""
    return ArrowCsvExampleGen(
        input_base=str(config.data),
        output_config=example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name=TRAIN_SPLIT, hash_buckets=config.train_buckets),
                    example_gen_pb2.SplitConfig.Split(name=EVAL_SPLIT, hash_buckets=config.eval_buckets),
                ]
            )
        ),
        **_span_input(config),
    ).with_id("CsvExampleGen")


def _baseline(config: configs.PipelineConfig):
    """(node, its Model channel): what the Evaluator and the DriftCheck compare with."""
    if config.baseline == "serving":  # the model serving now (Kubeflow: its backend runs no resolvers)
        baseline = ServingBaseline(serving_model_dir=str(config.serving_model_dir))
        return baseline, baseline.outputs["baseline_model"]
    baseline = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    return baseline, baseline.outputs["model"]


def _transform(examples, schema_gen, analyzer_cache: Optional[Resolver], both_splits: bool):
    """TFX's Transform, with the executor that records what its analyzer cache reused (spans)."""
    return analysis_reuse.Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN,
        # No transformed examples written: the Trainer applies the graph to the raw examples as it reads them
        # (trainer_module/inputs.py), once (held in memory) or in the one epoch of large data.
        materialize=False,
        disable_statistics=True,  # StatisticsGen already describes the data; this halves Transform's time
        force_tf_compat_v1=preprocessing.FORCE_TF_COMPAT_V1,  # TF1 graph tracing: a quarter faster here
        # TFT's analyzer cache reuses the analysis of spans seen before. A plain folder is one span, so a
        # change of data misses it and unchanged data skips Transform altogether (TFX's cache): writing it
        # cost 4.4 s of Transform's 17.4 on the default data (two runs each way, Transform 13.0 s without).
        # With spans every run after the first analyses only the spans new to its window.
        analyzer_cache=analyzer_cache.outputs["cache"] if analyzer_cache is not None else None,
        disable_analyzer_cache=analyzer_cache is None,
        # With spans the model trains on every row of the window, so both splits are analysed.
        splits_config=transform_pb2.SplitsConfig(analyze=[TRAIN_SPLIT, EVAL_SPLIT]) if both_splits else None,
    )


def _pusher(config: configs.PipelineConfig, evaluator, serving_validator) -> Pusher:
    # No `model`: as with InfraValidator's make_warmup, the Pusher pushes the infra blessing's copy of the
    # Trainer's model, which carries the warmup requests (assets.extra/tf_serving_warmup_requests).
    return Pusher(
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_validator.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(config.serving_model_dir))
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPusherExecutor),
    )


def _tuning(config: configs.PipelineConfig, training_examples, transform, schema_gen):
    """TFX's Tuner (`run --tune`); else, locally, the last tuning's result if there is one; None on Kubeflow."""
    if config.tune:
        # Imported here: TFX's Tuner loads KerasTuner (and Keras 3), which no other run needs.
        from tfx.components.tuner.component import Tuner

        return Tuner(
            tuner_fn=configs.TUNER_FN,
            examples=training_examples,
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=trainer_pb2.TrainArgs(num_steps=config.tune_steps),  # per trial
            eval_args=trainer_pb2.EvalArgs(num_steps=config.eval_steps),
            custom_config={**config.trainer_custom_config(), "tune_trials": config.tune_trials},
        )
    if config.baseline != "latest_blessed":  # Kubeflow's backend runs no resolvers: the defaults
        return None
    return _newest_output("latest_hyperparameters", "hyperparameters", standard_artifacts.HyperParameters,
                          "Tuner", "best_hyperparameters")


def _hyperparameters(tuning):
    if tuning is None:
        return None
    return tuning.outputs["best_hyperparameters" if "best_hyperparameters" in tuning.outputs else "hyperparameters"]


def _span_input(config: configs.PipelineConfig) -> dict:
    """ExampleGen's input pattern and range for a run that ingests one span (none for a plain folder)."""
    if config.span is None:
        return {}
    return dict(
        input_config=example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=config.span_pattern)]),
        range_config=range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=config.span, end_span_number=config.span)),
    )


def _span_window(config: configs.PipelineConfig) -> Optional[Resolver]:
    """The accepted spans before this run's, as ExampleGen wrote them (None: train on this run's data)."""
    if not config.window_spans:
        return None
    return Resolver(
        strategy_class=SpanWindowStrategy,
        config={"spans": list(config.window_spans)},
        # ExampleGen's outputs only: Transform's transformed examples are Examples too.
        examples=Channel(type=standard_artifacts.Examples, producer_component_id="CsvExampleGen", output_key="examples"),
    ).with_id("span_window")


def _analyzer_cache(config: configs.PipelineConfig) -> Optional[Resolver]:
    """The newest Transform's analyzer cache, for runs over spans (None: no cache)."""
    if config.span is None:
        return None
    return _newest_output("latest_analyzer_cache", "cache", standard_artifacts.TransformCache,
                          "Transform", "updated_analyzer_cache")


def _newest_output(node_id: str, key: str, artifact_type, producer: str, output_key: str) -> Resolver:
    """A resolver of the newest artifact an earlier run's `producer` wrote at `output_key`, as `key`
    (nothing, not a failure, when there is none yet)."""
    return Resolver(
        strategy_class=NewestArtifactStrategy,
        **{key: Channel(type=artifact_type, producer_component_id=producer, output_key=output_key)},
    ).with_id(node_id)


def create_pipeline(config: configs.PipelineConfig, metadata_connection_config: Optional[object] = None) -> Pipeline:
    """The pipeline for `config`. Pass no metadata config for Kubeflow (the cluster provides ML Metadata)."""
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=str(config.pipeline_root),
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
