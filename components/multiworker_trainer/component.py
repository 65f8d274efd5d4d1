"""TFX's Trainer with two more (optional) inputs: the raw examples and their statistics.

- `raw_examples` (ExampleGen's output of this run, when the model trains on other examples: a window of
  earlier spans): the executor hands its raw eval split (else the eval split of `examples`, raw too: Transform
  writes no transformed examples) to `run_fn` as `custom_config["raw_eval_files"]`, where it calibrates the
  int8 TF Lite model and evaluates each TF Lite model on raw features beside the SavedModel. One artifact
  under two keys would be recorded under one only: ML Metadata keeps one input event per artifact and
  execution, so the Trainer's `examples` would be lost from its lineage;
- `statistics` (StatisticsGen's output): the executor stores the train split's statistics inside
  the exported SavedModel, as `assets.extra/training_statistics.pb` (a model server ignores it), so
  every model, once pushed, carries the statistics of the data it was trained on: the next run's
  drift check and `taxi-pipeline skew` compare against exactly those.

Everything else is the stock Trainer (same spec keys, parameters, outputs and executor contract).
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.components.trainer import component as trainer_component
from tfx.dsl.components.base import base_component
from tfx.proto import trainer_pb2
from tfx.types import component_spec, standard_artifacts, standard_component_specs
from tfx.utils import json_utils

RAW_EXAMPLES_KEY = "raw_examples"
STATISTICS_KEY = "statistics"


class TrainerWithDataSpec(standard_component_specs.TrainerSpec):
    INPUTS = {
        **standard_component_specs.TrainerSpec.INPUTS,
        RAW_EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples, optional=True),
        STATISTICS_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
    }


class Trainer(trainer_component.Trainer):
    """`tfx.components.Trainer(examples=..., transform_graph=..., schema=..., run_fn=...)` plus
    `raw_examples` and `statistics` (and TFX's `base_model`, the model to warm-start from, and `hyperparameters`)."""

    SPEC_CLASS = TrainerWithDataSpec

    def __init__(self, examples: types.BaseChannel, run_fn: str, transform_graph: Optional[types.BaseChannel] = None,
                 schema: Optional[types.BaseChannel] = None, raw_examples: Optional[types.BaseChannel] = None,
                 statistics: Optional[types.BaseChannel] = None, base_model: Optional[types.BaseChannel] = None,
                 hyperparameters: Optional[types.BaseChannel] = None, train_args: Optional[trainer_pb2.TrainArgs] = None,
                 eval_args: Optional[trainer_pb2.EvalArgs] = None, custom_config: Optional[dict] = None,
                 custom_executor_spec=None):
        spec = TrainerWithDataSpec(
            examples=examples, transform_graph=transform_graph, schema=schema, raw_examples=raw_examples,
            statistics=statistics, base_model=base_model, hyperparameters=hyperparameters,
            train_args=train_args or trainer_pb2.TrainArgs(),
            eval_args=eval_args or trainer_pb2.EvalArgs(), run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun))
        base_component.BaseComponent.__init__(self, spec=spec, custom_executor_spec=custom_executor_spec)
