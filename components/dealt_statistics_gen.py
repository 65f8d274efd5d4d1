"""TFX's StatisticsGen whose examples are dealt out among Beam's worker processes when it runs on several.

Same spec, inputs, outputs and statistics as TFX's component; only the read differs, as
components/dealt_records.py says, and only under the direct runner's `multi_processing` mode.
"""
from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.components.statistics_gen import component as statistics_gen_component
from tfx.components.statistics_gen import executor as statistics_gen_executor
from tfx.dsl.components.base import executor_spec

from components import dealt_records


class Executor(statistics_gen_executor.Executor):
    """TFX's StatisticsGen executor, its records dealt out among the Beam workers on several processes."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        with dealt_records.dealt_among_workers(self._beam_pipeline_args):
            super().Do(input_dict, output_dict, exec_properties)


class StatisticsGen(statistics_gen_component.StatisticsGen):
    """TFX's StatisticsGen component with this module's executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
