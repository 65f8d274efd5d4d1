"""Beam components on several processes: when `auto` chooses them, that Beam needs the records dealt out to
share the work (and deals them as components/dealt_records.py says), and that the results are one process's."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from pipeline import beam_parallelism, configs

SEVERAL = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _config(tmp_path: Path, data_bytes: int, **changes) -> configs.PipelineConfig:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "data.csv").write_bytes(b"x" * data_bytes)
    return configs.PipelineConfig(home=tmp_path / "home", data_root=data, **changes)


def test_auto_gives_the_evaluator_several_processes_only_for_a_large_enough_eval_share(tmp_path):
    threshold = beam_parallelism.PARALLEL_MIN_BYTES["Evaluator"]
    small = beam_parallelism.component_beam(_config(tmp_path, 3 * threshold - 3), "Evaluator")  # a third is evaluated
    assert (small.processes, small.beam_args) == (1, [])
    large = beam_parallelism.component_beam(_config(tmp_path, 3 * threshold + 3), "Evaluator")
    assert (large.processes, large.beam_args) == (2, SEVERAL)
    elsewhere = configs.PipelineConfig(home=tmp_path / "home", data_root=tmp_path / "not-here")
    assert beam_parallelism.component_beam(elsewhere, "Evaluator").processes == 2  # a cluster's volume: assume it pays


@pytest.mark.parametrize("component", beam_parallelism.BEAM_COMPONENTS)
def test_the_modes_give_every_beam_component_what_they_say(tmp_path, component):
    huge = 10 ** 9
    assert beam_parallelism.component_beam(_config(tmp_path, 10, beam_mode="in_memory"), component).processes == 1
    three = _config(tmp_path, 10, beam_mode="multi_processing", beam_workers=3)
    assert beam_parallelism.component_beam(three, component).processes == 3
    one_worker = _config(tmp_path, 10, beam_mode="multi_processing", beam_workers=1)
    assert beam_parallelism.component_beam(one_worker, component).processes == 1
    if beam_parallelism.PARALLEL_MIN_BYTES[component] is None:  # auto keeps it in one process at any size
        auto = beam_parallelism.component_beam(_config(tmp_path, 0), component)
        assert auto.processes == 1 and "1M rows" in auto.why
        assert beam_parallelism.bytes_read(_config(tmp_path, huge // 10 ** 3), component) == huge // 10 ** 3


def test_with_spans_the_new_span_counts_and_for_transform_the_window(tmp_path):
    data = tmp_path / "data"
    for span, size in ((1, 100), (2, 200), (3, 400)):
        (data / f"span-{span}").mkdir(parents=True)
        (data / f"span-{span}" / "part.csv").write_bytes(b"x" * size)
    config = configs.PipelineConfig(home=tmp_path / "home", data_root=data, span=3, span_pattern="span-{SPAN}/*",
                                    window_spans=(1, 2))
    assert beam_parallelism.bytes_read(config, "Evaluator") == 400  # every row of the new span
    assert beam_parallelism.bytes_read(config, "StatisticsGen") == 400
    assert beam_parallelism.bytes_read(config, "Transform") == 300  # the spans it trains on
    first = configs.PipelineConfig(home=tmp_path / "home", data_root=data, span=1, span_pattern="span-{SPAN}/*")
    assert beam_parallelism.bytes_read(first, "Transform") == 100  # a home's first span trains on itself


def test_the_serving_check_runs_beside_the_evaluator_only_when_the_evaluator_has_no_workers_of_its_own(tmp_path):
    from pipeline.pipeline import DATA_CHECKS, SERVING_CHECK, create_components, nodes_beside

    threshold = beam_parallelism.PARALLEL_MIN_BYTES["Evaluator"]
    for sub in ("s", "l", "m"):
        (tmp_path / sub).mkdir()
    small, large = _config(tmp_path / "s", 3 * threshold - 3), _config(tmp_path / "l", 3 * threshold + 3)
    assert nodes_beside(small) == (*DATA_CHECKS, SERVING_CHECK)
    assert nodes_beside(large) == DATA_CHECKS
    assert nodes_beside(_config(tmp_path / "m", 10, beam_mode="multi_processing")) == DATA_CHECKS
    # Beside the Evaluator: it needs neither the Evaluator nor anything after it, and the Pusher needs it.
    components = {c.id: c for c in create_components(small)}

    def producers(node):
        return {channel.producer_component_id for channel in components[node].inputs.values()}

    assert producers(SERVING_CHECK) == {"CsvExampleGen", "Trainer"}
    assert SERVING_CHECK in producers("Pusher")


def test_the_pipeline_gives_each_beam_component_its_processes(tmp_path):
    from pipeline.pipeline import create_components

    config = _config(tmp_path, 3 * beam_parallelism.PARALLEL_MIN_BYTES["Evaluator"] + 3)
    components = {c.id: c for c in create_components(config)}
    assert components["Evaluator"].executor_spec.beam_pipeline_args[-2:] == SEVERAL
    for name in ("CsvExampleGen", "StatisticsGen", "Transform"):  # the pipeline's options: in this process
        assert components[name].executor_spec.beam_pipeline_args == [], name
    assert config.beam_pipeline_args() == ["--direct_running_mode=in_memory", "--direct_num_workers=1",
                                           "--pickle_library=cloudpickle"]
    forced = {c.id: c for c in create_components(_config(tmp_path, 1000, beam_mode="multi_processing"))}
    for name in beam_parallelism.BEAM_COMPONENTS:
        assert forced[name].executor_spec.beam_pipeline_args[-2:] == SEVERAL, name


# ---- Beam's direct runner, which the dealing relies on ------------------------------------------------------

def _pid_and_record(record):
    return os.getpid(), record


def _records(tmp_path: Path, count: int) -> str:
    import apache_beam as beam

    path = str(tmp_path / "records")
    with beam.Pipeline() as p:
        _ = p | beam.Create([b"%06d" % i for i in range(count)]) | beam.io.WriteToTFRecord(path, num_shards=1)
    return path + "*"


def _who_read_what(tmp_path: Path, pattern: str, dealt: bool) -> dict:
    """Each worker process's pid -> the records it was handed, reading `pattern` on two processes."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from components import dealt_records

    out = str(tmp_path / f"who-{dealt}")
    with beam.Pipeline(options=PipelineOptions(SEVERAL)) as p:
        read = (dealt_records.DealtTfRecords([pattern], read=_read_tf_record) if dealt
                else _read_tf_record([pattern]))
        _ = (p | read | beam.Map(_pid_and_record) | beam.MapTuple(lambda pid, record: f"{pid} {record.decode()}")
             | beam.io.WriteToText(out))
    who = collections.defaultdict(set)
    for f in tmp_path.glob(f"who-{dealt}*"):
        for line in f.read_text().split("\n"):
            if line:
                pid, record = line.split()
                who[pid].add(int(record))
    return dict(who)


def _read_tf_record(file_pattern):
    from tfx_bsl.tfxio import record_based_tfxio

    return record_based_tfxio.ReadTfRecord(file_pattern)


@pytest.fixture
def workers_import_this_module(monkeypatch):
    here = str(Path(__file__).parent)  # the worker processes unpickle this module's functions
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))


def test_beams_direct_runner_shares_a_read_among_processes_only_when_dealt(tmp_path, monkeypatch,
                                                                           workers_import_this_module):
    """Beam's FnApiRunner (fn_runner.py, ParallelBundleManager) splits a stage's input among processes, and a
    stage that starts at a read has one input: one process gets every record. Dealt, the i-th batch of
    BATCH_RECORDS goes to worker i % 2 (execution.py, GroupingBuffer.partition), every record once. If the
    first assertion fails, Beam shares reads by itself and the dealing may no longer be needed."""
    from components import dealt_records

    monkeypatch.setattr(dealt_records, "BATCH_RECORDS", 10)
    pattern = _records(tmp_path, 95)
    assert [len(records) for records in _who_read_what(tmp_path, pattern, dealt=False).values()] == [95]
    dealt = sorted(_who_read_what(tmp_path, pattern, dealt=True).values(), key=min)
    assert len(dealt) == 2
    assert dealt[0] | dealt[1] == set(range(95)) and not dealt[0] & dealt[1]
    batches = [set(range(start, min(start + 10, 95))) for start in range(0, 95, 10)]
    assert dealt == [set().union(*batches[0::2]), set().union(*batches[1::2])]


def test_several_processes_reads_the_options_as_the_direct_runner_does():
    from components.dealt_records import several_processes

    assert several_processes(SEVERAL)
    assert not several_processes(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert not several_processes(["--direct_running_mode=in_memory", "--direct_num_workers=1", *SEVERAL[:1]])
    assert several_processes(["--direct_running_mode=in_memory", "--direct_num_workers=1", *SEVERAL])  # last wins
    assert not several_processes([*SEVERAL, "--runner=PortableRunner"])
    assert several_processes(["--direct_running_mode=multi_processing", "--direct_num_workers=0"]) == (
        (os.cpu_count() or 1) > 1)  # Beam: one worker per core


# ---- the same results -----------------------------------------------------------------------------------

def test_two_processes_give_the_metrics_of_one_to_1e6(taxi_pipeline_run, tmp_path):
    """TFX's Evaluator executor on two processes, its records dealt, against one process with TFMA's default
    metrics (the pipeline before): every metric of every slice within 1e-6."""
    from bench.evaluator_processes import _evaluate, differences

    (tmp_path / "before").mkdir()
    (tmp_path / "two").mkdir()
    before = _evaluate(Path(taxi_pipeline_run.home), tmp_path / "before", "before", workers=2)["metrics"]
    two = _evaluate(Path(taxi_pipeline_run.home), tmp_path / "two", "two", workers=2)["metrics"]
    assert len(before) > 30 and "Overall:auc" in before  # overall and every slice (hours, payment types)
    assert differences(two, before) == []


def test_statistics_gen_on_two_processes_counts_what_one_process_counts(taxi_pipeline_run, tmp_path):
    """TFX's StatisticsGen with this project's executor on two processes, its records dealt, on the shared run's
    examples: every split's row count and every categorical feature's value counts equal the run's own
    statistics (one process). Numeric quantiles are approximate and not compared."""
    import tensorflow_data_validation as tfdv
    from tfx.types import standard_artifacts

    from bench.evaluator_processes import newest_output
    from components import dealt_statistics_gen
    from pipeline import run_results
    from trainer_module import records

    store = run_results.connect(Path(taxi_pipeline_run.metadata_path))
    examples = newest_output(store, "Examples", "CsvExampleGen")
    theirs = newest_output(store, "ExampleStatistics", "StatisticsGen")
    ours = standard_artifacts.ExampleStatistics()
    ours.uri = str(tmp_path / "statistics")
    executor = dealt_statistics_gen.Executor(dealt_statistics_gen.Executor.Context(
        beam_pipeline_args=SEVERAL, tmp_dir=str(tmp_path / "tmp"), unique_id="dealt"))
    executor.Do({"examples": [examples]}, {"statistics": [ours]}, {"exclude_splits": "[]"})

    def counts(uri: str, split: str):
        stats = tfdv.load_stats_binary(records.statistics_file(uri, split)).datasets[0]
        top = {f.path.step[0]: sorted((v.value, v.frequency) for v in f.string_stats.top_values)
               for f in stats.features if f.HasField("string_stats")}
        return stats.num_examples, top

    for split in (records.TRAIN_SPLIT, records.EVAL_SPLIT):
        rows, top = counts(ours.uri, split)
        assert rows > 1000 and top
        assert (rows, top) == counts(theirs.uri, split), split
