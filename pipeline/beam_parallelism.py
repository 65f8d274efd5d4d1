"""How many local processes the Evaluator's Beam pipeline runs on (`--beam-mode`, direct runner).

- `in_memory`: every Beam component in the run's own process.
- `multi_processing`: every Beam component on `beam_workers` processes.
- `auto` (the default): every component in the run's own process, except the Evaluator, which runs on
  `beam_workers` processes when the rows it evaluates are enough to repay them.

Why only the Evaluator. The direct runner splits a stage's input among its worker processes only after a
shuffle (components/parallel_evaluation.py says where in Beam). The executors of ExampleGen,
StatisticsGen and Transform read and process in stages that start at the read, so on several processes
one does the work and the others add their start-up. The Evaluator gets a shuffle of its own
(components/parallel_evaluation.py); then its per-row work, most of a large run's CPU, is shared.

Each worker process imports TensorFlow and TFMA and loads the model (about 10 CPU s together), so
small evaluations stay in one process. The threshold is in CSV bytes the Evaluator reads, known
before the run: the eval share of a plain folder's files, or the whole of a span's folder.
Measured with `python -m bench evaluator_processes` (bench/RESULTS.md).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

from pipeline import configs, spans

# From this many CSV bytes to evaluate (about 18k taxi rows at 120 bytes a row), `auto` gives the Evaluator
# beam_workers processes. `python -m bench evaluator_processes` (2026-12-06, bench/RESULTS.md), TFX's Evaluator
# alone, two processes against one: 5k eval rows 22.7 s vs 18.1 s, 33k rows 34.8 s vs 40.1 s, 332k rows
# 158.9 s vs 284.7 s (0.56x, the same CPU seconds). Two cost 4.6 s more to start and 0.43 ms a row against
# 0.78: they break even at about 18k rows.
EVALUATOR_PARALLEL_MIN_BYTES = 2_200_000
MODULE_PATH = "components.parallel_evaluation"  # custom_extractors: TFMA's extractors behind a shuffle


@dataclasses.dataclass(frozen=True)
class EvaluatorBeam:
    """What the Evaluator runs with beyond the pipeline's Beam options."""

    processes: int
    module_path: Optional[str]  # the shuffle's module, when on several processes
    beam_args: List[str]  # appended to the pipeline's options (TFX: the later value of a flag wins)
    why: str


def bytes_to_evaluate(config: configs.PipelineConfig) -> Optional[int]:
    """The CSV bytes the Evaluator will read, None when the data is not on this machine."""
    data = Path(config.data)
    if not data.is_dir():
        return None
    if config.span is not None:
        folder = data / spans.label(config.span, config.span_pattern)
        return _size(folder)  # with spans the Evaluator judges every row of the new span
    return _size(data) * config.eval_buckets // (config.train_buckets + config.eval_buckets)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def evaluator_beam(config: configs.PipelineConfig) -> EvaluatorBeam:
    """How the Evaluator runs for `config`: its processes, the module of its shuffle, its extra Beam options."""
    one = EvaluatorBeam(1, None, [], "")
    if config.beam_runner != "direct" or config.beam_mode == "in_memory" or config.beam_workers < 2:
        return dataclasses.replace(one, why=f"beam runner {config.beam_runner}, mode {config.beam_mode}, "
                                            f"{config.beam_workers} beam worker{'s' if config.beam_workers > 1 else ''}")
    several = EvaluatorBeam(config.beam_workers, MODULE_PATH, [
        "--direct_running_mode=multi_processing", f"--direct_num_workers={config.beam_workers}"], "")
    if config.beam_mode == "multi_processing":
        return dataclasses.replace(several, why="--beam-mode multi_processing")
    size = bytes_to_evaluate(config)
    if size is None:  # data elsewhere (an object store, a cluster's volume): assume a size worth it
        return dataclasses.replace(several, why="the data's size is not known here")
    if size < EVALUATOR_PARALLEL_MIN_BYTES:
        return dataclasses.replace(one, why=f"{size:,} CSV bytes to evaluate, below {EVALUATOR_PARALLEL_MIN_BYTES:,}")
    return dataclasses.replace(several, why=f"{size:,} CSV bytes to evaluate")
