"""The Evaluator on several processes: when `auto` chooses it, that Beam needs the shuffle to share the work, and
that the metrics are those of one process."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline import beam_parallelism, configs


def _config(tmp_path: Path, data_bytes: int, **changes) -> configs.PipelineConfig:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "data.csv").write_bytes(b"x" * data_bytes)
    return configs.PipelineConfig(home=tmp_path / "home", data_root=data, **changes)


def test_auto_gives_the_evaluator_several_processes_only_for_a_large_enough_eval_share(tmp_path):
    threshold = beam_parallelism.EVALUATOR_PARALLEL_MIN_BYTES
    small = beam_parallelism.evaluator_beam(_config(tmp_path, threshold))  # a third of it is evaluated
    assert (small.processes, small.module_path, small.beam_args) == (1, None, [])
    large = beam_parallelism.evaluator_beam(_config(tmp_path, 3 * threshold + 3))
    assert large.processes == 2 and large.module_path == "components.parallel_evaluation"
    assert large.beam_args == ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert beam_parallelism.evaluator_beam(_config(tmp_path, 3 * threshold + 3, beam_mode="in_memory")).processes == 1
    assert beam_parallelism.evaluator_beam(_config(tmp_path, 10, beam_mode="multi_processing",
                                                   beam_workers=3)).processes == 3
    elsewhere = configs.PipelineConfig(home=tmp_path / "home", data_root=tmp_path / "not-here")
    assert beam_parallelism.evaluator_beam(elsewhere).processes == 2  # a cluster's volume: assume it pays


def test_with_spans_the_whole_new_span_counts(tmp_path):
    span = tmp_path / "data" / "span-3"
    span.mkdir(parents=True)
    (span / "part.csv").write_bytes(b"x" * beam_parallelism.EVALUATOR_PARALLEL_MIN_BYTES)
    config = configs.PipelineConfig(home=tmp_path / "home", data_root=tmp_path / "data", span=3,
                                    span_pattern="span-{SPAN}/*")
    assert beam_parallelism.bytes_to_evaluate(config) == beam_parallelism.EVALUATOR_PARALLEL_MIN_BYTES
    assert beam_parallelism.evaluator_beam(config).processes == 2


def test_the_pipeline_gives_the_evaluator_its_processes_and_the_rest_the_pipelines_options(tmp_path):
    from pipeline.pipeline import create_components

    config = _config(tmp_path, 3 * beam_parallelism.EVALUATOR_PARALLEL_MIN_BYTES + 3)
    components = {c.id: c for c in create_components(config)}
    assert components["Evaluator"].exec_properties["module_path"] == "components.parallel_evaluation"
    assert components["Evaluator"].executor_spec.beam_pipeline_args[-2:] == [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert components["Transform"].executor_spec.beam_pipeline_args == []  # the pipeline's: in this process
    assert config.beam_pipeline_args() == ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _pid(_):
    return os.getpid()


def _worker_pids(tmp_path: Path, shuffle: bool) -> set:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    path = str(tmp_path / f"records-{shuffle}")
    with beam.Pipeline() as p:
        _ = p | beam.Create([b"%d" % i for i in range(400)]) | beam.io.WriteToTFRecord(path, num_shards=1)
    out = str(tmp_path / f"pids-{shuffle}")
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    with beam.Pipeline(options=options) as p:
        records = p | beam.io.ReadFromTFRecord(path + "*")
        if shuffle:
            records = records | beam.Reshuffle()
        _ = records | beam.Map(_pid) | beam.Distinct() | beam.Map(str) | beam.io.WriteToText(out)
    return {line for f in tmp_path.glob(f"pids-{shuffle}*") for line in f.read_text().split()}


def test_beams_direct_runner_shares_a_read_among_processes_only_after_a_shuffle(tmp_path, monkeypatch):
    """What components/parallel_evaluation.py is for: Beam's FnApiRunner (fn_runner.py, ParallelBundleManager)
    splits a stage's input among processes, and a stage that starts at a read has one input. If this fails
    because the read alone is shared, Beam has changed and the shuffle may no longer be needed."""
    here = str(Path(__file__).parent)  # the worker processes unpickle _pid from this module
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    assert len(_worker_pids(tmp_path, shuffle=False)) == 1
    assert len(_worker_pids(tmp_path, shuffle=True)) == 2


def test_two_processes_give_the_metrics_of_one_to_1e6(taxi_pipeline_run, tmp_path):
    """TFX's Evaluator executor with our extractors on two processes, against one process with TFMA's default
    metrics (the pipeline before): every metric of every slice within 1e-6."""
    from bench.evaluator_processes import _evaluate, differences

    (tmp_path / "before").mkdir()
    (tmp_path / "two").mkdir()
    before = _evaluate(Path(taxi_pipeline_run.home), tmp_path / "before", "before", workers=2)["metrics"]
    two = _evaluate(Path(taxi_pipeline_run.home), tmp_path / "two", "two", workers=2)["metrics"]
    assert len(before) > 30 and "Overall:auc" in before  # overall and every slice (hours, payment types)
    assert differences(two, before) == []


def test_tfxs_evaluator_still_takes_extractors_from_its_module():
    """TFX's Evaluator executor looks `custom_extractors` up in its module (tfx/components/evaluator/executor.py)."""
    import inspect

    from tfx.components.evaluator import executor

    assert "fn_name='custom_extractors'" in inspect.getsource(executor.Executor.Do)
