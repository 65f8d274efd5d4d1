"""How many local processes each Beam component runs on (`--beam-mode`, direct runner).

- `in_memory`: every Beam component in the run's own process.
- `multi_processing`: every Beam component on `beam_workers` processes.
- `auto` (the default): the Evaluator on `beam_workers` processes when the CSV bytes it reads are enough to
  repay them, every other Beam component in the run's own process.

On several processes the records StatisticsGen, Transform and the Evaluator read are dealt out among them
(components/dealt_records.py): Beam's direct runner shares out a stage's input only after a shuffle, and each
of these components reads and does its per-row work in one stage that starts at the read.

Why `auto` keeps StatisticsGen and Transform in one process: at 1M rows (`python -m bench scale` with and
without `--beam-mode multi_processing`, 2026-12-07, bench/RESULTS.md) two processes gave StatisticsGen no
time (34.6 s against 34.4 s, 48 CPU s against 34) and Transform 89 s against 107 s for 129 CPU s against
107, while the run's summed memory (RSS) rose from 1.4 to 4.6 GiB (StatisticsGen) and from 1.6 to 6.3 GiB
(Transform): every PCollection between their many stages passes through the runner's process, and each
worker holds TensorFlow and the component's graphs. The Evaluator's per-row work (the models and TFMA's
combiners) is large against the data it moves: at 333k eval rows two processes take 0.56x its time.

Each worker process imports TensorFlow and TFMA and loads the models: a few CPU seconds that small inputs
do not repay. The threshold is in CSV bytes, known before the run: the eval share of a plain folder's files,
or with spans the new span's folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

from pipeline import configs, spans

# From this many CSV bytes read, `auto` gives the component beam_workers processes (bench data: about 120
# bytes a row); None: never (see above). The Evaluator's, from `python -m bench evaluator_processes`
# (bench/RESULTS.md), TFX's Evaluator alone, two processes against one: 2026-12-06, behind a shuffle of
# record batches, 5k eval rows 22.7 s vs 18.1 s, 33k rows 34.8 s vs 40.1 s, 332k rows 158.9 s vs 284.7 s
# (two cost 4.6 s more to start and 0.43 ms a row against 0.78: they break even at about 18k rows);
# 2026-12-07, the records dealt, 5k rows 1.23x, 33k rows 0.84x (medians of two), 332k rows 0.57x.
PARALLEL_MIN_BYTES: Dict[str, Optional[int]] = {
    "StatisticsGen": None,
    "Transform": None,
    "Evaluator": 2_200_000,
}
BEAM_COMPONENTS = tuple(PARALLEL_MIN_BYTES)


@dataclasses.dataclass(frozen=True)
class ComponentBeam:
    """How one Beam component runs beyond the pipeline's Beam options."""

    processes: int
    beam_args: List[str]  # appended to the pipeline's options (TFX: the later value of a flag wins)
    why: str


def bytes_read(config: configs.PipelineConfig, component: str) -> Optional[int]:
    """The CSV bytes `component` will read, None when the data is not on this machine."""
    data = Path(config.data)
    if not data.is_dir():
        return None
    if config.span is not None:  # with spans: the new span, or for Transform the window it trains on
        read = config.window_spans if component == "Transform" and config.window_spans else (config.span,)
        return sum(_size(data / spans.label(span, config.span_pattern)) for span in read)
    if component == "Evaluator":  # the eval split only
        return _size(data) * config.eval_buckets // (config.train_buckets + config.eval_buckets)
    return _size(data)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def component_beam(config: configs.PipelineConfig, component: str) -> ComponentBeam:
    """How `component` (one of BEAM_COMPONENTS) runs for `config`: its processes and extra Beam options."""
    if config.beam_runner != "direct" or config.beam_mode == "in_memory" or config.beam_workers < 2:
        return ComponentBeam(1, [], f"beam runner {config.beam_runner}, mode {config.beam_mode}, "
                                    f"{config.beam_workers} beam worker{'s' if config.beam_workers > 1 else ''}")
    several = ComponentBeam(config.beam_workers, [
        "--direct_running_mode=multi_processing", f"--direct_num_workers={config.beam_workers}"], "")
    if config.beam_mode == "multi_processing":
        return dataclasses.replace(several, why="--beam-mode multi_processing")
    threshold = PARALLEL_MIN_BYTES[component]
    if threshold is None:
        return ComponentBeam(1, [], "more processes did not pay at 1M rows")
    size = bytes_read(config, component)
    if size is None:  # data elsewhere (an object store, a cluster's volume): assume a size worth it
        return dataclasses.replace(several, why="the data's size is not known here")
    if size < threshold:
        return ComponentBeam(1, [], f"{size:,} CSV bytes to read, below {threshold:,}")
    return dataclasses.replace(several, why=f"{size:,} CSV bytes to read")


def plan(config: configs.PipelineConfig) -> Dict[str, ComponentBeam]:
    """Every Beam component's processes for `config`."""
    return {component: component_beam(config, component) for component in BEAM_COMPONENTS}


def describe(planned: Dict[str, ComponentBeam]) -> str:
    """The run header's line, e.g. `StatisticsGen, Transform on 1 process (...); Evaluator on 2 processes (...)`."""
    groups: Dict[tuple, List[str]] = {}
    for name, beam in planned.items():
        groups.setdefault((beam.processes, beam.why), []).append(name)
    return "; ".join(f"{', '.join(names)} on {processes} process{'es' if processes > 1 else ''} ({why})"
                     for (processes, why), names in groups.items())
