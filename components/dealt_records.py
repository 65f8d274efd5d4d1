"""TFX's Beam components on several local processes: the records they read, dealt out among the workers.

Beam's direct runner in `multi_processing` mode (the FnApiRunner) splits a stage's input among its worker
processes only where a shuffle ends the stage before (`apache_beam/runners/portability/fn_api_runner/
fn_runner.py`, `ParallelBundleManager.process_bundle`, Beam 2.59). A TFX component reads its examples and
does all its per-row work (decoding, statistics, TFT's analyzers and transforms, the model's predictions,
the metric combiners' pre-combine) in one fused stage that starts at the read, whose input is one impulse:
one process does all the work while the others wait.

TFX's components read record files through tfx_bsl's TFXIO, whose every record-file source is
`tfx_bsl.tfxio.record_based_tfxio.ReadTfRecord` (replaced through kubeflow/tfx_internals.py, the
project's one module of library internals). While `dealt_among_workers(options)` is entered on several processes, that source reads the same
files, then packs the records in batches of `BATCH_RECORDS`, numbers the batches 0, 1, 2 ... and groups them
by number. The runner hands the groups of a shuffle round-robin to the workers in the order it received
them (`execution.py`, `GroupingBuffer.partition`: the i-th key to worker i % n), so each worker gets every
n-th batch, the same share in every run, and the rest of the component runs in every worker on its share.

What crosses the runner is the records' bytes, one `bytes` object per batch: the runner keeps a decoded and
an encoded copy of a shuffle's values while it partitions them, which for the Evaluator's former shuffle of
decoded record batches came to 1.6 GiB at 333k eval rows; for raw records it is about twice their size.
The records are the same and each is read once, so every count is the same; combiners see the rows in
another grouping, so sums can differ in the last bits and approximate quantiles within their epsilon.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from typing import Iterable, Iterator, List, Sequence, Tuple

import apache_beam as beam

from kubeflow import tfx_internals

BATCH_RECORDS = 1024  # 1M rows: about 1,000 batches, so two workers' shares differ by one batch at most
STAGE = "DealRecordsAmongWorkers"


class _NumberBatches(beam.DoFn):
    """Gives each batch of records the next number (the read is one stage in one process: 0, 1, 2 ...)."""

    def setup(self):
        self._next = 0

    def process(self, records: List[bytes]) -> Iterator[Tuple[int, bytes]]:
        yield self._next, pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        self._next += 1


def _unpack(numbered: Tuple[int, Iterable[bytes]]) -> Iterator[bytes]:
    for packed in numbered[1]:
        yield from pickle.loads(packed)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def DealtTfRecords(pipeline, file_pattern: Sequence[str], read=None):  # pylint: disable=invalid-name
    """tfx_bsl's ReadTfRecord (`read`), then the records dealt out among the runner's workers in batches."""
    return (pipeline
            | "Read" >> read(file_pattern)
            | f"{STAGE}/Batch" >> beam.BatchElements(min_batch_size=BATCH_RECORDS, max_batch_size=BATCH_RECORDS)
            | f"{STAGE}/Number" >> beam.ParDo(_NumberBatches())
            | f"{STAGE}/Group" >> beam.GroupByKey()
            | f"{STAGE}/Unpack" >> beam.FlatMap(_unpack).with_output_types(bytes))


def several_processes(beam_pipeline_args: Sequence[str]) -> bool:
    """Whether these Beam options, read by Beam's own parser, run the direct runner on more than one process."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_pipeline_args or ()))
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or os.cpu_count() or 1  # Beam: 0 is one per core
    runner = options.view_as(StandardOptions).runner
    return direct.direct_running_mode == "multi_processing" and workers > 1 and runner in (None, "DirectRunner", "direct")


def dealt_among_workers(beam_pipeline_args: Sequence[str]):
    """A context: while entered, when these Beam options run the direct runner on several processes, every
    TFXIO record source built deals its records out among the workers (else it changes nothing)."""
    if not several_processes(beam_pipeline_args):
        return contextlib.nullcontext()
    return tfx_internals.tfxio_record_source(
        lambda read: lambda file_pattern: DealtTfRecords(file_pattern, read=read))  # noqa: E731
