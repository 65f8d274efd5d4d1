"""TFX's Evaluator executor that does not evaluate a model against itself.

On a second run over unchanged input every component up to the Trainer comes from the cache, but
the Evaluator does not: its baseline (the latest blessed model) is now the candidate itself, so its
inputs changed and TFMA evaluates the same model on the same examples again, twice (candidate and
baseline), which is most of the second run's time.

This executor runs TFX's Evaluator executor unchanged, except when the candidate *is* the baseline
(the same model artifact) and an earlier evaluation of that model, on the same examples, with the
same eval config and splits, is in the pipeline root: then it copies that evaluation (metrics,
plots, validation result) and writes the blessing TFX's executor would write. The change thresholds
compare the model with itself, a change of zero; the copy is taken only when zero passes every
change threshold (a required improvement > 0 cannot pass against itself: then TFMA runs as usual).
Each evaluation records what it evaluated in `evaluated.json`; a copy also says where it came from.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.components.evaluator.component import Evaluator
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from components import dealt_records
from components.serving_baseline import has_baseline
from kubeflow import tfx_internals

log = logging.getLogger(__name__)

RECORD_FILE = "evaluated.json"


def _key(input_dict, exec_properties) -> Dict[str, str]:
    """What an evaluation's result depends on: the model, the examples, the eval config and splits."""
    model = artifact_utils.get_single_uri(input_dict[standard_component_specs.MODEL_KEY])
    examples = artifact_utils.get_single_uri(input_dict[standard_component_specs.EXAMPLES_KEY])
    config = "|".join(str(exec_properties.get(k) or "") for k in (
        standard_component_specs.EVAL_CONFIG_KEY, standard_component_specs.EXAMPLE_SPLITS_KEY,
        standard_component_specs.MODULE_FILE_KEY, standard_component_specs.MODULE_PATH_KEY))
    return {"model": model, "examples": examples, "config_sha256": hashlib.sha256(config.encode()).hexdigest()}


def zero_change_passes(eval_config_json: str) -> bool:
    """Whether a candidate compared with itself (every change 0) passes all change thresholds."""
    import tensorflow_model_analysis as tfma
    from tfx.utils import proto_utils

    config = tfma.EvalConfig()
    proto_utils.json_to_proto(eval_config_json, config)
    thresholds = []
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            if metric.HasField("threshold"):
                thresholds.append(metric.threshold)
            thresholds += [t.threshold for t in metric.per_slice_thresholds]
            thresholds += [t.threshold for t in metric.cross_slice_thresholds]
        thresholds += list(spec.thresholds.values())
        thresholds += [t.threshold for ts in spec.per_slice_thresholds.values() for t in ts.thresholds]
    for threshold in thresholds:
        if not threshold.HasField("change_threshold"):
            continue
        change = threshold.change_threshold
        bounds = [getattr(change, f).value for f in ("absolute", "relative") if change.HasField(f)]
        if change.direction == tfma.MetricDirection.HIGHER_IS_BETTER and any(v > 0 for v in bounds):
            return False
        if change.direction == tfma.MetricDirection.LOWER_IS_BETTER and any(v < 0 for v in bounds):
            return False
    return True


def _earlier_evaluation(output_uri: str, key: Dict[str, str]) -> Optional[str]:
    """The newest earlier evaluation of this component that evaluated exactly `key`."""
    for _, uri in reversed(tfx_internals.earlier_outputs(output_uri)):
        record = os.path.join(uri, RECORD_FILE)
        if not fileio.exists(record):
            continue
        with fileio.open(record, "r") as f:
            earlier = json.loads(f.read())
        if all(earlier.get(k) == v for k, v in key.items()):
            return uri
    return None


def _copy_tree(src: str, dst: str) -> None:
    for name in fileio.listdir(src):
        source, target = os.path.join(src, name.rstrip("/")), os.path.join(dst, name.rstrip("/"))
        if name.rstrip("/") == RECORD_FILE:
            continue
        if fileio.isdir(source):
            fileio.makedirs(target)
            _copy_tree(source, target)
        else:
            fileio.copy(source, target, overwrite=True)


class Executor(tfx_evaluator.Executor):
    """TFX's Evaluator executor; a candidate that is its own baseline reuses its earlier evaluation."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        baseline = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        if baseline and not has_baseline(baseline[0]):  # Kubeflow's ServingBaseline found nothing served yet
            log.warning("no model is served yet: the candidate is checked against the absolute bars only, "
                        "not against a baseline")
            input_dict = {k: v for k, v in input_dict.items() if k != standard_component_specs.BASELINE_MODEL_KEY}
        output_uri = artifact_utils.get_single_uri(output_dict[constants.EVALUATION_KEY])
        key = _key(input_dict, exec_properties)
        earlier = self._reusable(input_dict, output_uri, key, exec_properties)
        if earlier is None:
            with dealt_records.dealt_among_workers(self._beam_pipeline_args):
                super().Do(input_dict, output_dict, exec_properties)
            record = {**key}
        else:
            log.info("the candidate is its own baseline: reusing its evaluation %s instead of evaluating it "
                     "against itself", earlier)
            _copy_tree(earlier, output_uri)
            self._bless(input_dict, output_dict, exec_properties, output_uri)
            record = {**key, "reused_from": earlier}
        io_utils.write_string_file(os.path.join(output_uri, RECORD_FILE), json.dumps(record, indent=1))

    def _reusable(self, input_dict, output_uri: str, key, exec_properties) -> Optional[str]:
        baseline = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        candidate = input_dict.get(standard_component_specs.MODEL_KEY) or []
        if len(baseline) != 1 or len(candidate) != 1:
            return None
        same = baseline[0].uri.rstrip("/") == candidate[0].uri.rstrip("/")
        config = exec_properties.get(standard_component_specs.EVAL_CONFIG_KEY)
        if not same or not config or not zero_change_passes(config):
            return None
        return _earlier_evaluation(output_uri, key)

    def _bless(self, input_dict, output_dict, exec_properties, output_uri: str) -> None:
        """The blessing TFX's Evaluator writes, from the (copied) validation result."""
        import tensorflow_model_analysis as tfma

        if not output_dict.get(standard_component_specs.BLESSING_KEY):
            return
        tfx_internals.write_blessing(
            artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY]),
            input_dict[standard_component_specs.MODEL_KEY][0], input_dict[standard_component_specs.BASELINE_MODEL_KEY][0],
            exec_properties, tfma.load_validation_result(output_uri).validation_ok)



class ReusingEvaluator(Evaluator):
    """TFX's Evaluator component (same spec, inputs and outputs) running this executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
