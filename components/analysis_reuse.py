"""TFX's Transform executor, saying which datasets it took from TFT's analyzer cache and which it analysed.

TF-Transform's analyzer cache keeps one folder per analysed dataset (an input split of one Examples
artifact), named after the split's path (`...-CsvExampleGen-examples-<id>-Split-train-...`), and the
updated cache a run writes holds every dataset of its input, reused or analysed. TFX logs neither which
datasets were reused nor how many (its `cached_datasets` Beam counter is not surfaced). So after
TFX's executor has run, a dataset whose folder was in the input cache was read from it, the others
were analysed. Both counts go on the updated cache artifact as custom properties (ML Metadata, where
`status` and the summary read them) and into the log, one line per run:

    analyzer cache: reused 6 of 8 datasets (...-examples-14-Split-train, ...), analysed 2 (...)

On several Beam processes its records are dealt out among them (components/dealt_records.py).
"""
import logging
import re
from typing import Any, Dict, List, Set

from tfx import types
from tfx.components.transform import component as transform_component
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs

from components import dealt_records
from components.mlmd_properties import ANALYSED_PROPERTY, REUSED_PROPERTY
from kubeflow import tfx_internals
from trainer_module.records import SPLIT_PREFIX

log = logging.getLogger(__name__)


def dataset_folders(artifacts: List[types.Artifact]) -> Set[str]:
    """The dataset folders of an analyzer-cache artifact (none when there is no artifact or folder)."""
    folders: Set[str] = set()
    for artifact in artifacts or []:
        if fileio.exists(artifact.uri):
            folders.update(name.strip("/") for name in fileio.listdir(artifact.uri) if fileio.isdir(
                f"{artifact.uri.rstrip('/')}/{name.strip('/')}"))
    return folders


class Executor(transform_executor.Executor):
    """Runs TFX's Transform (its records dealt among the Beam workers), then records and logs what its analysis reused."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        cached = dataset_folders(input_dict.get(standard_component_specs.ANALYZER_CACHE_KEY))
        # With a window of spans most of the analysis comes from the cache: about 20 entries per dataset, each
        # read while the pipeline is built rather than by several Beam stages of its own (kubeflow/tfx_internals.py).
        # Transform with 16 of 18 datasets cached, 2026-12-07: 35.0 and 31.8 s against 51.2 and 52.5 s with TFX's
        # reader, the same vocabularies and constants (bench/RESULTS.md, the span_cost section).
        with dealt_records.dealt_among_workers(self._beam_pipeline_args), \
                tfx_internals.analyzer_cache_read_while_built():
            super().Do(input_dict, output_dict, exec_properties)
        updated = output_dict.get(standard_component_specs.UPDATED_ANALYZER_CACHE_KEY) or []
        if not updated:
            return
        written = dataset_folders(updated)
        reused, analysed = sorted(written & cached), sorted(written - cached)
        updated[0].set_int_custom_property(REUSED_PROPERTY, len(reused))
        updated[0].set_int_custom_property(ANALYSED_PROPERTY, len(analysed))
        log.info("analyzer cache: reused %d of %d datasets (%s), analysed %d (%s)", len(reused), len(written),
                 _names(reused), len(analysed), _names(analysed))


def _names(folders: List[str]) -> str:
    """`examples-14-Split-train` for TFT's `<pipeline root>-CsvExampleGen-examples-14-Split-train-STAR-<hash>`."""
    short = [re.sub(rf"^.*?-([a-z_]+-\d+-{re.escape(SPLIT_PREFIX)}[^-]+)-STAR-.*$", r"\1", name) for name in folders]
    return ", ".join(short) or "none"


class Transform(transform_component.Transform):
    """TFX's Transform component with this module's executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
