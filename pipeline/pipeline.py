"""`create_pipeline(config)`: the only place the components are wired.

CsvExampleGen -> StatisticsGen -> ExampleValidator (against the curated schema) -> AnomaliesGate -> Transform ->
Trainer (one or several workers) -> Evaluator (against the latest blessed model) and ServingValidator
(loads it in a model server, writes the model with warmup requests) -> Pusher (pushes that model).
The local runner and the Kubeflow runner both build their pipeline here.
"""
from typing import List, Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.anomalies_gate import AnomaliesGate
from components.arrow_csv_example_gen import ArrowCsvExampleGen
from components.atomic_pusher import AtomicPusherExecutor
from components.multiworker_trainer.executor import MultiWorkerExecutor
from components.reusing_evaluator import ReusingEvaluator
from components.serving_validator import ServingValidator
from pipeline import configs
from trainer_module import features, preprocessing


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
            )
        ],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=["trip_start_hour"]),
            tfma.SlicingSpec(feature_keys=["payment_type"]),
        ],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="AUC",
                        per_slice_thresholds=[tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=auc_threshold)],
                    ),
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
                ]
            )
        ],
    )


def create_components(config: configs.PipelineConfig) -> List:
    # TFX's CsvExampleGen (same spec, outputs and splits) with the Arrow executor (5.7x at 100k rows, bench/RESULTS.md).
    example_gen = ArrowCsvExampleGen(
        input_base=str(config.data),
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=config.train_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=config.eval_buckets),
                ]
            )
        ),
    ).with_id("CsvExampleGen")
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=str(config.schema_path))
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"], fail_on_anomalies=int(config.fail_on_anomalies)
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN,
        disable_statistics=True,  # StatisticsGen already describes the data; this halves Transform's time
        force_tf_compat_v1=preprocessing.FORCE_TF_COMPAT_V1,  # TF1 graph tracing: a quarter faster here
    )
    transform.add_upstream_node(anomalies_gate)  # no Transform (nor anything after it) on bad data
    trainer = tfx.components.Trainer(
        run_fn=configs.RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        # No num_steps (0): the executor derives the steps from the training rows and config.epochs.
        train_args=tfx.proto.TrainArgs(num_steps=config.train_steps or 0),
        eval_args=tfx.proto.EvalArgs(num_steps=config.eval_steps),
        custom_config=config.trainer_custom_config(),
        custom_executor_spec=executor_spec.ExecutorClassSpec(MultiWorkerExecutor),
    )
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # TFX's Evaluator; a candidate that is its own baseline (a re-run on unchanged input) reuses its evaluation.
    evaluator = ReusingEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=eval_config(config),
    ).with_id("Evaluator")
    serving_validator = ServingValidator(
        model=trainer.outputs["model"], examples=example_gen.outputs["examples"], model_name=config.model_name
    )
    # No `model`: as with InfraValidator's make_warmup, the Pusher pushes the infra blessing's copy of the
    # Trainer's model, which carries the warmup requests (assets.extra/tf_serving_warmup_requests).
    pusher = tfx.components.Pusher(
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(config.serving_model_dir))
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPusherExecutor),
    )
    return [
        example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
        transform, trainer, baseline, evaluator, serving_validator, pusher,
    ]


def create_pipeline(config: configs.PipelineConfig, metadata_connection_config: Optional[object] = None) -> tfx.dsl.Pipeline:
    """The pipeline for `config`. Pass no metadata config for Kubeflow (the cluster provides ML Metadata)."""
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=str(config.pipeline_root),
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
