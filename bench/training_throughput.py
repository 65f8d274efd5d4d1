"""Trainer throughput, 1 vs 2 local workers (MultiWorkerMirroredStrategy), for fit and the custom loop.

Replays the Trainer of a finished pipeline run (same Transform outputs, same run_fn) through
MultiWorkerExecutor with workers=1 (in process) and workers=2 (two worker processes on loopback),
and reports two figures per run:
- training examples/s: train_steps x global batch / training time, as run_fn measures it inside
  the workers (the strategy's steady state: what more workers buy on more cores);
- end-to-end examples/s: the same examples / the whole Trainer execution's wall time, including
  worker start-up (TensorFlow import, cluster set-up) and every worker's save (what a pipeline run
  feels).
Ratios are against the 1-worker run of the same loop, measured in the same invocation. On a
machine with 2 shared cores, 2 workers are not expected to be faster: the figure is recorded to
see the overhead and to compare across machines.

    python -m bench.training_throughput [--home DIR] [--train-steps N] [--loops fit,custom]

Without a finished run in --home, runs the pipeline there once first (single worker).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results" / "training_throughput.json"


def _ensure_run(home: Path, train_steps: int) -> None:
    from pipeline import configs
    from pipeline.local_runner import run_pipeline

    config = configs.PipelineConfig(home=home, train_steps=train_steps, eval_steps=20)
    if config.metadata_path.exists():
        return
    print(f"no pipeline run in {home}: running the pipeline once (single worker) for its Transform outputs")
    run_pipeline(config)


def measure(home: Path, workers: int, loop: str, train_steps: int, out_root: Path) -> dict:
    from components.multiworker_trainer import replay

    out = out_root / f"{loop}-{workers}w"
    result = replay.replay(home / "metadata.db", out, train_steps=train_steps, workers=workers, training_loop=loop,
                           log_dir=str(out / "logs"))
    chief = next(r for r in result.worker_reports if r["task_index"] == 0)
    examples = chief["steps"] * chief["global_batch_size"]
    return {
        "workers": workers,
        "training_loop": loop,
        "steps": chief["steps"],
        "global_batch_size": chief["global_batch_size"],
        "num_replicas_in_sync": chief["num_replicas_in_sync"],
        "training_examples_per_s": round(chief["examples_per_second"], 1),
        "trainer_wall_s": round(result.seconds, 2),
        "end_to_end_examples_per_s": round(examples / result.seconds, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "taxi-bench-training",
                        help="a pipeline home with a finished run (made if missing)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--loops", default="fit,custom", help="comma-separated: fit, custom")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    loops = [loop.strip() for loop in args.loops.split(",") if loop.strip()]
    if not set(loops) <= {"fit", "custom"} or not loops:
        print(f"error: --loops must name fit and/or custom, not {args.loops!r}", file=sys.stderr)
        return 2

    home = args.home.resolve()
    # The table is the output; TensorFlow/absl/Beam chatter (and the workers' logs) go to files.
    logging.basicConfig(level=logging.ERROR, force=True)
    for name in ("tensorflow", "absl", "apache_beam"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    _ensure_run(home, args.train_steps)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        for loop in loops:
            for workers in (1, 2):
                runs.append(measure(home, workers, loop, args.train_steps, Path(tmp)))
                print(f"  measured {loop} with {workers} worker(s): {runs[-1]['training_examples_per_s']} ex/s",
                      flush=True)
    for run in runs:
        reference = next(r for r in runs if r["training_loop"] == run["training_loop"] and r["workers"] == 1)
        run["training_ratio_vs_1_worker"] = round(run["training_examples_per_s"] / reference["training_examples_per_s"], 3)
        run["end_to_end_ratio_vs_1_worker"] = round(
            run["end_to_end_examples_per_s"] / reference["end_to_end_examples_per_s"], 3)

    header = (f"{'loop':<7}{'workers':>8}{'global batch':>13}{'train ex/s':>12}{'ratio':>7}"
              f"{'wall s':>8}{'e2e ex/s':>10}{'ratio':>7}")
    print(header)
    for r in runs:
        print(f"{r['training_loop']:<7}{r['workers']:>8}{r['global_batch_size']:>13}{r['training_examples_per_s']:>12.0f}"
              f"{r['training_ratio_vs_1_worker']:>7.2f}{r['trainer_wall_s']:>8.1f}{r['end_to_end_examples_per_s']:>10.0f}"
              f"{r['end_to_end_ratio_vs_1_worker']:>7.2f}")
    payload = {
        "benchmark": "training_throughput",
        "reference": "1 worker (in process), same training loop, same run",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "train_steps": args.train_steps,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(payload, indent=1) + "\n")
    tmp_out.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
